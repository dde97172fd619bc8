"""Check database: every planted fault becomes a run message with its code,
barcode and patron; a clean district reports none; the CLI's exit codes."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from patron_tui import cli
from patron_tui.models import EventKind, RunStatus
from patron_tui.runs import RunEngine
from patron_tui.services.check import CHECK_KIND, CHECK_TITLE, check_database
from patron_tui.store import ChangesetWriter, Store, runlog, utc_now

FAULT_LEVELS = ("warning", "error")


def build_district(path: Path) -> Store:
    """Two sites, students and staff, notes, charges, a talking-book profile."""
    store = Store.create(path, operator="tester")
    conn = store.connect()
    now = utc_now()

    def patron(barcode, last, first, **extra):
        return {"barcode": barcode, "district_id": f"ID-{barcode}", "site": "HS", "last_name": last,
                "first_name": first, "patron_type": "Student", "grade": "9", "policy": "STUDENT",
                "security_group": "STUDENT", "status": "Active", "created_at": now, "updated_at": now,
                **extra}

    try:
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.insert("sites", {"code": "HS", "name": "High School"})
            w.insert("sites", {"code": "ELM", "name": "Elm Elementary"})
            ann = w.insert("patrons", patron("P001", "Lee", "Ann"))
            bo = w.insert("patrons", patron("P002", "Ng", "Bo", site="ELM", grade="K"))
            w.insert("patrons", patron("P003", "Ruiz", "Cy", grade="12", status="Inactive"))
            # staff: no grade is fine
            w.insert("patrons", patron("S001", "Okafor", "Dee", patron_type="Staff", grade="",
                                       policy="STAFF", security_group="TEACHER"))
            w.insert("patrons", patron(None, "Park", "Eun", district_id=None, patron_type="Teacher",
                                       grade="", policy="STAFF", security_group="LIBRARIAN"))
            w.insert("notes", {"patron_id": ann, "note_type": "Alert", "text": "Owes a book",
                               "created_at": now})
            w.insert("charges", {"patron_id": bo, "kind": "lost", "amount_cents": 1500,
                                 "balance_cents": 1500, "transaction_date": now})
            w.insert("checkouts", {"patron_id": ann, "item_barcode": "I1", "checked_out_at": now,
                                   "due_at": now})
            w.insert("holds", {"patron_id": bo, "kind": "hold", "placed_at": now})
            w.insert("patron_history", {"patron_id": ann, "kind": "return", "occurred_at": now})
            w.insert("reviews", {"patron_id": ann, "title": "Moby Dick", "rating": 4, "created_at": now})
            title = w.insert("titles", {"code": "T1", "title": "Moby Dick"})
            profile = w.insert("patron_profiles", {"patron_id": bo, "medium": "DB"})
            w.insert("profile_subjects", {"profile_id": profile, "subject": "MYS"})
            w.insert("service_queue", {"profile_id": profile, "title_id": title, "position": 1,
                                       "added_at": now})
    finally:
        conn.close()
    return store


def plant_faults(store: Store) -> dict[str, int]:
    """The faults the schema allows go in through the writer; orphans through a
    raw connection with foreign keys off. Returns patron ids by barcode."""
    conn = store.connect()
    now = utc_now()

    def patron(barcode, last, first, **extra):
        return {"barcode": barcode, "site": "HS", "last_name": last, "first_name": first,
                "patron_type": "Student", "grade": "5", "policy": "STUDENT", "security_group": "STUDENT",
                "status": "Active", "created_at": now, "updated_at": now, **extra}

    try:
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            ids = {
                "B100": w.insert("patrons", patron("B100", "Adams", "Al")),
                " b100": w.insert("patrons", patron(" b100", "Baker", "Bea")),
                "D1": w.insert("patrons", patron("D1", "Cole", "Cal", district_id="X-7")),
                "D2": w.insert("patrons", patron("D2", "Diaz", "Di", district_id="x-7 ")),
                "U1": w.insert("patrons", patron("U1", "Evans", "Ed", site="UNION")),
                "G1": w.insert("patrons", patron("G1", "Fox", "Flo", grade="13")),
                "G2": w.insert("patrons", patron("G2", "Gray", "Gus", grade="")),  # a student needs one
                "S1": w.insert("patrons", patron("S1", "Hill", "Hal", site="NOWHERE")),
                "P1": w.insert("patrons", patron("P1", "Ito", "Ivy", policy="GOLD")),
                "T1": w.insert("patrons", patron("T1", "Jay", "Jo", patron_type="Alien",
                                                 security_group="ROOT", status="Gone")),
            }
            # a system patron with every fault is never reported
            w.insert("patrons", patron(" B100 ", "System", "Sam", site="UNION", grade="99",
                                       policy="NONE", is_system=1))
    finally:
        conn.close()
    raw = sqlite3.connect(store.path)
    try:
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute("INSERT INTO notes (patron_id, note_type, text, created_at)"
                    " VALUES (9001, 'General', 'left behind', ?)", (now,))
        raw.execute("INSERT INTO charges (patron_id, kind, amount_cents, balance_cents, transaction_date)"
                    " VALUES (9002, 'overdue', 250, 250, ?)", (now,))
        raw.execute("INSERT INTO profile_subjects (profile_id, subject) VALUES (9003, 'BIO')")
        # a link the orphan checks do not cover: a queue entry for a title that is gone
        profile = raw.execute("SELECT id FROM patron_profiles LIMIT 1").fetchone()[0]
        raw.execute("INSERT INTO service_queue (profile_id, title_id, position, added_at)"
                    " VALUES (?, 9004, 2, ?)", (profile, now))
        raw.commit()
    finally:
        raw.close()
    return ids


def run_check(store: Store, events: list | None = None):
    engine = RunEngine(store)
    if events is not None:
        engine.subscribe(events.append)
    try:
        handle = engine.execute(CHECK_KIND, CHECK_TITLE, check_database)
    finally:
        engine.shutdown()
    conn = store.connect()
    try:
        msgs = runlog.messages(conn, handle.run_id)
        row = runlog.get_run(conn, handle.run_id)
    finally:
        conn.close()
    return handle, msgs, row


def faults(msgs: list[dict]) -> list[dict]:
    return [m for m in msgs if m["level"] in FAULT_LEVELS]


def by_code(msgs: list[dict], code: str) -> list[dict]:
    return [m for m in faults(msgs) if m["code"] == code]


@pytest.fixture
def clean(tmp_path: Path) -> Store:
    return build_district(tmp_path / "clean.db")


@pytest.fixture
def faulty(tmp_path: Path) -> tuple[Store, dict[str, int]]:
    store = build_district(tmp_path / "faulty.db")
    return store, plant_faults(store)


# -- the run --------------------------------------------------------------------------------


def test_clean_district_reports_no_faults(clean):
    events: list = []
    handle, msgs, row = run_check(clean, events)
    assert handle.status is RunStatus.SUCCEEDED
    assert faults(msgs) == []
    assert handle.summary["faults"] == 0 and handle.summary["by_code"] == {}
    assert (row["kind"], row["title"], row["status"]) == ("check", "Check database", "succeeded")
    assert row["summary"]["faults"] == 0
    assert [m["code"] for m in msgs] == ["check_started", "check_finished"]
    assert "no faults" in msgs[-1]["text"]
    progress = [(e.done, e.total) for e in events if e.kind is EventKind.PROGRESS]
    checks = handle.summary["checks"]
    assert progress == [(i, checks) for i in range(checks + 1)]


def test_every_planted_fault_is_reported(faulty):
    store, ids = faulty
    handle, msgs, row = run_check(store)
    assert handle.status is RunStatus.SUCCEEDED

    def only(code):
        found = by_code(msgs, code)
        assert found, f"no {code} message in {[m['code'] for m in faults(msgs)]}"
        return found

    def patrons_of(code):
        return sorted((m["barcode"], m["patron_id"]) for m in only(code))

    [note] = only("orphan_note")
    assert note["level"] == "warning" and "9001" in note["text"] and "does not exist" in note["text"]
    [charge] = only("orphan_charge")
    assert "9002" in charge["text"] and "overdue" in charge["text"]
    [subject] = only("orphan_profile_subject")
    assert "9003" in subject["text"] and "BIO" in subject["text"]
    [fk] = only("foreign_key")
    assert "service_queue" in fk["text"] and "titles" in fk["text"]

    assert patrons_of("duplicate_barcode") == sorted([(" b100", ids[" b100"]), ("B100", ids["B100"])])
    for m in only("duplicate_barcode"):
        assert "B100" in m["text"] and "' b100'" in m["text"]  # the padded one quoted
        assert "Adams, Al" in m["text"] and "Baker, Bea" in m["text"]
    assert patrons_of("duplicate_district_id") == sorted([("D1", ids["D1"]), ("D2", ids["D2"])])
    assert all("'X-7'" in m["text"] and "'x-7 '" in m["text"] for m in only("duplicate_district_id"))

    [union] = only("union_site")
    assert (union["barcode"], union["patron_id"]) == ("U1", ids["U1"])
    assert "Evans, Ed" in union["text"] and "Union Site" in union["text"]

    assert patrons_of("unknown_grade") == sorted([("G1", ids["G1"]), ("G2", ids["G2"])])
    [g1] = [m for m in only("unknown_grade") if m["barcode"] == "G1"]
    assert "Fox, Flo (barcode G1)" in g1["text"] and "'13'" in g1["text"]
    [g2] = [m for m in only("unknown_grade") if m["barcode"] == "G2"]
    assert "has no grade" in g2["text"]
    [site] = only("unknown_site")
    assert (site["barcode"], site["patron_id"]) == ("S1", ids["S1"]) and "'NOWHERE'" in site["text"]
    [policy] = only("unknown_policy")
    assert (policy["barcode"], policy["patron_id"]) == ("P1", ids["P1"])
    assert "Ito, Ivy" in policy["text"] and "'GOLD'" in policy["text"]
    for code, value in (("unknown_patron_type", "Alien"), ("unknown_security_group", "ROOT"),
                        ("unknown_status", "Gone")):
        [m] = only(code)
        assert (m["barcode"], m["patron_id"]) == ("T1", ids["T1"]) and f"'{value}'" in m["text"]

    # nothing else: not the staff without a grade, not the system patron, not the clean rows
    expected = Counter({
        "orphan_note": 1, "orphan_charge": 1, "orphan_profile_subject": 1, "foreign_key": 1,
        "duplicate_barcode": 2, "duplicate_district_id": 2, "union_site": 1, "unknown_grade": 2,
        "unknown_site": 1, "unknown_policy": 1, "unknown_patron_type": 1, "unknown_security_group": 1,
        "unknown_status": 1,
    })
    assert Counter(m["code"] for m in faults(msgs)) == expected
    assert handle.summary["by_code"] == dict(expected)
    assert handle.summary["faults"] == sum(expected.values()) == row["summary"]["faults"]
    assert msgs[0]["code"] == "check_started" and msgs[-1]["code"] == "check_finished"
    assert f"{sum(expected.values())} fault(s)" in msgs[-1]["text"]


def test_other_orphans_are_reported(clean):
    raw = sqlite3.connect(clean.path)
    now = utc_now()
    try:
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute("INSERT INTO checkouts (patron_id, item_barcode, checked_out_at, due_at)"
                    " VALUES (8001, 'I9', ?, ?)", (now, now))
        raw.execute("INSERT INTO holds (patron_id, kind, placed_at) VALUES (8002, 'hold', ?)", (now,))
        raw.execute("INSERT INTO patron_history (patron_id, kind, occurred_at) VALUES (8003, 'payment', ?)",
                    (now,))
        raw.execute("INSERT INTO reviews (patron_id, title, created_at) VALUES (8004, 'Emma', ?)", (now,))
        raw.execute("INSERT INTO patron_profiles (id, patron_id, medium) VALUES (77, 8005, 'BR')")
        title = raw.execute("SELECT id FROM titles").fetchone()[0]
        raw.execute("INSERT INTO service_queue (profile_id, title_id, position, added_at)"
                    " VALUES (8006, ?, 1, ?)", (title, now))
        raw.commit()
    finally:
        raw.close()
    handle, msgs, _ = run_check(clean)
    got = {m["code"]: m["text"] for m in faults(msgs)}
    assert set(got) == {"orphan_checkout", "orphan_hold", "orphan_history", "orphan_review",
                        "orphan_profile", "orphan_service_queue"}
    for code, parent in (("orphan_checkout", 8001), ("orphan_hold", 8002), ("orphan_history", 8003),
                         ("orphan_review", 8004), ("orphan_profile", 8005), ("orphan_service_queue", 8006)):
        assert str(parent) in got[code]
    assert handle.summary["faults"] == 6


def test_integrity_failure_is_an_error(clean):
    # make an index disagree with its table: SQLite's integrity check must notice
    raw = sqlite3.connect(clean.path)
    try:
        raw.execute("PRAGMA writable_schema=ON")
        raw.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX patrons_name ON patrons(first_name, last_name)'"
                    " WHERE name = 'patrons_name'")
        raw.commit()
    finally:
        raw.close()
    handle, msgs, _ = run_check(clean)
    assert handle.status is RunStatus.SUCCEEDED
    integrity = by_code(msgs, "integrity")
    assert integrity and all(m["level"] == "error" for m in integrity)
    assert any("patrons_name" in m["text"] for m in integrity)
    assert handle.summary["by_code"]["integrity"] == len(integrity)


def test_check_can_be_cancelled_between_checks(clean):
    engine = RunEngine(clean)

    def cancel_on_first_step(event):
        if event.kind is EventKind.PROGRESS and event.done == 1:
            engine.cancel(event.run_id)

    engine.subscribe(cancel_on_first_step)
    try:
        handle = engine.execute(CHECK_KIND, CHECK_TITLE, check_database)
    finally:
        engine.shutdown()
    assert handle.status is RunStatus.CANCELLED


# -- the CLI --------------------------------------------------------------------------------


def test_cli_check_exit_codes(faulty, clean, capsys):
    store, _ = faulty
    assert cli.main(["check", "--db", str(store.path)]) == 1
    out = capsys.readouterr().out
    assert "duplicate_barcode" in out and "orphan_note" in out and "fault(s) found" in out
    assert cli.main(["check", "--db", str(clean.path)]) == 0
    assert "0 fault(s) found" in capsys.readouterr().out


def test_cli_check_json(faulty, capsys):
    store, _ = faulty
    assert cli.main(["check", "--db", str(store.path), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "succeeded" and isinstance(result["run_id"], int)
    assert result["summary"]["faults"] == 16
    assert result["summary"]["by_code"]["unknown_policy"] == 1
    conn = store.connect()
    try:
        assert runlog.get_run(conn, result["run_id"])["kind"] == "check"
    finally:
        conn.close()


def test_cli_check_missing_database(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "district.db"
    assert cli.main(["check", "--db", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "no patron database here" in captured.err and str(missing) in captured.err
    assert captured.out == ""
    assert not missing.exists()


def test_cli_check_on_a_demo_district_with_planted_faults(tmp_path, capsys):
    from patron_tui.services.demo import build_demo

    db = tmp_path / "demo.db"
    build_demo(db, patrons=400, seed=7)
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA foreign_keys=OFF")
    victim, barcode = raw.execute(
        "SELECT id, barcode FROM patrons WHERE is_system=0 AND site != 'UNION' AND barcode IS NOT NULL"
        " ORDER BY id LIMIT 1").fetchone()
    raw.execute("INSERT INTO notes (patron_id, note_type, text, created_at) VALUES (999999, 'General', 'x', 'now')")
    raw.execute("UPDATE patrons SET grade='14' WHERE id=?", (victim,))
    raw.execute("UPDATE patrons SET site='UNION' WHERE id=(SELECT max(id) FROM patrons)")
    other = raw.execute("SELECT id FROM patrons WHERE is_system=0 AND id != ? AND barcode IS NOT NULL"
                        " ORDER BY id LIMIT 1 OFFSET 5", (victim,)).fetchone()[0]
    raw.execute("UPDATE patrons SET barcode=? WHERE id=?", (" " + barcode.lower() + " ", other))
    raw.commit()
    raw.close()
    capsys.readouterr()
    assert cli.main(["check", "--db", str(db), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    store = Store(db)
    conn = store.connect()
    try:
        msgs = runlog.messages(conn, result["run_id"], FAULT_LEVELS)
    finally:
        conn.close()
    codes = Counter(m["code"] for m in msgs)
    assert codes["orphan_note"] == 1
    assert codes["unknown_grade"] >= 1 and any(m["code"] == "unknown_grade" and m["barcode"] == barcode for m in msgs)
    assert codes["duplicate_barcode"] == 2  # one message per patron in the group
    conn = store.connect()
    union = conn.execute("SELECT count(*) FROM patrons WHERE site='UNION' AND is_system=0").fetchone()[0]
    conn.close()
    assert codes["union_site"] == union
    assert result["summary"]["faults"] == len(msgs)
