"""Renew Patron Accounts and Reset Patron Accounts: options, skip rules (duplicates, no email,
security levels, permissions), hashed passwords, reset links through a real local SMTP server
(aiosmtpd) or into the outbox, and no password, token or link in any message, report or log."""

from __future__ import annotations

import logging
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
from tests.utilities_helpers import add_operator, preview_then_run, run

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


def test_an_unreachable_server_fails_the_run_and_changes_nothing(store):
    from tests.smtp_helpers import free_port

    _configure(store, host="127.0.0.1", port=free_port(), starttls=False)
    handle = run(store, "reset-patron-accounts", NINE, {"password_by": "email_link", "username_by": "barcode"})
    assert handle.status.value == "failed" and "cannot be reached" in handle.error
    got = rows(store)
    assert got["A1"]["password_hash"] == "scrypt$old" and got["A1"]["username"] is None
