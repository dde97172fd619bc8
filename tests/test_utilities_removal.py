"""Remove Patrons: without the force option a patron with checkouts, open charges or credits
is skipped with the reason; with it every selected patron goes, checked-out items are
declared lost (listed in the report), holds, charges and credits go with the patron, and
reviews pass to the Unknown Patron. The preview lists exactly who the run removes."""

from __future__ import annotations

from pathlib import Path

import pytest

from patron_tui.services import utilities as U
from patron_tui.services.utilities import Selections
from patron_tui.store import Store
from tests.conftest import district
from tests.utilities_helpers import ids_by_barcode, insert, preview_then_run

NOW = "2025-01-01T00:00:00Z"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = district(tmp_path / "d.db", [
        {"barcode": b, "site": "HS", "last_name": "Last" + b, "first_name": "Pat", "status": "Transferred",
         "protected": int(b == "R7")}
        for b in ("R1", "R2", "R3", "R4", "R5", "R6", "R7")] + [
        {"barcode": "KEEP", "site": "HS", "last_name": "Stays", "status": "Active"}])
    ids = ids_by_barcode(s)
    s.ids = ids
    insert(s, "notes", [{"patron_id": ids["R1"], "note_type": "General", "text": "n", "created_at": NOW}])
    insert(s, "reviews", [{"patron_id": ids["R1"], "title": "Holes", "rating": 5, "created_at": NOW},
                          {"patron_id": ids["R2"], "title": "Wonder", "rating": 4, "created_at": NOW}])
    insert(s, "holds", [{"patron_id": ids["R1"], "kind": "hold", "title": "Dune", "placed_at": NOW},
                        {"patron_id": ids["R2"], "kind": "reservation", "title": "Emma", "placed_at": NOW}])
    insert(s, "checkouts", [{"patron_id": ids["R2"], "item_barcode": "31234", "title": "Charlotte's Web",
                             "checked_out_at": NOW, "due_at": "2025-01-15"}])
    charge = {"kind": "other", "amount_cents": 500, "transaction_date": "2025-01-02"}
    insert(s, "charges", [
        {**charge, "patron_id": ids["R3"], "balance_cents": 500},                 # an open charge
        {**charge, "patron_id": ids["R4"], "balance_cents": -200},                # a credit
        {**charge, "patron_id": ids["R5"], "balance_cents": 0, "kind": "overdue", "accumulating": 1},
        {**charge, "patron_id": ids["R6"], "balance_cents": 0},                   # paid: not outstanding
        {**charge, "patron_id": ids["R1"], "balance_cents": 300, "forgiven_at": NOW},   # forgiven
    ])
    return s


def barcodes(store) -> set[str]:
    conn = store.connect()
    try:
        return {r[0] for r in conn.execute("SELECT barcode FROM patrons WHERE barcode IS NOT NULL")}
    finally:
        conn.close()


SEL = Selections(statuses=["Transferred"])


def test_without_the_option_patrons_with_transactions_are_skipped(store):
    plan, pv, handle = preview_then_run(store, "remove-patrons", SEL, {})
    assert pv.removes_data
    assert [c.barcode for c in plan.changes] == ["R1", "R6"]
    reasons = {s.barcode: s.reason for s in plan.skipped}
    assert reasons["R2"].startswith("has 1 checked-out item;")
    assert reasons["R3"].startswith("has 1 open charge ($5.00);")
    assert reasons["R4"].startswith("has 1 credit (-$2.00);")
    assert reasons["R5"].startswith("has 1 open charge ($0.00);")   # a fine still accumulating
    assert "protected" in reasons["R7"]
    assert barcodes(store) == {"R2", "R3", "R4", "R5", "R7", "KEEP"}
    conn = store.connect()
    unknown = conn.execute("SELECT id FROM patrons WHERE is_system = 1").fetchone()[0]
    assert [tuple(r) for r in conn.execute("SELECT title, patron_id FROM reviews ORDER BY title")] == [
        ("Holes", unknown), ("Wonder", store.ids["R2"])]
    # R1's note, hold and (forgiven) charge went with it
    for table in ("notes", "holds", "charges"):
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE patron_id = ?", (store.ids["R1"],)).fetchone()[0] == 0
    rep = U.report(conn, handle.run_id)
    assert rep.changed == 2 and {s.barcode for s in rep.skipped} == {"R2", "R3", "R4", "R5", "R7"}
    conn.close()


def test_with_the_option_everyone_goes_and_checkouts_are_declared_lost(store):
    plan, pv, handle = preview_then_run(store, "remove-patrons", SEL, {"remove_with_outstanding": True})
    assert [c.barcode for c in plan.changes] == ["R1", "R2", "R3", "R4", "R5", "R6"]
    assert [s.barcode for s in plan.skipped] == ["R7"]
    by = {c.barcode: c for c in plan.changes}
    assert by["R2"].before == "patron record (1 checkout, 1 hold, 1 review)"
    assert by["R2"].after == "removed (1 item declared lost; 1 review to the Unknown Patron)"
    assert pv.notes == ['Declared lost: item 31234 "Charlotte\'s Web", checked out by LastR2, Pat (R2).']
    assert barcodes(store) == {"R7", "KEEP"}
    conn = store.connect()
    unknown = conn.execute("SELECT id FROM patrons WHERE is_system = 1").fetchone()[0]
    assert {r[0] for r in conn.execute("SELECT patron_id FROM reviews")} == {unknown}
    for table in ("checkouts", "holds", "charges", "notes"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    # the report keeps the declared-lost item
    assert any("31234" in n for n in U.report(conn, handle.run_id).notes)
    conn.close()


def test_the_unknown_patron_is_never_removed(store):
    plan, pv, handle = preview_then_run(store, "remove-patrons", Selections(statement=""),
                                        {"remove_with_outstanding": True})
    assert any("Unknown Patron" in s.reason for s in plan.skipped)
    conn = store.connect()
    assert conn.execute("SELECT count(*) FROM patrons WHERE is_system = 1").fetchone()[0] == 1
    conn.close()
    assert barcodes(store) == {"R7"}


def test_a_backup_is_taken_first_when_the_setting_is_on(store):
    import sqlite3

    from patron_tui.store import ChangesetWriter

    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "backup_before_destructive", {"value": "on"})
    conn.close()
    plan, pv, handle = preview_then_run(store, "remove-patrons", SEL, {})
    conn = store.connect()
    note = next(n for n in U.report(conn, handle.run_id).notes if n.startswith("A backup of the database"))
    conn.close()
    copy = note.split(": ", 1)[1]
    old = sqlite3.connect(copy)
    # the copy is the database before the run: the removed patrons are still in it
    assert {r[0] for r in old.execute("SELECT barcode FROM patrons WHERE barcode IN ('R1', 'R6')")} == {"R1", "R6"}
    old.close()
    assert "R1" not in barcodes(store)
