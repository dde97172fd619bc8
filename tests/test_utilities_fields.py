"""The field utilities (services/utilities/fields.py): each one's options and skip rules, and
for each one a preview followed by a run that changes exactly what the preview listed (read
back from the database), with the before-images in the change journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services import utilities as U
from patron_tui.services.permissions import PermissionDenied
from patron_tui.services.utilities import Selections, UtilityError
from patron_tui.services.utilities.base import SYSTEM_REASON
from patron_tui.services.utilities.fields import POLICY_NOTE
from patron_tui.store import ChangesetWriter, Store, utc_now

from tests.conftest import district

IGNORED = {"updated_at", "inactive_since"}


def make_store(tmp_path: Path, patrons: list[dict], *, operator: str = "tester") -> Store:
    store = district(tmp_path / "d.db")
    if operator != "tester":
        store = Store(store.path, operator=operator)
    conn = store.connect()
    now = utc_now()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for i, row in enumerate(patrons):
            w.insert("patrons", {"barcode": f"B{i}", "last_name": f"Last{i}", "first_name": "Pat", "site": "HS",
                                 "created_at": now, "updated_at": now, **row})
    conn.close()
    return store


def snapshot(conn, table: str) -> dict[int, dict]:
    return {r["id"]: dict(r) for r in conn.execute(f"SELECT * FROM {table}")}


def preview_then_run(store: Store, name: str, sel: Selections, options: dict, *, table: str = "patrons",
                     column: str) -> tuple[U.Preview, U.Plan, dict]:
    """Preview, then run with the preview's fingerprint; assert the run changed exactly the
    planned rows (no other row, no other column) and journalled their before-values."""
    conn = store.connect()
    try:
        pv = U.preview(conn, name, sel, options, store.operator)
        plan = U.plan_for(conn, name, sel, options, store.operator)
        assert plan.fingerprint == pv.fingerprint and len(plan.changes) == pv.changes
        assert pv.samples == plan.changes[:10] and pv.skipped == plan.skipped
        before = snapshot(conn, table)
        engine = RunEngine(store, pool_size=1)
        try:
            handle = U.start_utility(engine, store, store.operator, name, sel, options, fingerprint=pv.fingerprint)
            handle.wait()
        finally:
            engine.shutdown(cancel_running=False)
        assert handle.status.value == "succeeded", handle.error
        assert handle.summary["changed"] == pv.changes and handle.summary["skipped"] == len(pv.skipped)
        after = snapshot(conn, table)
        diff = {k: {c: (before[k][c], after[k][c]) for c in after[k] if c not in IGNORED
                    and before[k][c] != after[k][c]} for k in after}
        diff = {k: v for k, v in diff.items() if v}
        expected = {(c.row_id or c.patron_id): {column: (c.before, c.after)} for c in plan.changes}
        norm = {k: {c: ("" if a is None else str(a), "" if b is None else str(b)) for c, (a, b) in v.items()}
                for k, v in diff.items()}
        assert norm == expected
        journal = {int(r[0]): json.loads(r[1]) for r in conn.execute(
            "SELECT row_key, before FROM change_journal WHERE run_id = ? AND table_name = ?",
            (handle.run_id, table))}
        assert set(journal) == set(expected)
        for key, image in journal.items():
            assert str(image[column] if image[column] is not None else "") == expected[key][column][0]
        rep = U.report(conn, handle.run_id)
        assert rep.changed == pv.changes and rep.skipped == pv.skipped
        return pv, plan, handle.summary
    finally:
        conn.close()


def reasons(pv) -> dict[str | None, str]:
    return {s.barcode: s.reason for s in pv.skipped}


def changes(pv) -> dict[str | None, tuple[str, str]]:
    return {c.barcode: (c.before, c.after) for c in pv.samples}


# -- grades -------------------------------------------------------------------------------------------

def test_advance_patron_grade(tmp_path):
    store = make_store(tmp_path, [{"grade": g} for g in ("K", "12", "GRAD", "13x", "", "5", "pk")])
    pv, plan, _ = preview_then_run(store, "advance-patron-grade", Selections(statement=""), {}, column="grade")
    assert changes(pv) == {"B0": ("K", "1"), "B1": ("12", "GRAD"), "B5": ("5", "6"), "B6": ("pk", "K")}
    assert reasons(pv) == {"B2": "already in the last Grade (GRAD): stays",
                           "B3": "Grade '13x' is not in the Grade table", "B4": "has no Grade",
                           None: SYSTEM_REASON}
    assert any("Change Patron Policy" in n for n in pv.notes)


def test_advance_patron_grade_needs_a_selection_advance_all_does_not(tmp_path):
    store = make_store(tmp_path, [{"grade": "3"}, {"grade": "4"}])
    conn = store.connect()
    with pytest.raises(UtilityError, match="Choose patrons"):
        U.preview(conn, "advance-patron-grade", Selections(), {}, "tester")
    conn.close()
    pv, _, summary = preview_then_run(store, "advance-all-grades", Selections(), {}, column="grade")
    assert changes(pv) == {"B0": ("3", "4"), "B1": ("4", "5")} and summary["selected"] == 3


def test_advance_uses_the_grade_tables_order_and_last_grade(tmp_path):
    store = make_store(tmp_path, [{"grade": "9"}, {"grade": "10"}])
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:   # grade 10 becomes the last grade
        w.update("grades", conn.execute("SELECT id FROM grades WHERE is_last = 1").fetchone()[0], {"is_last": 0})
        w.update("grades", conn.execute("SELECT id FROM grades WHERE code = '10'").fetchone()[0], {"is_last": 1})
    conn.close()
    pv, _, _ = preview_then_run(store, "advance-patron-grade", Selections(grades=["9", "10"]), {}, column="grade")
    assert changes(pv) == {"B0": ("9", "10")} and "last Grade (10)" in reasons(pv)["B1"]


def test_change_patron_grade(tmp_path):
    store = make_store(tmp_path, [{"grade": "5"}, {"grade": "6"}, {"grade": "7"}])
    pv, _, _ = preview_then_run(store, "change-patron-grade", Selections(grades=["5", "6"]), {"new_grade": "6"},
                                column="grade")
    assert changes(pv) == {"B0": ("5", "6")} and reasons(pv) == {"B1": "already 6"}
    conn = store.connect()
    with pytest.raises(UtilityError, match="Change Grade to: '99' is not one of the district's grades"):
        U.preview(conn, "change-patron-grade", Selections(grades=["5"]), {"new_grade": "99"}, "tester")
    with pytest.raises(UtilityError, match="Change Grade to"):
        U.preview(conn, "change-patron-grade", Selections(grades=["5"]), {}, "tester")
    conn.close()


# -- locations ---------------------------------------------------------------------------------------------

def test_change_patron_location_with_the_districts_term(tmp_path):
    store = make_store(tmp_path, [{"homeroom": "R1", "grade": "3"}, {"homeroom": "R2", "grade": "3"},
                                  {"homeroom": "", "grade": "3"}])
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "term_location", {"value": "Homeroom"})
    with pytest.raises(UtilityError, match="Change Homeroom to"):
        U.preview(conn, "change-patron-location", Selections(grades=["3"]), {"new_location": ""}, "tester")
    with pytest.raises(UtilityError, match="Change Homeroom to: give the new Homeroom"):
        U.preview(conn, "change-patron-location", Selections(grades=["3"]), {"new_location": "  "}, "tester")
    with pytest.raises(UtilityError, match="Change Homeroom to"):
        U.preview(conn, "change-patron-location", Selections(grades=["3"]), {"new_location": "x" * 101}, "tester")
    conn.close()
    pv, _, _ = preview_then_run(store, "change-patron-location", Selections(grades=["3"]),
                                {"new_location": "R2"}, column="homeroom")
    assert pv.title == "Change Patron Homeroom" and pv.column == "Homeroom"
    assert changes(pv) == {"B0": ("R1", "R2"), "B2": ("", "R2")} and reasons(pv) == {"B1": "already R2"}


def test_change_patron_2nd_location_blank_removes_it(tmp_path):
    store = make_store(tmp_path, [{"location2": "Bus 4"}, {"location2": ""}, {"location2": "Bus 9"}])
    pv, _, _ = preview_then_run(store, "change-patron-2nd-location", Selections(sites=["HS"]), {},
                                column="location2")
    assert changes(pv) == {"B0": ("Bus 4", ""), "B2": ("Bus 9", "")} and reasons(pv) == {"B1": "already blank"}
    pv, _, _ = preview_then_run(store, "change-patron-2nd-location", Selections(sites=["HS"]),
                                {"new_location2": " Bus 7 "}, column="location2")
    assert set(changes(pv).values()) == {("", "Bus 7")}


# -- policy and due dates ----------------------------------------------------------------------------------

def add_loan(store, barcode, out, due):
    conn = store.connect()
    pid = conn.execute("SELECT id FROM patrons WHERE barcode = ?", (barcode,)).fetchone()[0]
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        key = w.insert("checkouts", {"patron_id": pid, "item_barcode": f"I{out}{due}", "checked_out_at": out,
                                     "due_at": due})
    conn.close()
    return key


def test_change_patron_policy_notes_that_due_dates_do_not_change(tmp_path):
    store = make_store(tmp_path, [{"policy": "STUDENT"}, {"policy": "STAFF"}, {"policy": ""}])
    add_loan(store, "B0", "2026-01-05T10:00:00.000000Z", "2026-01-19T23:59:59.000000Z")
    pv, _, summary = preview_then_run(store, "change-patron-policy", Selections(sites=["HS"]),
                                      {"new_policy": "STAFF"}, column="policy")
    assert changes(pv) == {"B0": ("STUDENT", "STAFF"), "B2": ("", "STAFF")} and reasons(pv) == {"B1": "already STAFF"}
    assert POLICY_NOTE in pv.notes and any("1 current loan" in n for n in pv.notes)
    assert POLICY_NOTE in summary["notes"] and pv.follow_up == summary["follow_up"] == "recompute-due-dates"
    conn = store.connect()
    assert conn.execute("SELECT due_at FROM checkouts").fetchone()[0] == "2026-01-19T23:59:59.000000Z"
    conn.close()


def test_recompute_due_dates(tmp_path):
    store = make_store(tmp_path, [{"policy": "STAFF"}, {"policy": "STUDENT"}, {"policy": "GONE"}, {"policy": "STAFF"}])
    moved = add_loan(store, "B0", "2026-01-05T10:00:00.000000Z", "2026-01-19T23:59:59.000000Z")    # STAFF: 28 days
    add_loan(store, "B1", "2026-01-05T10:00:00.000000Z", "2026-01-19T23:59:59.000000Z")            # STUDENT 14: right
    add_loan(store, "B2", "2026-01-05T10:00:00.000000Z", "2026-01-19T23:59:59.000000Z")            # unknown policy
    pv, plan, _ = preview_then_run(store, "recompute-due-dates", Selections(sites=["HS"]), {},
                                   table="checkouts", column="due_at")
    assert [(c.row_id, c.before, c.after) for c in plan.changes] == [
        (moved, "2026-01-19T23:59:59.000000Z", "2026-02-02T23:59:59.000000Z")]
    assert reasons(pv) == {"B1": "already due as policy STUDENT says (14 days)",
                           "B2": "policy 'GONE' is not in the policy table: its loans keep their due dates"}
    assert any("1 selected patron has no current loans" in n for n in pv.notes)


# -- security group ------------------------------------------------------------------------------------------

GROUPS = ["STUDENT", "TEACHER", "LIBRARIAN", "SITEADMIN", "", "WEIRD"]


def librarian_store(tmp_path) -> Store:
    store = make_store(tmp_path, [{"security_group": g} for g in GROUPS], operator="lib")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("operators", {"login_name": "lib", "security_level": 2, "may_use_batch_tools": 1,
                               "created_at": utc_now()})
    conn.close()
    return store


def test_security_group_levels_of_the_operator(tmp_path):
    store = librarian_store(tmp_path)
    pv, _, _ = preview_then_run(store, "change-patron-security-group", Selections(sites=["HS"]),
                                {"new_security_group": "TEACHER"}, column="security_group")
    assert changes(pv) == {"B0": ("STUDENT", "TEACHER"), "B4": ("", "TEACHER")}
    r = reasons(pv)
    assert r["B1"] == "already TEACHER"
    assert "'LIBRARIAN' (security level 2) is not one an operator at level 2 may change" in r["B2"]
    assert "'SITEADMIN' (security level 1)" in r["B3"]
    assert "'WEIRD' is not in the security group table" in r["B5"]


@pytest.mark.parametrize("group, level", [("LIBRARIAN", 2), ("SITEADMIN", 1), ("DISTADMIN", 0)])
def test_assigning_a_group_the_operator_may_not_is_refused_whole(tmp_path, group, level):
    store = librarian_store(tmp_path)
    conn = store.connect()
    with pytest.raises(PermissionDenied, match=f"'lib' \\(security level 2\\) may not assign the security group "
                                               f"'{group}' \\(security level {level}\\)"):
        U.preview(conn, "change-patron-security-group", Selections(sites=["HS"]),
                  {"new_security_group": group}, "lib")
    engine = RunEngine(store, pool_size=1)
    try:
        with pytest.raises(PermissionDenied):
            U.start_utility(engine, store, "lib", "change-patron-security-group", Selections(sites=["HS"]),
                            {"new_security_group": group}, fingerprint=None)
    finally:
        engine.shutdown()
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    conn.close()


def test_level_0_may_assign_and_change_every_group(tmp_path):
    store = make_store(tmp_path, [{"security_group": g} for g in GROUPS])
    pv, _, _ = preview_then_run(store, "change-patron-security-group", Selections(sites=["HS"]),
                                {"new_security_group": "DISTADMIN"}, column="security_group")
    assert pv.changes == 6 and reasons(pv) == {}


# -- status ------------------------------------------------------------------------------------------------------

def test_change_patron_status_keeps_inactive_since(tmp_path):
    store = make_store(tmp_path, [{"status": "Active"}, {"status": "Inactive", "inactive_since": "2020-01-01"},
                                  {"status": "Suspended"}])
    pv, _, _ = preview_then_run(store, "change-patron-status", Selections(statement=""), {"new_status": "Inactive"},
                                column="status")
    assert changes(pv) == {"B0": ("Active", "Inactive"), "B2": ("Suspended", "Inactive")}
    assert reasons(pv) == {"B1": "already Inactive", None: SYSTEM_REASON}
    conn = store.connect()
    since = dict(conn.execute("SELECT barcode, inactive_since FROM patrons WHERE barcode IS NOT NULL"))
    assert since["B1"] == "2020-01-01" and since["B0"] and since["B2"]
    conn.close()
    preview_then_run(store, "change-patron-status", Selections(statuses=["Inactive"], sites=["HS"]),
                     {"new_status": "Active"}, column="status")
    conn = store.connect()
    assert [r[0] for r in conn.execute("SELECT inactive_since FROM patrons WHERE barcode IS NOT NULL")] == [None] * 3
    conn.close()


# -- sites ---------------------------------------------------------------------------------------------------------

def test_move_patrons_to_site(tmp_path):
    store = make_store(tmp_path, [{"site": "HS"}, {"site": "ELM"}, {"site": "UNION"}])
    pv, _, _ = preview_then_run(store, "move-patrons-to-site", Selections(statement=""), {"new_site": "ELM"},
                                column="site")
    assert changes(pv) == {"B0": ("HS", "ELM"), "B2": ("UNION", "ELM")}
    assert reasons(pv) == {"B1": "already ELM", None: SYSTEM_REASON}
    conn = store.connect()
    with pytest.raises(UtilityError, match="the Union Site is not a target"):
        U.preview(conn, "move-patrons-to-site", Selections(sites=["ELM"]), {"new_site": "UNION"}, "tester")
    assert [c for c, _ in U.choices(conn, "target_sites")] == ["ELM", "HS"]
    with pytest.raises(UtilityError, match="'NOPE' is not one of the district's target sites"):
        U.preview(conn, "move-patrons-to-site", Selections(sites=["ELM"]), {"new_site": "NOPE"}, "tester")
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "centralized_catalog", {"value": "off"})
    util = U.get("move-patrons-to-site")
    assert "only available with a centralized catalog" in util.available(conn)
    with pytest.raises(UtilityError, match="centralized catalog"):
        U.preview(conn, "move-patrons-to-site", Selections(sites=["ELM"]), {"new_site": "HS"}, "tester")
    conn.close()


def test_reassign_union_site_patrons(tmp_path):
    store = make_store(tmp_path, [{"site": "UNION"}, {"site": "HS"}, {"site": "UNION"}])
    pv, _, _ = preview_then_run(store, "reassign-union-site-patrons", Selections(statement=""), {"new_site": "HS"},
                                column="site")
    assert changes(pv) == {"B0": ("UNION", "HS"), "B2": ("UNION", "HS")}
    assert reasons(pv) == {"B1": "not at the Union Site (at HS)", None: SYSTEM_REASON}
    conn = store.connect()
    assert U.get("reassign-union-site-patrons").available(conn) is None
    with pytest.raises(UtilityError, match="Union Site is not a target"):
        U.preview(conn, "reassign-union-site-patrons", Selections(statement=""), {"new_site": "UNION"}, "tester")
    conn.close()


def test_recompute_refuses_when_the_policy_changed_since_the_preview(tmp_path):
    store = make_store(tmp_path, [{"policy": "STAFF"}])
    add_loan(store, "B0", "2026-01-05T10:00:00.000000Z", "2026-01-19T23:59:59.000000Z")
    conn = store.connect()
    sel = Selections(sites=["HS"])
    pv = U.preview(conn, "recompute-due-dates", sel, {}, "tester")
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:   # the after-values change, not the before
        w.update("policies", conn.execute("SELECT id FROM policies WHERE code = 'STAFF'").fetchone()[0],
                 {"loan_days": 7})
    engine = RunEngine(store, pool_size=1)
    try:
        handle = U.start_utility(engine, store, "tester", "recompute-due-dates", sel, {}, fingerprint=pv.fingerprint)
        handle.wait()
    finally:
        engine.shutdown(cancel_running=False)
    assert handle.status.value == "failed" and "preview again" in handle.error
    assert conn.execute("SELECT due_at FROM checkouts").fetchone()[0] == "2026-01-19T23:59:59.000000Z"
    conn.close()


def test_advance_all_grades_describes_its_selection_as_everyone(tmp_path):
    store = make_store(tmp_path, [{"grade": "3"}])
    conn = store.connect()
    assert U.preview(conn, "advance-all-grades", Selections(), {}, "tester").selections == "all patrons"
    assert U.preview(conn, "advance-all-grades", Selections(grades=["3"]), {}, "tester").selections == "Grade 3"
    conn.close()
