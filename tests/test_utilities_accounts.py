"""Renew Patron Accounts and Reset Patron Accounts: options, skip rules (duplicates, no email,
security levels, permissions), hashed passwords, reset links through a real local SMTP server
(aiosmtpd) or into the outbox, and no password, token or link in any message, report or log."""

from __future__ import annotations

import logging
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest

from patron_tui.services import mail
from patron_tui.services import utilities as U
from patron_tui.services.permissions import PermissionDenied
from patron_tui.services.utilities import Selections, UtilityError
from patron_tui.services.utilities.accounts import (
    fold, last_name_password, must_change, verify_password, verify_reset_token,
)
from patron_tui.store import ChangesetWriter, Store
from tests.conftest import district
from tests.smtp_helpers import smtp_server
from tests.utilities_helpers import add_operator, ids_by_barcode, preview_then_run, run

P = [
    # barcode, last, first, nickname, email, email2, policy, group, username
    ("A1", "Anderson", "Darla", "", "darla@school.test", "", "STUDENT", "STUDENT", None),
    ("A2", "Anderson", "Dave", "", "", "dave2@home.test", "STUDENT", "STUDENT", None),
    ("A3", "Ó'Brien-Ruíz", "Zoë", "Zo", "zoe@school.test", "", "STAFF", "TEACHER", "zobr"),
    ("A4", "Nguyen", "Kim", "", "", "", "MYSTERY", "STUDENT", "knguyen"),
    ("A5", "Smith", "Sam", "Sammy", "sam@school.test", "", "STUDENT", "LIBRARIAN", None),
    ("A6", "Lee", "Ann", "", "ann@school.test", "", "STUDENT", "", None),
    ("X9", "Holder", "Dan", "", "", "", "STUDENT", "STUDENT", "DAnderson"),  # holds a wanted username
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return district(tmp_path / "d.db", [
        {"barcode": b, "site": "HS", "last_name": last, "first_name": first, "nickname": nick, "email": e1,
         "email2": e2, "policy": pol, "security_group": grp, "username": user, "grade": "9" if b != "X9" else "",
         "account_expires": "2024-06-30", "password_hash": "scrypt$old"}
        for b, last, first, nick, e1, e2, pol, grp, user in P])


def rows(store) -> dict[str, dict]:
    conn = store.connect()
    try:
        return {r["barcode"]: dict(r) for r in conn.execute("SELECT * FROM patrons WHERE barcode IS NOT NULL")}
    finally:
        conn.close()


NINE = Selections(grades=["9"])


# -- Renew Patron Accounts ------------------------------------------------------------------------

def test_renew_uses_each_patrons_policy_days(store):
    plan, pv, _ = preview_then_run(store, "renew-patron-accounts", NINE, {})
    today = date.today()
    expected = {"A1": today + timedelta(days=365), "A2": today + timedelta(days=365),
                "A3": today + timedelta(days=730), "A5": today + timedelta(days=365),
                "A6": today + timedelta(days=365)}
    assert {c.barcode: c.after for c in plan.changes} == {b: d.isoformat() for b, d in expected.items()}
    assert [(s.barcode, s.reason) for s in plan.skipped] == [
        ("A4", "policy 'MYSTERY' is not in the policy table: the account days are unknown")]
    got = rows(store)
    assert {b: got[b]["account_expires"] for b in expected} == {b: d.isoformat() for b, d in expected.items()}
    assert got["A4"]["account_expires"] == "2024-06-30"


def test_renew_is_unavailable_with_account_expiration_off(store):
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "account_expiration", {"value": "off"})
    assert "account expiration" in U.get("renew-patron-accounts").available(conn)
    with pytest.raises(UtilityError, match="only while account expiration is on"):
        U.preview(conn, "renew-patron-accounts", NINE, {}, "tester")
    conn.close()
    with pytest.raises(UtilityError):
        run(store, "renew-patron-accounts", NINE, {})
    assert rows(store)["A1"]["account_expires"] == "2024-06-30"


# -- Reset Patron Accounts: usernames ---------------------------------------------------------------

def usernames(store) -> dict[str, str | None]:
    return {b: r["username"] for b, r in rows(store).items()}


def test_first_initial_last_name_skips_duplicates_stored_and_in_the_run(store):
    plan, pv, _ = preview_then_run(store, "reset-patron-accounts", NINE, {"username_by": "first_initial_last_name"})
    by = {c.barcode: (c.before, c.after) for c in plan.changes}
    reasons = {s.barcode: s.reason for s in plan.skipped}
    # A1 darla -> danderson is held (any case) by X9; A2 dave -> danderson likewise
    assert "the username 'danderson' belongs to Holder, Dan (X9)" == reasons["A1"]
    assert "belongs to Holder, Dan (X9)" in reasons["A2"]
    assert by["A3"] == ("username zobr", "username zobrienruiz")      # diacritics folded, punctuation gone
    assert "A4" not in by          # knguyen already: nothing to change
    assert by["A5"] == ("username (none)", "username ssmith")
    assert by["A6"] == ("username (none)", "username alee")
    got = usernames(store)
    assert got == {"A1": None, "A2": None, "A3": "zobrienruiz", "A4": "knguyen", "A5": "ssmith", "A6": "alee",
                   "X9": "DAnderson"}
    assert any("already have that username" in n for n in pv.notes)   # A4


def test_duplicates_within_one_run_name_the_earlier_patron(store):
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("patrons", conn.execute("SELECT id FROM patrons WHERE barcode = 'X9'").fetchone()[0],
                 {"username": "dan"})
    conn.close()
    plan, pv, _ = preview_then_run(store, "reset-patron-accounts", NINE, {"username_by": "first_initial_last_name"})
    reasons = {s.barcode: s.reason for s in plan.skipped}
    assert [c.barcode for c in plan.changes if c.after == "username danderson"] == ["A1"]
    assert reasons["A2"] == ("the username 'danderson' would also go to Anderson, Darla (A1), earlier in this run")
    assert usernames(store)["A1"] == "danderson" and usernames(store)["A2"] is None


def test_first_last_with_nickname_and_email_usernames(store):
    plan, _, _ = preview_then_run(store, "reset-patron-accounts", NINE,
                                  {"username_by": "first_last_name", "use_nickname": True})
    got = usernames(store)
    assert got["A3"] == "zoobrienruiz" and got["A5"] == "sammysmith" and got["A1"] == "darlaanderson"
    plan, _, _ = preview_then_run(store, "reset-patron-accounts", NINE, {"username_by": "email"})
    got = usernames(store)
    assert got["A1"] == "darla@school.test" and got["A2"] == "dave2@home.test"   # email2 when email is blank
    assert [(s.barcode, s.reason) for s in plan.skipped] == [("A4", "has no email address to make a username from")]
    assert got["A4"] == "kimnguyen"   # from the first + last name run
    plan, _, _ = preview_then_run(store, "reset-patron-accounts", NINE, {"username_by": "barcode"})
    assert usernames(store)["A4"] == "A4"


def test_first_email_is_the_first_address_listed():
    from patron_tui.services.utilities.accounts import first_email

    assert first_email({"email": " a@x.test; b@y.test", "email2": "c@z.test"}) == "a@x.test"
    assert first_email({"email": "", "email2": "c@z.test, d@z.test"}) == "c@z.test"
    assert first_email({"email": "none", "email2": ""}) == ""


def test_fold_and_last_name_passwords():
    assert fold("Ó'Brien-Ruíz") == "OBrienRuiz" and fold("Straße Ærø") == "StrasseAEro"
    assert last_name_password("Anderson") == ("Anderson", False)
    assert last_name_password("Müller") == ("Muller", True)
    assert last_name_password("O'Neil") == ("ONeil", True)
    assert last_name_password("李") == ("", True)


# -- Reset Patron Accounts: passwords and permissions ----------------------------------------------------

def test_last_name_passwords_are_hashed_and_flagged_when_folded(store, caplog):
    caplog.set_level(logging.DEBUG)
    plan, pv, handle = preview_then_run(store, "reset-patron-accounts", NINE, {"password_by": "last_name"})
    got = rows(store)
    assert verify_password(got["A1"]["password_hash"], "Anderson") and not must_change(got["A1"]["password_hash"])
    assert verify_password(got["A3"]["password_hash"], "OBrienRuiz") and must_change(got["A3"]["password_hash"])
    assert {c.barcode for c in plan.changes} == {"A1", "A2", "A3", "A4", "A5", "A6"}
    assert got["X9"]["password_hash"] == "scrypt$old"
    assert any("1 patrons have accents" in n for n in pv.notes)
    by = {c.barcode: c.after for c in plan.changes}
    assert by["A3"] == "password: last name, to be changed at next login"
    _no_secret_anywhere(store, handle.run_id, ["Anderson", "OBrienRuiz", "Smith", "Nguyen"], caplog.text,
                        names_allowed=True)


def test_operator_needs_the_password_permission_and_resets_only_lower_levels(store):
    add_operator(store, "clerk", level=2, batch=True, reset=False)
    add_operator(store, "lib", level=4, batch=True, reset=True)
    conn = store.connect()
    with pytest.raises(PermissionDenied, match="may reset patron passwords"):
        U.preview(conn, "reset-patron-accounts", NINE, {"password_by": "last_name"}, "clerk")
    conn.close()
    plan, pv, _ = preview_then_run(store, "reset-patron-accounts", NINE, {"password_by": "last_name"}, operator="lib")
    # STUDENT is level 5 (> 4): reset; TEACHER 4 and LIBRARIAN 2 are not; no group: only level 0
    assert {c.barcode for c in plan.changes} == {"A1", "A2", "A4"}
    reasons = {s.barcode: s.reason for s in plan.skipped}
    assert reasons["A3"] == "security group TEACHER is level 4; your level 4 may reset only higher level numbers"
    assert "LIBRARIAN is level 2" in reasons["A5"]
    assert reasons["A6"] == "has no security group: only a level 0 operator may reset it"
    got = rows(store)
    assert got["A3"]["password_hash"] == got["A5"]["password_hash"] == got["A6"]["password_hash"] == "scrypt$old"
    assert verify_password(got["A1"]["password_hash"], "Anderson")


def test_both_no_change_is_refused(store):
    conn = store.connect()
    with pytest.raises(UtilityError, match="both are No change"):
        U.preview(conn, "reset-patron-accounts", NINE, {}, "tester")
    conn.close()


# -- reset links ----------------------------------------------------------------------------------------

def _configure(store, **kw) -> None:
    conn = store.connect()
    with store.writer(conn, None) as w:
        mail.save_settings(w, mail.MailSettings(reset_url="https://opac.school.test/reset", **kw))
    conn.close()


def _no_secret_anywhere(store, run_id, secrets: list[str], log_text: str, *, names_allowed=False) -> None:
    conn = store.connect()
    try:
        texts = [r[0] for r in conn.execute("SELECT text FROM run_messages WHERE run_id = ?", (run_id,))]
        rep = U.report(conn, run_id).model_dump_json()
        run_row = conn.execute("SELECT summary, params, coalesce(error, '') FROM runs WHERE id = ?", (run_id,)).fetchone()
        journal = " ".join(str(r[0]) + str(r[1]) for r in conn.execute(
            "SELECT before, after FROM change_journal WHERE run_id = ?", (run_id,)))
    finally:
        conn.close()
    haystacks = {"run_messages": "\n".join(texts), "report": rep, "run row": " ".join(run_row),
                 "log": log_text, "journal": journal}
    for s in secrets:
        for where, text in haystacks.items():
            if names_allowed and where in ("run_messages", "report", "run row") :
                # a last name may be shown as a name ("Anderson, Darla"), never as "password: ..."
                assert f"password {s}" not in text and f"password: {s}" not in text, (s, where)
            else:
                assert s not in text, (s, where)


def test_reset_links_through_a_real_smtp_server(store, caplog):
    caplog.set_level(logging.DEBUG)
    with smtp_server() as (port, received):
        _configure(store, host="127.0.0.1", port=port, starttls=False, from_address="library@school.test")
        plan, pv, handle = preview_then_run(store, "reset-patron-accounts", NINE, {"password_by": "email_link"})
    # A4 has no email at all: skipped; every other grade-9 patron gets exactly one message
    assert [(s.barcode, s.reason) for s in plan.skipped] == [("A4", "has no email address for the password reset link")]
    expected = {"A1": "darla@school.test", "A2": "dave2@home.test", "A3": "zoe@school.test",
                "A5": "sam@school.test", "A6": "ann@school.test"}
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(expected.values())
    assert all(len(r.rcpt_tos) == 1 for r in received)
    got = rows(store)
    tokens = []
    for r in received:
        body = r.body
        link = next(line.strip() for line in body.splitlines() if line.strip().startswith("https://"))
        assert link.startswith("https://opac.school.test/reset?token=")
        token = link.split("token=", 1)[1]
        barcode = next(b for b, a in expected.items() if a == r.rcpt_tos[0])
        assert verify_reset_token(got[barcode]["password_hash"], token, date.today())
        assert r.message["From"] == "library@school.test"
        tokens += [token, link]
    assert got["A4"]["password_hash"] == "scrypt$old"
    assert {c.barcode for c in plan.changes} == set(expected)
    assert handle.summary["changed"] == 5
    conn = store.connect()
    notes = U.report(conn, handle.run_id).notes
    conn.close()
    assert any("5 reset messages were sent through 127.0.0.1" in n for n in notes)
    _no_secret_anywhere(store, handle.run_id, tokens, caplog.text)


def test_reset_links_land_in_the_outbox_without_a_server(store):
    _configure(store)
    plan, pv, handle = preview_then_run(store, "reset-patron-accounts", NINE,
                                        {"password_by": "email_link", "username_by": "email"})
    outbox = mail.outbox_path(store.path)
    assert len(list(outbox.glob("*.eml"))) == 5
    conn = store.connect()
    notes = U.report(conn, handle.run_id).notes
    conn.close()
    assert any("No mail server is configured" in n and str(outbox) in n for n in notes)
    assert usernames(store)["A1"] == "darla@school.test"


def test_reset_link_needs_the_reset_page_address(store):
    conn = store.connect()
    with pytest.raises(UtilityError, match="--reset-url"):
        U.preview(conn, "reset-patron-accounts", NINE, {"password_by": "email_link"}, "tester")
    conn.close()


def test_an_unreachable_server_fails_the_run_and_puts_every_password_back(store, caplog):
    from tests.smtp_helpers import free_port

    caplog.set_level(logging.DEBUG)
    _configure(store, host="127.0.0.1", port=free_port(), starttls=False)
    before = rows(store)
    handle = run(store, "reset-patron-accounts", NINE, {"password_by": "email_link", "username_by": "barcode"})
    assert handle.status.value == "failed"
    assert "cannot be reached" in handle.error and "every password is unchanged" in handle.error
    assert rows(store) == before          # passwords, usernames, updated_at: as they were
    assert handle.summary["changed"] == 0 and handle.summary["errors"] == 5
    conn = store.connect()
    try:
        rep = U.report(conn, handle.run_id)
        texts = [r[0] for r in conn.execute("SELECT text FROM run_messages WHERE run_id = ?", (handle.run_id,))]
        # the change and its putting back: both in this run's journal
        assert conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ?", (handle.run_id,)).fetchone()[0] >= 2
    finally:
        conn.close()
    assert sorted(e.barcode for e in rep.errors) == ["A1", "A2", "A3", "A5", "A6"]
    assert {e.reason for e in rep.errors} == {"the reset link was not sent; the password is unchanged"}
    assert sum("cannot be reached" in t for t in texts) == 1        # said once
    assert not any("changed" in t and " -> " in t for t in texts)
    _no_secret_anywhere(store, handle.run_id, ["token="], _our_log(caplog))


# -- reset links: sent after the commit ----------------------------------------------------------------

def _start(store, options, *, fingerprint=None):
    from patron_tui.runs import RunEngine

    engine = RunEngine(store, pool_size=1)
    return engine, U.start_utility(engine, store, "tester", "reset-patron-accounts", NINE, options,
                                   fingerprint=fingerprint)


def test_the_database_is_not_locked_while_the_links_are_sent(store):
    from patron_tui.store.db import BUSY_TIMEOUT_MS  # noqa: F401  (the project's 15 s; ours is short)

    arrived, release = threading.Event(), threading.Event()
    with smtp_server(arrived=arrived, release=release) as (port, received):
        _configure(store, host="127.0.0.1", port=port, starttls=False)
        engine, handle = _start(store, {"password_by": "email_link"})
        try:
            assert arrived.wait(30), "no message reached the server"
            # the server holds the first message; another program writes meanwhile
            conn = store.connect()
            try:
                conn.execute("PRAGMA busy_timeout = 200")
                with ChangesetWriter(conn, operator="other", run_id=None) as w:
                    w.update("patrons", ids_by_barcode(store)["X9"], {"nickname": "Danny"})
                # the run's transaction committed before the sending began
                assert conn.execute("SELECT password_hash FROM patrons WHERE barcode = 'A1'").fetchone()[0] \
                    .startswith("reset-link$")
            finally:
                conn.close()
        finally:
            release.set()
            handle.wait()
            engine.shutdown(cancel_running=False)
    assert handle.status.value == "succeeded", handle.error
    assert handle.summary["changed"] == 5 and len(received) == 5
    assert rows(store)["X9"]["nickname"] == "Danny"


def _our_log(caplog) -> str:
    """What the program logged: everything but the test SMTP server's own log ("mail.log", which
    echoes each message it receives, links included)."""
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                     if not r.name.startswith("mail.log"))


def _tokens(received) -> list[str]:
    out = []
    for r in received:
        link = next(line.strip() for line in r.body.splitlines() if line.strip().startswith("https://"))
        out += [link, link.split("token=", 1)[1]]
    return out


def test_a_refused_address_gets_its_password_back_and_undo_restores_everything(store, caplog):
    from patron_tui.runs import RunEngine
    from patron_tui.services.undo import start_undo

    caplog.set_level(logging.DEBUG)
    before = rows(store)
    with smtp_server(refuse={"zoe@school.test"}) as (port, received):
        _configure(store, host="127.0.0.1", port=port, starttls=False)
        plan, pv, handle = preview_then_run(store, "reset-patron-accounts", NINE,
                                            {"password_by": "email_link", "username_by": "barcode"})
    assert handle.summary["changed"] == 4 and handle.summary["errors"] == 1
    # the others got exactly one message each, and keep their new state
    assert sorted(r.rcpt_tos for r in received) == [["ann@school.test"], ["darla@school.test"],
                                                    ["dave2@home.test"], ["sam@school.test"]]
    got = rows(store)
    for b in ("A1", "A2", "A5", "A6"):
        assert got[b]["password_hash"].startswith("reset-link$") and got[b]["username"] == b
    # the refused patron: password and username as they were
    assert got["A3"]["password_hash"] == "scrypt$old" and got["A3"]["username"] == "zobr"
    assert got["A3"]["updated_at"] == before["A3"]["updated_at"]
    conn = store.connect()
    try:
        rep = U.report(conn, handle.run_id)
        import io

        out = io.StringIO()
        U.report_csv(conn, handle.run_id, out)
    finally:
        conn.close()
    assert rep.changed == 4
    assert [(e.barcode, e.reason) for e in rep.errors] == [
        ("A3", "the reset link could not be sent to zoe@school.test (the mail server refused the address); "
               "the password is unchanged")]
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("changed,") for line in lines) == 4
    assert [line.split(",")[1] for line in lines if line.startswith("error,")] == ["A3"]
    assert not any(line.startswith("changed,A3") for line in lines)
    _no_secret_anywhere(store, handle.run_id, _tokens(received) + ["token="], _our_log(caplog))
    # undo of the run covers both transactions: everyone is back as before
    engine = RunEngine(store, pool_size=1)
    try:
        undo = start_undo(engine, store, "tester", handle.run_id)
        undo.wait()
    finally:
        engine.shutdown(cancel_running=False)
    assert undo.status.value == "succeeded", undo.error
    after = rows(store)
    assert {b: (r["password_hash"], r["username"]) for b, r in after.items()} == \
        {b: (r["password_hash"], r["username"]) for b, r in before.items()}


def test_a_connection_lost_part_way_puts_back_the_unsent(store):
    with smtp_server(drop_after=2) as (port, received):
        _configure(store, host="127.0.0.1", port=port, starttls=False)
        plan, pv, handle = preview_then_run(store, "reset-patron-accounts", NINE, {"password_by": "email_link"})
    assert len(received) == 2 and handle.summary["changed"] == 2 and handle.summary["errors"] == 3
    sent = {r.rcpt_tos[0] for r in received}
    email = {"A1": "darla@school.test", "A2": "dave2@home.test", "A3": "zoe@school.test",
             "A5": "sam@school.test", "A6": "ann@school.test"}
    got = rows(store)
    for b, address in email.items():
        assert got[b]["password_hash"].startswith("reset-link$") == (address in sent), b
    conn = store.connect()
    rep = U.report(conn, handle.run_id)
    conn.close()
    assert len(rep.errors) == 3
    assert all("connection was lost" in e.reason and e.reason.endswith("; the password is unchanged")
               for e in rep.errors)


def test_cancelling_while_sending_stops_and_puts_back_the_unsent(store):
    arrived, release = threading.Event(), threading.Event()
    with smtp_server(arrived=arrived, release=release) as (port, received):
        _configure(store, host="127.0.0.1", port=port, starttls=False)
        engine, handle = _start(store, {"password_by": "email_link"})
        try:
            assert arrived.wait(30)
            handle.cancel()          # while the first message is at the server
            release.set()
            handle.wait()
        finally:
            release.set()
            engine.shutdown(cancel_running=False)
    assert handle.status.value == "succeeded", handle.error
    assert len(received) == 1 and handle.summary["changed"] == 1 and handle.summary["errors"] == 4
    got = rows(store)
    assert sum(r["password_hash"].startswith("reset-link$") for r in got.values()) == 1
    assert sum(r["password_hash"] == "scrypt$old" for r in got.values()) == 6
    conn = store.connect()
    try:
        rep = U.report(conn, handle.run_id)
        warnings = [r[0] for r in conn.execute(
            "SELECT text FROM run_messages WHERE run_id = ? AND level = 'warning'", (handle.run_id,))]
    finally:
        conn.close()
    assert {e.reason for e in rep.errors} == {
        "the reset link was not sent: the run was cancelled while sending; the password is unchanged"}
    assert any("Cancelled while sending" in w for w in warnings)
    assert any("cancelled while sending" in n for n in rep.notes)


def test_progress_and_an_info_line_per_hundred_messages(tmp_path):
    from patron_tui.models import EventKind
    from patron_tui.runs import RunEngine

    store = district(tmp_path / "big.db", [
        {"barcode": f"B{i:03d}", "site": "HS", "last_name": f"Pat{i}", "first_name": "A", "grade": "9",
         "email": f"b{i}@school.test", "security_group": "STUDENT", "policy": "STUDENT"} for i in range(250)])
    _configure(store)        # no server: the outbox
    events = []
    engine = RunEngine(store, pool_size=1)
    engine.subscribe(events.append)
    try:
        handle = U.start_utility(engine, store, "tester", "reset-patron-accounts", NINE,
                                 {"password_by": "email_link"}, fingerprint=None)
        handle.wait()
    finally:
        engine.shutdown(cancel_running=False)
    assert handle.status.value == "succeeded", handle.error
    assert handle.summary["changed"] == 250
    conn = store.connect()
    texts = [r[0] for r in conn.execute("SELECT text FROM run_messages WHERE run_id = ? AND code = 'sending'",
                                        (handle.run_id,))]
    conn.close()
    assert texts == ["Reset messages: 100 of 250 done.", "Reset messages: 200 of 250 done."]
    assert any(e.kind == EventKind.PROGRESS and e.total == 250 and e.done == 250 for e in events)
    assert len(list(mail.outbox_path(store.path).glob("*.eml"))) == 250
