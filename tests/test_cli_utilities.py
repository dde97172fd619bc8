"""`patron-tui utility`: --list, dry runs, runs with the operations report, option flags
generated from the Options model, --yes for utilities that remove data, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from patron_tui.cli import main
from patron_tui.services.query_sets import save_set
from patron_tui.services.utilities.base import UTILITIES, Plan, Utility, change, patron_rows, register
from patron_tui.store import ChangesetWriter, Store, current_login, utc_now

from tests.conftest import add_patrons


@pytest.fixture
def db(tmp_path: Path) -> str:
    store = Store.create(tmp_path / "d.db", operator=current_login())   # the CLI's operator is the login
    conn = store.connect()
    with ChangesetWriter(conn, operator=store.operator, run_id=None) as w:
        w.insert("sites", {"code": "HS", "name": "High School"})
    conn.close()
    add_patrons(store, [{"barcode": f"C{i}", "site": "HS", "last_name": f"Last{i}", "first_name": "Pat",
                         "grade": "5" if i < 3 else "6", "status": "Active" if i else "Inactive"}
                        for i in range(5)])
    return str(store.path)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def statuses(db: str) -> dict[str, str]:
    conn = Store(db).connect()
    try:
        return dict(conn.execute("SELECT barcode, status FROM patrons WHERE barcode IS NOT NULL ORDER BY id"))
    finally:
        conn.close()


def test_list_text_and_json_with_terms(db, capsys):
    code, out, err = cli(capsys, "utility", "--list", "--db", db)
    assert code == 0 and err == ""
    assert any(line.startswith("change-patron-status ") and "Change Patron Status: Changes the status" in line
               for line in out.splitlines())
    conn = Store(db).connect()
    with ChangesetWriter(conn, operator="x", run_id=None) as w:
        w.update("settings", "term_grade", {"value": "Level"})
    conn.close()
    code, out, _ = cli(capsys, "--db", db, "utility", "--list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["advance-patron-grade"]["title"] == "Advance Patron Level"
    assert rows["change-patron-grade"]["options"][0]["title"] == "Change Level to"
    assert rows["advance-all-grades"]["needs_selection"] is False


def test_dry_run_prints_the_preview_and_changes_nothing(db, capsys):
    code, out, err = cli(capsys, "utility", "change-patron-status", "--db", db, "--grade", "5",
                         "--new-status", "Suspended", "--dry-run")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "Change Patron Status: Grade 5 - 3 selected, 3 would change (dry run: nothing changed)"
    assert "Status before -> after:" in lines[1] and "Active -> Suspended" in lines[3]
    assert statuses(db)["C1"] == "Active"
    code, out, _ = cli(capsys, "utility", "change-patron-status", "--db", db, "--grade", "5", "--grade", "6",
                       "--status", "active", "--new-status", "Inactive", "--dry-run", "--json")
    data = json.loads(out)
    assert data["dry_run"] is True and data["selected"] == 4 and data["changes"] == 4 and data["fingerprint"]


def test_run_prints_the_operations_report(db, capsys):
    code, out, err = cli(capsys, "utility", "change-patron-status", "--db", db, "--query", "grade = 5",
                         "--new-status", "Inactive")
    assert code == 0, err
    assert out.splitlines()[0].endswith("Change Patron Status: 2 changed, 1 skipped, 0 errors (3 selected)")
    assert "skipped [C0] Last0, Pat: already Inactive" in out
    assert statuses(db) == {"C0": "Inactive", "C1": "Inactive", "C2": "Inactive", "C3": "Active", "C4": "Active"}
    code, out, _ = cli(capsys, "utility", "change-patron-policy", "--db", db, "--site", "HS",
                       "--new-policy", "STAFF", "--json")
    rep = json.loads(out)
    assert code == 0 and rep["changed"] == 5 and rep["status"] == "succeeded"
    assert any("Recompute Due Dates" in n for n in rep["notes"]) and rep["follow_up"] == "recompute-due-dates"
    code, out, _ = cli(capsys, "utility", "change-patron-policy", "--db", db, "--site", "HS", "--new-policy", "PATRON")
    assert code == 0 and "next: patron-tui utility recompute-due-dates" in out


def test_selection_from_a_query_set(db, capsys):
    conn = Store(db).connect()
    save_set(conn, current_login(), "Sixes", "grade = 6")
    conn.close()
    code, out, _ = cli(capsys, "utility", "change-patron-grade", "--db", db, "--set", "Sixes", "--new-grade", "7")
    assert code == 0 and "2 changed" in out


@pytest.mark.parametrize("argv, words", [
    (["change-patron-status", "--new-status", "Inactive"], "Choose patrons"),
    (["change-patron-status", "--grade", "5", "--new-status", "Gone"], "'Gone' is not one of the district's statuses"),
    (["change-patron-status", "--grade", "5"], "Change Status to: Field required"),
    (["change-patron-status", "--query", "grade = = 5", "--new-status", "Active"], "Search statement"),
    (["change-patron-status", "--set", "Nope", "--new-status", "Active"], "Query set"),
    (["change-patron-status", "--graduation-from", "13/45/2020", "--new-status", "Active"], "--graduation-from"),
    (["no-such-utility"], "No utility named 'no-such-utility'"),
    ([], "name a utility"),
])
def test_refusals_exit_2_with_a_sentence(db, capsys, argv, words):
    code, out, err = cli(capsys, "utility", *argv[:1], "--db", db, *argv[1:]) if argv else \
        cli(capsys, "utility", "--db", db)
    assert code == 2 and words in err and out == ""
    assert statuses(db)["C1"] == "Active"


def test_an_operator_without_batch_tools_is_refused(tmp_path, capsys):
    store = Store.create(tmp_path / "other.db", operator="somebody-else")
    code, _, err = cli(capsys, "utility", "change-patron-status", "--db", str(store.path), "--query", "",
                       "--new-status", "Active")
    assert code == 2 and f"Operator {current_login()!r}" in err and "may use batch tools" in err


class _WipeOptions(BaseModel):
    keep_some: bool = Field(default=False, title="Keep some")
    label: str = Field(default="gone", max_length=10, title="Label")


class _Wipe(Utility):
    name = "zz-wipe-homerooms"
    title = "Wipe Homerooms"
    description = "test utility that removes data"
    Options = _WipeOptions
    removes_data = True

    def plan(self, conn, ids, options, operator):
        rows = patron_rows(conn, ids, ["homeroom"])
        if options.keep_some:
            rows = rows[:1]
        return Plan(selected=len(ids), changes=[change(r, r["homeroom"], options.label) for r in rows])

    def apply(self, writer, plan, options, ctx):
        writer.update_many("patrons", ((c.patron_id, {"homeroom": c.after}) for c in plan.changes))


@pytest.fixture
def wipe():
    register(_Wipe)
    yield
    UTILITIES.pop(_Wipe.name)


def homerooms(db):
    conn = Store(db).connect()
    try:
        return [r[0] for r in conn.execute("SELECT homeroom FROM patrons WHERE barcode IS NOT NULL ORDER BY id")]
    finally:
        conn.close()


def test_removes_data_needs_yes_and_flags_come_from_the_options(db, capsys, wipe):
    code, _, err = cli(capsys, "utility", "zz-wipe-homerooms", "--db", db, "--grade", "5")
    assert code == 2 and "removes data: 3 of 3 selected patrons would change" in err and "--yes" in err
    assert homerooms(db) == [""] * 5
    code, out, _ = cli(capsys, "utility", "zz-wipe-homerooms", "--db", db, "--grade", "5", "--keep-some",
                       "--label", "x", "--yes")
    assert code == 0 and "1 changed" in out and homerooms(db) == ["x", "", "", "", ""]
    code, out, _ = cli(capsys, "utility", "zz-wipe-homerooms", "--db", db, "--grade", "5", "--no-keep-some",
                       "--yes")
    assert code == 0 and homerooms(db)[:3] == ["gone"] * 3
    code, _, err = cli(capsys, "utility", "zz-wipe-homerooms", "--db", db, "--grade", "5", "--label",
                       "much too long", "--yes")
    assert code == 2 and "Label" in err


def test_utility_help_lists_its_option_flags(db, capsys, wipe):
    with pytest.raises(SystemExit) as exc:
        main(["utility", "zz-wipe-homerooms", "--db", db, "--help"])
    out, _ = capsys.readouterr()
    assert exc.value.code == 0
    assert "--keep-some, --no-keep-some" in out and "--label VALUE" in out and "--grade VALUE" in out
