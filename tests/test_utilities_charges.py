"""Forgive Charges: the four categories (with accumulating fines), the transaction date range,
the patron balance range (a Selection), and a preview equal to what the run forgives."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from patron_tui.services import utilities as U
from patron_tui.services.utilities import Selections, UtilityError
from patron_tui.store import Store
from tests.conftest import district
from tests.utilities_helpers import ids_by_barcode, insert, preview_then_run

# (key, barcode, kind, description, balance, accumulating, date, forgiven)
CHARGES = [
    ("lost1", "C1", "lost", "Lost item", 2500, 0, "2025-03-01", False),
    ("lostdesc", "C1", "other", "Lost", 1200, 0, "2025-03-05", False),      # description "Lost"
    ("over1", "C1", "overdue", "Overdue fine", 150, 0, "2025-02-01", False),
    ("overdesc", "C2", "other", "Overdue Fine", 90, 0, "2025-04-01", False),  # description "Overdue Fine"
    ("accum", "C2", "other", "Damaged barcode", 40, 1, "2025-05-10", False),  # accumulating: an overdue fine
    ("accum0", "C3", "overdue", "Overdue fine", 0, 1, "2025-06-01T08:00:00Z", False),  # accumulating, nothing yet
    ("other1", "C3", "other", "Damaged cover", 500, 0, "2024-12-31", False),
    ("paid", "C3", "other", "Printing", 0, 0, "2025-01-15", False),          # paid: not open
    ("credit", "C3", "other", "Refund credit", -300, 0, "2025-01-20", False),  # a credit: not a charge
    ("done", "C4", "lost", "Lost item", 900, 0, "2025-01-10", True),          # already forgiven
    ("small", "C4", "other", "Printing", 50, 0, "2025-02-02", False),
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = district(tmp_path / "d.db", [{"barcode": b, "site": "HS", "last_name": "Last" + b, "first_name": "Pat"}
                                     for b in ("C1", "C2", "C3", "C4", "C5")])
    ids = ids_by_barcode(s)
    keys = insert(s, "charges", [
        {"patron_id": ids[b], "kind": k, "description": d, "amount_cents": abs(bal) or 100, "balance_cents": bal,
         "accumulating": acc, "transaction_date": day, "forgiven_at": "2025-01-11T00:00:00Z" if f else None,
         "forgiven_by": "someone" if f else None}
        for _key, b, k, d, bal, acc, day, f in CHARGES])
    s.charge_ids = dict(zip((c[0] for c in CHARGES), keys))
    return s


def charges(store) -> dict[str, tuple]:
    conn = store.connect()
    try:
        rows = {r["id"]: r for r in conn.execute("SELECT * FROM charges")}
    finally:
        conn.close()
    return {k: (rows[i]["balance_cents"], rows[i]["accumulating"], rows[i]["forgiven_by"])
            for k, i in store.charge_ids.items()}


def forgiven_by_run(store, before: dict, after: dict) -> set[str]:
    return {k for k in before if before[k] != after[k]}


ALL = Selections(statement="")   # every patron


@pytest.mark.parametrize("options, expected", [
    ({"category": "all"}, {"lost1", "lostdesc", "over1", "overdesc", "accum", "accum0", "other1", "small"}),
    ({"category": "lost"}, {"lost1", "lostdesc"}),
    ({"category": "overdue"}, {"over1", "overdesc", "accum", "accum0"}),
    ({"category": "other"}, {"other1", "small"}),
    ({"category": "all", "starting": "03/01/2025", "ending": "05/10/2025"},
     {"lost1", "lostdesc", "overdesc", "accum"}),
    ({"category": "all", "ending": "01/31/2025"}, {"other1"}),   # starting blank: every past charge
    ({"category": "overdue", "starting": "06/01/2025"}, {"accum0"}),
])
def test_categories_and_date_ranges(store, options, expected):
    conn = store.connect()
    options = U.parse_options(U.get("forgive-charges"), options)
    conn.close()
    before = charges(store)
    plan, pv, handle = preview_then_run(store, "forgive-charges", ALL, options)
    after = charges(store)
    assert forgiven_by_run(store, before, after) == expected
    for k in expected:
        assert after[k] == (0, 0, "tester")     # balance 0, accumulation stopped, who forgave
    # the preview listed exactly the patrons whose charges were forgiven, with their totals
    owners = {b for key, b, *_ in CHARGES if key in expected}
    assert {c.barcode for c in plan.changes} == owners
    assert pv.notes[0].endswith(f": {len(expected)} open charges to forgive.")


def test_accumulating_fine_stops_and_rows_stay(store):
    plan, pv, handle = preview_then_run(store, "forgive-charges", Selections(statement=""), {"category": "overdue"})
    by = {c.barcode: (c.before, c.after) for c in plan.changes}
    assert by["C2"] == ("2 charges, $1.30 (1 still accumulating)", "forgiven ($0.00)")
    assert by["C3"] == ("1 charge, $0.00 (1 still accumulating)", "forgiven ($0.00)")
    conn = store.connect()
    assert conn.execute("SELECT count(*) FROM charges").fetchone()[0] == len(CHARGES)   # never deleted
    assert conn.execute("SELECT count(*) FROM charges WHERE accumulating = 1").fetchone()[0] == 0
    stamped = conn.execute("SELECT count(*) FROM charges WHERE forgiven_at IS NOT NULL AND forgiven_by = 'tester'"
                           ).fetchone()[0]
    assert stamped == 4
    # the credit and the already-forgiven charge are untouched
    assert charges(store)["credit"] == (-300, 0, None) and charges(store)["done"] == (900, 0, "someone")
    conn.close()


def test_patron_balance_range_selection(store):
    # open balances: C1 48.50, C2 1.30, C3 5.00 - 3.00 credit = 2.00, C4 0.50, C5 0
    plan, pv, _ = preview_then_run(store, "forgive-charges",
                                   Selections(balance_min=Decimal("0.01"), balance_max=Decimal("2.00")),
                                   {"category": "all"})
    # C5 (0.00) and C1 are outside the range; C3's credit counts negative (5.00 - 3.00)
    assert pv.selected == 3 and {c.barcode for c in plan.changes} == {"C2", "C3", "C4"}
    after = charges(store)
    assert after["small"][0] == 0 and after["other1"][0] == 0 and after["lost1"][0] == 2500
    assert after["credit"] == (-300, 0, None)


def test_date_range_backwards_is_refused(store):
    conn = store.connect()
    with pytest.raises(UtilityError, match="starts after it ends"):
        U.preview(conn, "forgive-charges", ALL, U.parse_options(
            U.get("forgive-charges"), {"starting": "05/01/2025", "ending": "04/01/2025"}), "tester")
    with pytest.raises(UtilityError, match="MM/DD/YYYY"):
        U.parse_options(U.get("forgive-charges"), {"starting": "31/12/2025"})
    conn.close()


def test_patrons_without_matching_charges_are_counted_not_skipped(store):
    conn = store.connect()
    pv = U.preview(conn, "forgive-charges", Selections(statement=""), {"category": "lost"}, "tester")
    conn.close()
    assert pv.changes == 1 and [s.reason for s in pv.skipped] == []
    assert any("have no open charges of this category" in n for n in pv.notes)
