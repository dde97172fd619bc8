"""Pilot tests at 80x24, keyboard only: the Import screen runs a real import into a real
store, the job summary shows its real counts and messages, exports them, and resolves a
conflict by keys."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from textual.widgets import Checkbox, DataTable, Input, OptionList, Select

from patron_tui.services.imports.conflicts import list_conflicts
from patron_tui.store import Store
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.conflict_dialog import ConflictScreen
from patron_tui.ui.screens.import_run import CancelRunScreen, ImportScreen, complete_path, estimate_records
from patron_tui.ui.screens.key_help import KeyHelpScreen
from patron_tui.ui.screens.job_summary import ExportMessagesScreen, JobSummaryScreen, MessageView
from patron_tui.ui.screens.query_dialogs import ConfirmScreen
from patron_tui.ui.screens.sections import JobsScreen

from tests.conftest import district, patron_where
from tests.jobs_helpers import write_import
from tests.pilot import from_palette, in_every_theme, type_text

ROWS = [
    "ID,Barcode,Last,First,School,Grade",
    "D1,B1,Able,Ann,HS,10",        # updated (grade)
    "D3,B3,[bold]Carter,Cleo,HS,9",  # added (a name holding markup shows literally)
    "D4,B4,Dunn,Dee,ZZZ,8",        # added at the Union Site, with a warning
    "D9,B2,Newman,Nia,HS,2",       # barcode conflict: B2 is Bob's
    "D6,,Nobar,Ned,HS,1",          # skipped: no barcode (required)
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return district(tmp_path / "district.db", [
        {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS", "grade": "9"},
        {"district_id": "D2", "barcode": "B2", "last_name": "Baker", "first_name": "Bob", "site": "HS", "grade": "3"},
    ], sites=(("HS", "High School"),))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # the form takes paths relative to the working directory: the test types short ones
    monkeypatch.chdir(tmp_path)


def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_import(tmp_path, ROWS[1:], name="students.csv", props_name="students.properties", grade="Grade")


patron = patron_where


async def settle(app, pilot, rounds: int = 3):
    for _ in range(rounds):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


async def wait_until(app, pilot, condition, *, limit: int = 300):
    """Let the app work until `condition()` holds (bounded by a number of rounds, not a clock)."""
    for _ in range(limit):
        if condition():
            return
        await pilot.pause(0.05)
        await app.workers.wait_for_complete()
    assert condition()


async def clear_input(pilot, widget: Input):
    assert widget.has_focus
    await pilot.press("end", "ctrl+u")


async def open_import(app, pilot):
    await pilot.press("4")
    await settle(app, pilot)
    assert isinstance(app.screen, JobsScreen)
    await pilot.press("i")
    await settle(app, pilot)
    assert isinstance(app.screen, ImportScreen)


async def choose(pilot, steps: int):
    """Open the focused Select, move `steps` down, choose."""
    await pilot.press("enter")
    await pilot.pause()
    await pilot.press(*["down"] * steps, "enter")
    await pilot.pause()


async def fill_and_start(app, pilot, csv_path: Path, props: Path, *, dry_run: bool = False,
                         incremental: bool = False, encoding_steps: int = 0):
    screen = app.screen
    assert screen.query_one("#import-path", Input).has_focus
    await type_text(app, pilot, csv_path.name)
    await pilot.press("enter")  # checked; the sibling .properties is filled in
    await settle(app, pilot)
    props_input = screen.query_one("#import-properties", Input)
    assert props_input.has_focus and props_input.value == props.name
    await pilot.press("enter")  # checked; focus moves on to the mode
    await settle(app, pilot)
    assert screen.query_one("#import-mode", Select).has_focus
    if incremental:
        await choose(pilot, 1)
    await pilot.press("tab")  # encoding: "from the properties file" unless told
    assert screen.query_one("#import-encoding", Select).has_focus
    if encoding_steps:
        await choose(pilot, encoding_steps)
    await pilot.press("tab")
    assert screen.query_one("#import-dry-run", Checkbox).has_focus
    if dry_run:
        await pilot.press("space")
    await pilot.press("tab", "tab")  # past "errors only" to Start
    await pilot.press("enter")
    await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
    await settle(app, pilot)


def counts_text(app) -> str:
    return str(app.screen.query_one("#summary-counts").render())


async def test_import_summary_export_and_conflict_by_keys(store, tmp_path):
    csv_path, props = files(tmp_path)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await open_import(app, pilot)
        await fill_and_start(app, pilot, csv_path, props)
        summary = app.screen
        run_id = summary.run_id
        text = counts_text(app)
        assert "Read 5 · added 2 · updated 1 · unchanged 0 · skipped 2" in text, text
        assert "warnings 1" in text and "conflicts 1" in text and "full" in text and "dry run" not in text
        assert "students.csv" in text
        # the messages, filtered by keys; data shows literally
        view = summary.query_one(MessageView)
        assert view.has_focus
        assert any(r[3] == "missing_required" and r[0] == 6 for r in view.rows)
        await pilot.press("s")
        await pilot.pause()
        assert {r[2] for r in view.rows} == {"skipped"} and len(view.rows) == 2
        assert {r[3] for r in view.rows} == {"barcode_conflict", "missing_required"}
        await pilot.press("w")
        await pilot.pause()
        assert [(r[2], r[3], r[1]) for r in view.rows] == [("warning", "union_site", "B4")]
        await pilot.press("p")
        await pilot.pause()
        assert {r[2] for r in view.rows} == {"warning", "skipped"}
        await pilot.press("a")
        await pilot.pause()
        assert {"info", "warning", "skipped"} <= {r[2] for r in view.rows}
        rendered = "\n".join(view.render_line(y).text for y in range(view.size.height))
        assert "WARN" in rendered and "union_site" in rendered and "added [bold]Carter, Cleo" in rendered

        # export every message to a typed path
        await pilot.press("x")
        await settle(app, pilot)
        assert isinstance(app.screen, ExportMessagesScreen)
        out = tmp_path / f"run-{run_id}-messages.csv"
        assert app.screen.query_one(Input).value == str(out)  # the default: next to where we are
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, JobSummaryScreen)
        with open(out, encoding="utf-8", newline="") as f:
            exported = list(csv.DictReader(f))
        assert len(exported) == len(view.rows)
        assert {"line", "barcode", "level", "code", "text"} == set(exported[0])
        assert any(r["code"] == "barcode_conflict" and r["line"] == "5" for r in exported)

        # the conflict: open it, move B2 from Bob to Nia with a typed confirmation
        await pilot.press("c")
        await pilot.pause()
        table = summary.query_one("#summary-conflicts", DataTable)
        assert table.has_focus and table.row_count == 1
        assert "B2" in str(table.get_row_at(0)[3]) and "open" in str(table.get_row_at(0)[4])
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ConflictScreen)
        rows = app.screen.query_one(DataTable)
        cells = {str(rows.get_row_at(i)[0]): (str(rows.get_row_at(i)[1]), str(rows.get_row_at(i)[2]))
                 for i in range(rows.row_count)}
        assert cells["Last name"] == ("Baker", "Newman") and cells["Barcode"] == ("B2", "B2")
        await pilot.press("m")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press(*"move", "enter")
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: "moved" in str(table.get_row_at(0)[4]))
        assert isinstance(app.screen, JobSummaryScreen)
    bob = patron(store, district_id="D2")
    nia = patron(store, district_id="D9")
    assert bob["barcode"] is None and "barcode B2 moved to Newman, Nia" in bob["flagged"]
    assert nia["barcode"] == "B2" and nia["grade"] == "2"
    assert patron(store, district_id="D1")["grade"] == "10"
    assert patron(store, district_id="D4")["site"] == "UNION"
    conn = store.connect()
    try:
        (c,) = list_conflicts(conn, run_id)
        journal = conn.execute("SELECT table_name, op FROM change_journal WHERE run_id = ?",
                               (c.resolution_run_id,)).fetchall()
    finally:
        conn.close()
    assert c.status == "moved" and c.resolved_by == "tester"
    assert {(r[0], r[1]) for r in journal} == {("patrons", "update"), ("patrons", "insert"),
                                                ("import_conflicts", "update")}


async def test_edit_and_keep_from_the_jobs_list(store, tmp_path):
    csv_path, props = files(tmp_path)
    (tmp_path / "again.csv").write_text("ID,Barcode,Last,First,School,Grade\nD8,B1,Eight,Eve,HS,4\n",
                                        encoding="utf-8")
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await open_import(app, pilot)
        await fill_and_start(app, pilot, csv_path, props)
        run_id = app.screen.run_id
        await pilot.press("escape")  # back to the form
        await settle(app, pilot)
        assert isinstance(app.screen, ImportScreen)
        await pilot.press("escape")  # back to Jobs, which lists the run
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        ol = app.screen.query_one(OptionList)
        ids = [ol.get_option_at_index(i).id for i in range(ol.option_count)]
        assert f"run-{run_id}" in ids
        while ol.highlighted is None or ol.get_option_at_index(ol.highlighted).id != f"run-{run_id}":
            await pilot.press("down")
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, JobSummaryScreen) and app.screen.run_id == run_id
        assert "Read 5" in counts_text(app)
        await pilot.press("question_mark")  # the summary's keys, from its declared bindings
        await settle(app, pilot)
        assert isinstance(app.screen, KeyHelpScreen)
        keys = app.screen.query_one(DataTable)
        listed = {str(keys.get_row_at(i)[0]): str(keys.get_row_at(i)[1]) for i in range(keys.row_count)}
        assert listed["x"] == "Export CSV" and listed["p"] == "Problems only" and listed["c"] == "Conflicts"
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("c", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ConflictScreen)
        # edit: a taken value is refused by the run, nothing changes
        await pilot.press("e")
        await pilot.pause()
        await pilot.press(*"B1", "enter")
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
        assert patron(store, district_id="D9") is None
        table = app.screen.query_one("#summary-conflicts", DataTable)
        assert "open" in str(table.get_row_at(0)[4])
        # edit with a free value
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        await pilot.press(*"B77", "enter")
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: "edited" in str(table.get_row_at(0)[4]))
        # resolved now: k is refused in the dialog
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ConflictScreen)
        await pilot.press("k")
        await settle(app, pilot)
        assert isinstance(app.screen, ConflictScreen)
        await pilot.press("escape")
        await settle(app, pilot)
    assert patron(store, district_id="D9")["barcode"] == "B77"
    assert patron(store, district_id="D2")["barcode"] == "B2"
    assert patron(store, district_id="D2")["flagged"] is None


async def test_form_refuses_missing_files_and_dry_run_changes_nothing(store, tmp_path):
    csv_path, props = files(tmp_path)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await open_import(app, pilot)
        screen = app.screen
        await pilot.press(*"nope.csv", "enter")
        await settle(app, pilot)
        error = str(screen.query_one("#import-error").render())
        assert "nope.csv" in error and "no such file" in error
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, ImportScreen) and screen.handle is None
        await clear_input(pilot, screen.query_one("#import-path", Input))
        bad = tmp_path / "bad.properties"
        bad.write_text("field.nosuch=X\n", encoding="utf-8")
        await type_text(app, pilot, csv_path.name)
        await pilot.press("tab")
        await type_text(app, pilot, bad.name)
        await pilot.press("enter")
        await settle(app, pilot)
        error = str(screen.query_one("#import-error").render())
        assert "bad.properties" in error and "not valid" in error
        await clear_input(pilot, screen.query_one("#import-properties", Input))  # filled in again from the CSV
        await pilot.press("shift+tab")
        await clear_input(pilot, screen.query_one("#import-path", Input))
        await fill_and_start(app, pilot, csv_path, props, dry_run=True, incremental=True, encoding_steps=2)
        text = counts_text(app)
        assert "dry run: nothing was changed" in text and "added 2" in text
        assert "incremental" in text and "encoding utf-8-sig" in text, text
    assert patron(store, district_id="D3") is None
    assert patron(store, district_id="D1")["grade"] == "9"


async def test_cancel_asks_first(store, tmp_path, monkeypatch):
    import threading

    from patron_tui.services.imports import engine as engine_mod

    csv_path, props = files(tmp_path)
    gate = threading.Event()
    real = engine_mod.run_import

    def slow_import(ctx, **kw):  # holds the run until the test lets it go
        ctx.progress(1)
        while not gate.wait(0.01):
            ctx.check_cancelled()
        return real(ctx, **kw)

    monkeypatch.setattr("patron_tui.ui.screens.import_run.run_import", slow_import)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await open_import(app, pilot)
        screen = app.screen
        await type_text(app, pilot, csv_path.name)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        await wait_until(app, pilot, lambda: screen.handle is not None and screen.handle.done >= 1)
        assert "records" in str(screen.query_one("#import-status").render())
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, CancelRunScreen)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, ImportScreen) and screen.running
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert isinstance(app.screen, CancelRunScreen)
        await pilot.press("y")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
        await settle(app, pilot)
        assert "cancelled" in str(app.screen.query_one("#summary-title").render())
        gate.set()
    assert patron(store, district_id="D3") is None


async def test_palette_opens_the_import_screen(store):
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await from_palette(app, pilot, "import a patron file", "Import a patron file")
        await settle(app, pilot)
        assert app.current_mode == "jobs" and isinstance(app.screen, ImportScreen)
        assert app.screen.query_one("#import-path", Input).has_focus
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)


def test_path_completion_and_estimate(tmp_path):
    (tmp_path / "students.csv").write_text("a,b\n" + "1,2\n" * 9, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    assert complete_path(str(tmp_path / "stu")) == str(tmp_path / "students.csv")
    assert complete_path(str(tmp_path / "su")) == str(tmp_path / "sub") + "/"
    assert complete_path(str(tmp_path / "zz")) is None
    assert estimate_records(tmp_path / "students.csv") == 9


async def test_form_and_summary_fit_80x24_in_every_theme(store, tmp_path):
    # one keyboard walkthrough in the default theme; each screen's fit assertions run again in
    # all four themes through in_every_theme (this was four walkthroughs, one per theme)
    csv_path, props = files(tmp_path)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await open_import(app, pilot)
        screen = app.screen

        def form_fits():
            for wid in ("#import-path", "#import-properties", "#import-mode", "#import-encoding", "#import-dry-run",
                        "#import-errors-only", "#import-start", "#import-progress", "#import-status", "#log-pane"):
                region = screen.query_one(wid).region
                assert region.height >= 1 and region.right <= 80 and region.bottom <= 23, (wid, region)
            dry = screen.query_one("#import-dry-run", Checkbox)
            assert "X" not in str(dry.render())  # unticked reads as empty without colour

        form_fits()
        await in_every_theme(app, pilot, form_fits)
        await type_text(app, pilot, csv_path.name)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
        await settle(app, pilot)
        summary = app.screen

        def summary_fits():
            assert 3 <= summary.query_one("#summary-counts").region.height <= 4  # a long path wraps once
            assert summary.query_one(MessageView).region.height >= 10

        summary_fits()
        await in_every_theme(app, pilot, summary_fits)
        await pilot.press("c", "enter")
        await settle(app, pilot)
        dialog = app.screen
        assert isinstance(dialog, ConflictScreen)

        def conflict_fits():
            frame = dialog.query_one("#conflict-frame").region
            assert frame.bottom <= 24 and frame.right <= 80

        conflict_fits()
        await in_every_theme(app, pilot, conflict_fits)
        await pilot.press("e")
        await pilot.pause()
        edit = dialog.query_one("#conflict-new-value", Input)

        def edit_fits():
            assert edit.has_focus and edit.region.bottom <= 23

        edit_fits()
        await in_every_theme(app, pilot, edit_fits)
