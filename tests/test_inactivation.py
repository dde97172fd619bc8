"""Inactivation and deletion rules (services/inactivation.py) and consistent patron removal
(services/removal.py), table-driven on dates that exercise month ends, leap days, birthdays,
the statistical year boundary and the safeguards' edges."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from patron_tui.services.inactivation import (
    DeleteInactive,
    DeleteOutstanding,
    InactivationRules,
    apply_rules,
    preview,
    safeguard,
    select,
)
from patron_tui.services.removal import RemovalRefused, delete_patrons
from patron_tui.store import ChangesetWriter, Store, runlog

from tests.conftest import district

D = dt.date


def make(store: Store, **fields) -> int:
    """One patron (defaults: an Active student of HS created long ago)."""
    conn = store.connect()
    n = conn.execute("SELECT count(*) FROM patrons").fetchone()[0]
    row = {"barcode": f"B{n}", "district_id": f"D{n}", "site": "HS", "last_name": f"Last{n}",
           "first_name": "Pat", "patron_type": "Student", "created_at": "2019-01-01T00:00:00Z",
           "updated_at": "2019-01-01T00:00:00Z", **fields}
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        pid = w.insert("patrons", row)
    conn.close()
    return pid


def add(store: Store, table: str, **row) -> int:
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        key = w.insert(table, row)
    conn.close()
    return key


def checkout(store, pid):
    add(store, "checkouts", patron_id=pid, item_barcode="I1", checked_out_at="2020-01-01", due_at="2020-01-15")


def fine(store, pid, cents):
    add(store, "charges", patron_id=pid, kind="overdue", amount_cents=cents, balance_cents=cents,
        transaction_date="2020-01-01")


def taken(store, rules, today, allow=False) -> dict[int, tuple[str, str]]:
    conn = store.connect()
    try:
        out = select(conn, rules, today, allow_outstanding=allow)
    finally:
        conn.close()
    return {pid: (rule, action) for rule, rows in out.items() for pid, _n, _b, action, _w in rows}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return district(tmp_path / "district.db", sites=(("HS", "High School"),))


# -- when the rules run ----------------------------------------------------------------------

RULES = InactivationRules(records_read_greater_than=1000, inactivate_days=30)


@pytest.mark.parametrize("kw, held", [
    (dict(mode="full", status="succeeded", read=1001, skipped=0), None),
    (dict(mode="full", status="succeeded", read=1000, skipped=0), "not more than the job's threshold"),
    (dict(mode="full", status="succeeded", read=1001, skipped=99), None),
    (dict(mode="full", status="succeeded", read=1001, skipped=100), "skipped"),
    (dict(mode="incremental", status="succeeded", read=5000, skipped=0), "only after a Full"),
    (dict(mode="full", status="failed", read=5000, skipped=0), "did not succeed"),
    (dict(mode="full", status="succeeded", read=1001, skipped=0, previous_full_read=2000), None),
])
def test_safeguards(kw, held):
    got = safeguard(RULES, **kw)
    assert (got is None) if held is None else (held in got), got


@pytest.mark.parametrize("read, previous, held", [(900, 1000, False), (899, 1000, True), (5, None, False)])
def test_percent_of_the_previous_full_run_guard(read, previous, held):
    rules = InactivationRules(inactivate_days=30, min_percent_of_previous=90)
    got = safeguard(rules, mode="full", status="succeeded", read=read, skipped=0, previous_full_read=previous)
    assert (got is not None) == held and (not held or "90%" in got)


def test_no_rule_set_says_so():
    assert "no inactivation or deletion rule" in safeguard(InactivationRules(), mode="full", status="succeeded",
                                                           read=10, skipped=0)


@pytest.mark.parametrize("bad", [
    dict(records_read_greater_than=1_000_000), dict(records_read_greater_than=-1),
    dict(delete_outstanding=DeleteOutstanding(by="age", value=12), delete_inactive=DeleteInactive(
        days=5, condition="regardless")),
])
def test_rules_refuse_values_out_of_range(bad):
    with pytest.raises(ValidationError):
        InactivationRules(**bad)


def test_outstanding_values_are_0_to_99_and_fines_below_needs_an_amount():
    with pytest.raises(ValidationError):
        DeleteOutstanding(by="age", value=100)
    with pytest.raises(ValidationError, match="fine_below_cents"):
        DeleteInactive(days=3, condition="fines_below")


# -- inactivate ------------------------------------------------------------------------------

@pytest.mark.parametrize("today, days, seen, inactivated", [
    (D(2024, 3, 1), 30, "2024-01-30T23:59:59Z", True),    # 31 days before (leap February between)
    (D(2024, 3, 1), 30, "2024-01-31T00:00:00Z", False),   # exactly 30 days: still "in the past 30"
    (D(2024, 3, 31), 1, "2024-03-29T10:00:00Z", True),    # month end
    (D(2024, 3, 31), 1, "2024-03-30T10:00:00Z", False),
    (D(2023, 3, 1), 1, "2023-02-27T00:00:00Z", True),     # non-leap February
    (D(2023, 3, 1), 1, "2023-02-28T00:00:00Z", False),
    (D(2024, 3, 1), 0, "2024-02-29T00:00:00Z", True),     # 0 days: anyone not delivered today
    (D(2024, 3, 1), 0, "2024-03-01T06:00:00Z", False),
])
def test_inactivate_not_updated_in_the_past_n_days(store, today, days, seen, inactivated):
    pid = make(store, last_seen_import_at=seen)
    got = taken(store, InactivationRules(inactivate_days=days), today)
    assert (pid in got) == inactivated and (not inactivated or got[pid] == ("inactivate", "inactivated"))


def test_inactivate_scope_protection_and_never_imported(store):
    today = D(2024, 6, 1)
    old = "2023-01-01T00:00:00Z"
    student = make(store, last_seen_import_at=old)
    staff = make(store, last_seen_import_at=old, patron_type="Staff")
    protected = make(store, last_seen_import_at=old, protected=1)
    inactive = make(store, last_seen_import_at=old, status="Inactive", inactive_since=old)
    by_hand = make(store, created_at="2024-05-01T00:00:00Z")          # never imported, created 31 days ago
    by_hand_new = make(store, created_at="2024-05-20T00:00:00Z")
    persona = make(store, last_seen_import_at=old, persona="Remote")
    rules = InactivationRules(inactivate_days=30, patron_types=("Student",))
    got = taken(store, rules, today)
    assert set(got) == {student, by_hand, persona}
    assert staff not in got and protected not in got and inactive not in got and by_hand_new not in got
    got = taken(store, InactivationRules(inactivate_days=30, personas=("Remote",)), today)
    assert set(got) == {persona}


def test_inactivating_sets_status_and_optionally_homeroom_username_password(store):
    pid = make(store, last_seen_import_at="2020-01-01T00:00:00Z", homeroom="Room 9", username="ann",
               password_hash="x$y")
    plain = make(store, last_seen_import_at="2020-01-01T00:00:00Z", homeroom="Room 7", username="bo")
    conn = store.connect()
    run_id = runlog.create_run(conn, kind="job", title="t", operator="tester")
    with ChangesetWriter(conn, operator="tester", run_id=run_id) as w:
        outcomes = apply_rules(w, InactivationRules(inactivate_days=10, set_homeroom_undefined=True,
                                                    preface_username=True), D(2024, 1, 1), allow_outstanding=False)
    rows = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM patrons WHERE id IN (?, ?)", (pid, plain))}
    journal = conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ? AND op = 'update'",
                           (run_id,)).fetchone()[0]
    conn.close()
    assert [(o.patron_id, o.action) for o in outcomes] == [(pid, "inactivated"), (plain, "inactivated")]
    ann = rows[pid]
    assert (ann["status"], ann["homeroom"], ann["username"], ann["password_hash"]) == \
        ("Inactive", "", "Inactive-ann", None)
    assert ann["inactive_since"] and rows[plain]["username"] == "Inactive-bo"
    assert journal == 2   # through the writer: undoable


# -- graduated seniors -------------------------------------------------------------------------

@pytest.mark.parametrize("today, grad, deleted", [
    (D(2021, 10, 15), 2020, True),    # the reference's worked example (year starts in August)
    (D(2021, 10, 15), 2021, True),    # last year's seniors, once the new year has begun
    (D(2021, 10, 15), 2022, False),   # a senior whose new data arrived in time
    (D(2021, 7, 31), 2021, False),    # the 2021 school year has not begun yet
    (D(2021, 8, 1), 2021, True),      # ... and on its first day it has
    (D(2021, 7, 31), 2020, True),
])
def test_delete_graduated_seniors(store, today, grad, deleted):
    pid = make(store, grade="12", graduation_year=grad, last_seen_import_at=f"{today.isoformat()}T00:00:00Z")
    junior = make(store, grade="11", graduation_year=2019)
    got = taken(store, InactivationRules(delete_graduated_seniors=True), today)
    assert (pid in got) == deleted and junior not in got


def test_seniors_with_transactions_are_not_deleted_and_the_start_month_setting_counts(store):
    with_loan = make(store, grade="12", graduation_year=2020)
    checkout(store, with_loan)
    with_fine = make(store, grade="12", graduation_year=2020)
    fine(store, with_fine, 50)
    clean = make(store, grade="12", graduation_year=2021)
    rules = InactivationRules(delete_graduated_seniors=True)
    assert set(taken(store, rules, D(2021, 8, 15))) == {clean}
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "statistical_year_start_month", {"value": "9"})
    conn.close()
    assert set(taken(store, rules, D(2021, 8, 15))) == set()      # the year starts in September now


# -- inactive patrons ----------------------------------------------------------------------------

@pytest.mark.parametrize("condition, checkouts, cents, allow, action", [
    ("no_checkouts_no_fines", False, 0, False, "deleted"),
    ("no_checkouts_no_fines", True, 0, True, None),
    ("no_checkouts_no_fines", False, 10, True, None),
    ("fines_below", False, 499, False, "kept_back"),   # a fine is an outstanding transaction
    ("fines_below", False, 499, True, "deleted"),
    ("fines_below", False, 500, True, None),
    ("fines_below", True, 0, True, None),
    ("regardless", True, 900, False, "kept_back"),
    ("regardless", True, 900, True, "deleted"),
    ("regardless", False, 0, False, "deleted"),
])
def test_delete_inactive_conditions(store, condition, checkouts, cents, allow, action):
    pid = make(store, status="Inactive", inactive_since="2024-01-01T00:00:00Z")
    if checkouts:
        checkout(store, pid)
    if cents:
        fine(store, pid, cents)
    rule = DeleteInactive(days=60, condition=condition, fine_below_cents=500 if condition == "fines_below" else None)
    got = taken(store, InactivationRules(delete_inactive=rule), D(2024, 3, 1), allow)
    assert got.get(pid, (None, None))[1] == action


@pytest.mark.parametrize("since, days, deleted", [
    ("2024-01-01T08:00:00Z", 60, True),    # 60 days before 2024-03-01 (leap year)
    ("2024-01-02T08:00:00Z", 60, False),
    ("2024-02-29T08:00:00Z", 1, True),
    ("2024-03-01T08:00:00Z", 0, True),
    ("2024-03-01T08:00:00Z", 1, False),
])
def test_delete_inactive_for_n_days(store, since, days, deleted):
    pid = make(store, status="Inactive", inactive_since=since)
    active = make(store, status="Active", inactive_since=since)
    got = taken(store, InactivationRules(delete_inactive=DeleteInactive(days=days)), D(2024, 3, 1))
    assert (pid in got) == deleted and active not in got


@pytest.mark.parametrize("by, value, fields, today, hit", [
    ("age", 16, {"birthdate": "2008-02-29"}, D(2024, 2, 28), False),
    ("age", 16, {"birthdate": "2008-02-29"}, D(2024, 2, 29), True),    # a leap-day birthday in a leap year
    ("age", 17, {"birthdate": "2008-02-29"}, D(2025, 2, 28), True),    # ... counts on 28 February otherwise
    ("age", 17, {"birthdate": "2008-03-01"}, D(2025, 2, 28), False),
    ("age", 0, {"birthdate": "2024-01-31"}, D(2024, 1, 31), True),
    ("grad_years", 5, {"graduation_year": 2019}, D(2024, 1, 1), True),
    ("grad_years", 5, {"graduation_year": 2020}, D(2024, 12, 31), False),
    ("grad_years", 0, {"graduation_year": 2024}, D(2024, 6, 1), True),
    ("inactive_days", 30, {"inactive_since": "2024-01-31T00:00:00Z"}, D(2024, 3, 1), True),
    ("inactive_days", 30, {"inactive_since": "2024-02-01T00:00:00Z"}, D(2024, 3, 1), False),
])
def test_delete_with_outstanding_transactions(store, by, value, fields, today, hit):
    fields = {"inactive_since": "2023-01-01T00:00:00Z", **fields}
    pid = make(store, status="Inactive", **fields)
    checkout(store, pid)
    idle = make(store, status="Inactive", **fields)          # no transactions: not this rule's
    rules = InactivationRules(delete_outstanding=DeleteOutstanding(by=by, value=value))
    assert taken(store, rules, today, allow=True).get(pid) == (("delete_outstanding", "deleted") if hit else None)
    assert idle not in taken(store, rules, today, allow=True)
    if hit:   # without the job option the patron is kept, and the outcome says so
        assert taken(store, rules, today, allow=False)[pid] == ("delete_outstanding", "kept_back")


# -- carrying it out -------------------------------------------------------------------------------

def test_apply_deletes_dependants_consistently_and_preview_matches(store):
    unknown = store.connect().execute("SELECT id FROM patrons WHERE is_system = 1").fetchone()[0]
    gone = make(store, status="Inactive", inactive_since="2020-01-01T00:00:00Z")
    add(store, "notes", patron_id=gone, note_type="General", text="hello", created_at="2020-01-01")
    add(store, "holds", patron_id=gone, kind="hold", placed_at="2020-01-01")
    review = add(store, "reviews", patron_id=gone, title="A book", rating=4, created_at="2020-01-01")
    prof = add(store, "patron_profiles", patron_id=gone, medium="DB")
    add(store, "profile_subjects", profile_id=prof, subject="Mystery")
    checkout(store, gone)
    kept = make(store, status="Inactive", inactive_since="2020-01-01T00:00:00Z")
    fine(store, kept, 300)
    rules = InactivationRules(delete_inactive=DeleteInactive(days=30, condition="regardless"))
    today = D(2024, 1, 1)
    conn = store.connect()
    counts = preview(conn, rules, today, allow_outstanding=True)
    assert counts == {"delete_inactive": {"inactivated": 0, "deleted": 2, "kept_back": 0}}
    run_id = runlog.create_run(conn, kind="job", title="t", operator="tester")
    with ChangesetWriter(conn, operator="tester", run_id=run_id) as w:
        out = apply_rules(w, rules, today, allow_outstanding=True)
    assert sorted((o.patron_id, o.action) for o in out) == [(gone, "deleted"), (kept, "deleted")]
    for table in ("notes", "holds", "patron_profiles", "profile_subjects", "checkouts", "charges"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert conn.execute("SELECT patron_id FROM reviews WHERE id = ?", (review,)).fetchone()[0] == unknown
    assert conn.execute("SELECT count(*) FROM patrons WHERE id IN (?, ?)", (gone, kept)).fetchone()[0] == 0
    deleted = conn.execute("SELECT table_name, count(*) FROM change_journal WHERE run_id = ? AND op = 'delete'"
                           " GROUP BY table_name", (run_id,)).fetchall()
    conn.close()
    assert dict(map(tuple, deleted)) == {"patrons": 2, "notes": 1, "holds": 1, "patron_profiles": 1,
                                         "profile_subjects": 1, "checkouts": 1, "charges": 1}


def test_kept_back_patrons_stay_and_a_patron_taken_twice_is_deleted_once(store):
    senior = make(store, grade="12", graduation_year=2019, last_seen_import_at="2019-05-01T00:00:00Z")
    busy = make(store, status="Inactive", inactive_since="2019-01-01T00:00:00Z")
    checkout(store, busy)
    rules = InactivationRules(inactivate_days=30, delete_graduated_seniors=True,
                              delete_inactive=DeleteInactive(days=30, condition="regardless"))
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        out = apply_rules(w, rules, D(2021, 9, 1), allow_outstanding=False)
    assert {(o.patron_id, o.rule, o.action) for o in out} == {
        (senior, "delete_seniors", "deleted"), (busy, "delete_inactive", "kept_back")}
    assert conn.execute("SELECT status FROM patrons WHERE id = ?", (busy,)).fetchone()[0] == "Inactive"
    assert "does not allow" in next(o.reason for o in out if o.patron_id == busy)
    conn.close()


def test_removal_refuses_system_patrons_and_outstanding_transactions(store):
    conn = store.connect()
    unknown = conn.execute("SELECT id FROM patrons WHERE is_system = 1").fetchone()[0]
    pid = make(store)
    checkout(store, pid)
    with pytest.raises(RemovalRefused, match="system patron"):
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            delete_patrons(w, [unknown])
    with pytest.raises(RemovalRefused, match="outstanding transactions"):
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            delete_patrons(w, [pid])
    assert conn.execute("SELECT count(*) FROM patrons WHERE id = ?", (pid,)).fetchone()[0] == 1
    conn.close()


def test_query_set_members_and_conflicts_forget_a_deleted_patron(store):
    pid = make(store)
    conn = store.connect()
    run_id = runlog.create_run(conn, kind="import", title="t", operator="tester")
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        sid = w.insert("query_sets", {"name": "S", "statement": "x", "created_by": "t", "created_at": "t",
                                      "updated_at": "t"})
        w.insert("query_set_members", {"set_id": sid, "patron_id": pid})
        cid = w.insert("import_conflicts", {"run_id": run_id, "field": "barcode", "value": "B",
                                            "holder_id": pid, "incoming": json.dumps({"fields": {}})})
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        assert delete_patrons(w, [pid]) == 1
    assert conn.execute("SELECT count(*) FROM query_set_members").fetchone()[0] == 0
    assert conn.execute("SELECT holder_id FROM import_conflicts WHERE id = ?", (cid,)).fetchone()[0] is None
    conn.close()
