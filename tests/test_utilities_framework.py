"""The utilities framework (services/utilities/): selections, terminology, options from text,
preview == run, the fingerprint refusal, the operations report and its CSV, and a failed run
that changes nothing."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services import utilities as U
from patron_tui.services.permissions import PermissionDenied
from patron_tui.services.query_sets import freeze_set, save_set
from patron_tui.services.utilities import Selections, UtilityError
from patron_tui.services.utilities.base import Plan, Utility, patron_rows, register, UTILITIES
from patron_tui.services.utilities.selections import SelectionError, selected_ids, selection_where
from patron_tui.store import ChangesetWriter, Store, utc_now

from tests.conftest import add_patrons, district
from tests.utilities_helpers import run

PATRONS = [
    # barcode, grade, status, homeroom, site, type, graduation_year
    ("A1", "5", "Active", "Room 1", "HS", "Student", 2031),
    ("A2", "5", "Inactive", "Room 2", "HS", "Student", 2031),
    ("A3", "12", "Active", "Room 1", "ELM", "Student", 2025),
    ("A4", "12", "Active", "Room 3", "ELM", "Student", 2024),
    ("A5", "", "Active", "", "HS", "Staff", None),
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = district(tmp_path / "d.db")
    add_patrons(s, [{"barcode": b, "district_id": "D" + b, "last_name": "Last" + b, "first_name": "Pat",
                     "grade": g, "status": st, "homeroom": h, "site": site, "patron_type": t,
                     "graduation_year": y} for b, g, st, h, site, t, y in PATRONS])
    return s


@pytest.fixture
def conn(store):
    c = store.connect()
    yield c
    c.close()


def barcodes(conn, sel: Selections, today=date(2025, 7, 15)) -> list[str]:
    where, params = selection_where(conn, sel, today=today)
    ids = selected_ids(conn, where, params)
    return [r["barcode"] for r in patron_rows(conn, ids)]


def add_charge(store, barcode, cents, forgiven=False):
    conn = store.connect()
    pid = conn.execute("SELECT id FROM patrons WHERE barcode = ?", (barcode,)).fetchone()[0]
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("charges", {"patron_id": pid, "kind": "other", "amount_cents": cents, "balance_cents": cents,
                             "transaction_date": "2025-01-01", "forgiven_at": utc_now() if forgiven else None})
    conn.close()


# -- selections --------------------------------------------------------------------------------------

@pytest.mark.parametrize("sel, expected", [
    (Selections(grades=["5"]), ["A1", "A2"]),
    (Selections(grades=["12", "5"], statuses=["active"]), ["A1", "A3", "A4"]),
    (Selections(statuses=["Inactive"]), [None, "A2"]),    # None: the Unknown Patron
    (Selections(homerooms=["room 1"]), ["A1", "A3"]),
    (Selections(sites=["ELM"]), ["A3", "A4"]),
    (Selections(patron_types=["Staff"]), ["A5"]),
    # graduation date = June 30 of the graduation year
    (Selections(graduation_from=date(2025, 6, 1), graduation_to=date(2025, 7, 1)), ["A3"]),
    (Selections(graduation_to=date(2025, 6, 29)), ["A4"]),
    (Selections(graduation_from=date(2025, 6, 30)), ["A1", "A2", "A3"]),
    (Selections(graduated_within_days=15), ["A3"]),     # today 07/15/2025: 06/30/2025 is 15 days ago
    (Selections(graduated_within_days=14), []),
    (Selections(graduated_within_days=400), ["A3", "A4"]),
    (Selections(statement="grade = 12"), ["A3", "A4"]),
    (Selections(statement="grade = 12", sites=["ELM"], homerooms=["Room 3"]), ["A4"]),
])
def test_selection_fields(conn, sel, expected):
    assert barcodes(conn, sel) == expected


def test_balance_range_counts_open_charges_only(store, conn):
    add_charge(store, "A1", 50)
    add_charge(store, "A2", 250)
    add_charge(store, "A2", 1000, forgiven=True)
    add_charge(store, "A3", 300)
    add_charge(store, "A3", -300)     # a credit
    assert barcodes(conn, Selections(balance_min=Decimal("0.01"), balance_max=Decimal("1.00"))) == ["A1"]
    assert barcodes(conn, Selections(balance_min=Decimal("2.50"))) == ["A2"]
    assert barcodes(conn, Selections(balance_max=Decimal("0"), sites=["ELM"])) == ["A3", "A4"]


def test_selection_from_query_set_live_and_frozen(store, conn):
    save_set(conn, "tester", "Fives", "grade = 5")
    assert barcodes(conn, Selections(query_set="Fives")) == ["A1", "A2"]
    assert barcodes(conn, Selections(query_set="fives", statuses=["Active"])) == ["A1"]
    freeze_set(conn, "tester", "Fives")
    conn.execute("UPDATE patrons SET grade = '6' WHERE barcode = 'A1'")   # a frozen set keeps its list
    assert barcodes(conn, Selections(query_set="Fives")) == ["A1", "A2"]


@pytest.mark.parametrize("sel, words", [
    (Selections(), "Choose patrons"),
    (Selections(grades=[" "]), "Choose patrons"),
    (Selections(query_set="Nope"), "Query set"),
    (Selections(statement="grade = = 5"), "Search statement"),
    (Selections(graduation_from=date(2025, 2, 1), graduation_to=date(2025, 1, 1)), "start date is after"),
    (Selections(balance_min=Decimal(5), balance_max=Decimal(1)), "lower amount"),
])
def test_bad_or_missing_selection_is_refused(conn, sel, words):
    with pytest.raises(SelectionError, match=words):
        selection_where(conn, sel)


def test_preview_refuses_without_selection(conn):
    with pytest.raises(UtilityError, match="Choose patrons"):
        U.preview(conn, "change-patron-status", Selections(), {"new_status": "Active"}, "tester")


def test_describe_uses_terms():
    sel = Selections(grades=["5"], homerooms=["R1"], graduation_from=date(2025, 6, 1))
    text = sel.describe(U.Terms(grade="Level", location="Homeroom"))
    assert "Level 5" in text and "Homeroom R1" in text and "06/01/2025" in text


# -- terminology ----------------------------------------------------------------------------------------

def set_terms(store, **terms):
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for key, value in terms.items():
            w.update("settings", key, {"value": value})
    conn.close()


def test_listing_and_labels_use_the_districts_terms(store, conn):
    set_terms(store, term_grade="Level", term_location="Homeroom")
    listing = {name: (title, desc) for name, title, desc in U.listing(conn)}
    assert listing["advance-patron-grade"][0] == "Advance Patron Level"
    assert listing["change-patron-location"][0] == "Change Patron Homeroom"
    assert listing["change-patron-2nd-location"][0] == "Change Patron 2nd Location"
    assert "Level table" in listing["advance-patron-grade"][1]
    titles = [t for _, t, _ in U.listing(conn)]
    assert titles == sorted(titles, key=str.casefold)
    field, = U.option_fields(U.get("change-patron-grade"), U.Terms.load(conn))
    assert field.title == "Change Level to" and field.choices == "grades" and field.required
    pv = U.preview(conn, "advance-patron-grade", Selections(grades=["5"]), {}, "tester")
    assert pv.title == "Advance Patron Level" and pv.column == "Level"


# -- options from text ---------------------------------------------------------------------------------------

class _DemoOptions(__import__("pydantic").BaseModel):
    when: date | None = None
    flag: bool = False
    count: int = __import__("pydantic").Field(default=1, ge=1, le=9, title="How many")
    amount: Decimal | None = None
    text: str = __import__("pydantic").Field(default="", max_length=5, title="Note")


class _Demo(Utility):
    name = "zz-demo"
    title = "Demo"
    description = "demo"
    Options = _DemoOptions


def test_parse_options_from_text():
    demo = _Demo()
    opts = U.parse_options(demo, {"when": "07/04/2026", "flag": "on", "count": "3", "amount": "$1.50", "text": "hi"})
    assert opts.when == date(2026, 7, 4) and opts.flag is True and opts.count == 3 and opts.amount == Decimal("1.50")
    assert U.parse_options(demo, {"when": "", "flag": "no"}).when is None
    for values, words in [({"when": "2026-13-40"}, "not a date"), ({"flag": "maybe"}, "not on or off"),
                          ({"count": "x"}, "How many: 'x' is not a whole number"), ({"count": "10"}, "How many"),
                          ({"text": "toolong"}, "Note"), ({"nope": "1"}, "no option named")]:
        with pytest.raises(UtilityError, match=words):
            U.parse_options(demo, values)
    kinds = {f.name: f.kind for f in U.option_fields(demo)}
    assert kinds == {"when": "date", "flag": "bool", "count": "int", "amount": "decimal", "text": "text"}


def test_choice_values_are_checked(conn):
    with pytest.raises(UtilityError, match="'Gone' is not one of the district's statuses"):
        U.preview(conn, "change-patron-status", Selections(grades=["5"]), {"new_status": "Gone"}, "tester")
    assert ("Active", "Active") in U.choices(conn, "statuses")
    assert U.choices(conn, "grades")[0][0] == "PK"
    assert [c for c, _ in U.choices(conn, "homerooms")] == ["Room 1", "Room 2", "Room 3"]
    assert [c for c, _ in U.choices(conn, "note_types")] == ["Contact", "General", "Alert", "Category"]


# -- runs ----------------------------------------------------------------------------------------------------

def statuses(conn) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute("SELECT barcode, status FROM patrons WHERE barcode IS NOT NULL")}


def test_preview_equals_run_and_report(store, conn):
    sel = Selections(grades=["5", "12"])
    pv = U.preview(conn, "change-patron-status", sel, {"new_status": "Inactive"}, "tester")
    assert pv.selected == 4 and pv.changes == 3 and pv.column == "Status"
    assert [(c.barcode, c.before, c.after) for c in pv.samples] == [
        ("A1", "Active", "Inactive"), ("A3", "Active", "Inactive"), ("A4", "Active", "Inactive")]
    assert [(s.barcode, s.reason) for s in pv.skipped] == [("A2", "already Inactive")]
    handle = run(store, "change-patron-status", sel, {"new_status": "Inactive"}, fingerprint=pv.fingerprint)
    assert handle.status.value == "succeeded", handle.error
    assert handle.kind == "utility" and handle.title == "Change Patron Status"
    assert {k: handle.summary[k] for k in ("utility", "changed", "skipped", "errors", "selected")} == {
        "utility": "change-patron-status", "changed": 3, "skipped": 1, "errors": 0, "selected": 4}
    assert statuses(conn) == {"A1": "Inactive", "A2": "Inactive", "A3": "Inactive", "A4": "Inactive", "A5": "Active"}
    rep = U.report(conn, handle.run_id)
    assert rep.changed == 3 and [(s.barcode, s.name, s.reason) for s in rep.skipped] == [
        ("A2", "LastA2, Pat", "already Inactive")]
    out = io.StringIO()
    assert U.report_csv(conn, handle.run_id, out) == 4
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["Outcome", "Barcode", "Name", "Status before", "Status after", "Reason"]
    assert rows[1] == ["changed", "A1", "LastA1, Pat", "Active", "Inactive", ""]
    assert rows[-1] == ["skipped", "A2", "LastA2, Pat", "", "", "already Inactive"]
    # the journal holds the before-images of the run's changes
    images = [json.loads(r[0]) for r in conn.execute(
        "SELECT before FROM change_journal WHERE run_id = ? AND table_name = 'patrons'", (handle.run_id,))]
    assert len(images) == 3 and all(i["status"] == "Active" for i in images)


def test_run_refuses_when_the_selection_changed_since_the_preview(store, conn):
    sel = Selections(grades=["5"])
    pv = U.preview(conn, "change-patron-status", sel, {"new_status": "Suspended"}, "tester")
    add_patrons(store, [{"barcode": "A9", "site": "HS", "grade": "5"}])
    handle = run(store, "change-patron-status", sel, {"new_status": "Suspended"}, fingerprint=pv.fingerprint)
    assert handle.status.value == "failed"
    assert "selection changed since the preview (2 patrons then, 3 now): preview again" in handle.error
    assert "Suspended" not in statuses(conn).values()
    # the same selection whose rows changed (a before-value) is refused too
    pv = U.preview(conn, "change-patron-status", sel, {"new_status": "Suspended"}, "tester")
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("patrons", conn.execute("SELECT id FROM patrons WHERE barcode='A1'").fetchone()[0],
                 {"status": "Restricted"})
    handle = run(store, "change-patron-status", sel, {"new_status": "Suspended"}, fingerprint=pv.fingerprint)
    assert handle.status.value == "failed" and "preview again" in handle.error


class _Boom(Exception):
    pass


class _Failing(Utility):
    name = "zz-failing"
    title = "Failing"
    description = "writes, then fails"
    Options = _DemoOptions

    def plan(self, conn, ids, options, operator):
        rows = patron_rows(conn, ids)
        return Plan(selected=len(ids), changes=[U.base.change(r, "x", "y") for r in rows])

    def apply(self, writer, plan, options, ctx):
        writer.update_many("patrons", ((c.patron_id, {"homeroom": "HALF"}) for c in plan.changes))
        raise _Boom("disk on fire")


def test_a_failed_run_changes_nothing(store, conn):
    register(_Failing)
    try:
        journal = conn.execute("SELECT count(*) FROM change_journal").fetchone()[0]
        handle = run(store, "zz-failing", Selections(grades=["5"]), {})
        assert handle.status.value == "failed" and "disk on fire" in handle.error
        assert conn.execute("SELECT count(*) FROM patrons WHERE homeroom = 'HALF'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM change_journal").fetchone()[0] == journal
        assert conn.execute("SELECT count(*) FROM run_messages WHERE run_id = ? AND code = 'changed'",
                            (handle.run_id,)).fetchone()[0] == 0
    finally:
        UTILITIES.pop("zz-failing")


def test_run_needs_batch_tools(store, conn):
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("operators", {"login_name": "clerk", "security_level": 5, "created_at": utc_now()})
    with pytest.raises(PermissionDenied, match="may use batch tools"):
        U.preview(conn, "change-patron-status", Selections(grades=["5"]), {"new_status": "Active"}, "clerk")
    engine = RunEngine(store, pool_size=1)
    try:
        with pytest.raises(PermissionDenied):
            U.start_utility(engine, store, "nobody", "change-patron-status", Selections(grades=["5"]),
                            {"new_status": "Active"}, fingerprint=None)
    finally:
        engine.shutdown()


def test_report_of_a_non_utility_run_is_refused(conn):
    with pytest.raises(UtilityError, match="not a utility run"):
        U.report(conn, 999)


def test_report_csv_headers_use_the_districts_terms(store, conn):
    set_terms(store, term_grade="Level")
    handle = run(store, "change-patron-grade", Selections(grades=["5"]), {"new_grade": "6"})
    assert handle.status.value == "succeeded", handle.error
    out = io.StringIO()
    assert U.report_csv(conn, handle.run_id, out) == 2
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0][3:5] == ["Level before", "Level after"]
    assert sorted(r[1] for r in rows[1:]) == ["A1", "A2"] and {r[3] + ">" + r[4] for r in rows[1:]} == {"5>6"}
