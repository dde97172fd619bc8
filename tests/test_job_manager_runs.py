"""The Job Manager lists runs of every kind (services/run_history.py), the run summary's header
is worded for the run's kind, and a run is undone from the Job Manager through the Undo dialog.

The runs are made for real before the console opens: an import (services/imports/engine.py on a
RunEngine), a batch update (services/batch.py) and a utility run (services/utilities). Pilot
tests at 80x24 press real keys and read the outcome back from the database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select

from patron_tui.runs import RunEngine
from patron_tui.services import batch
from patron_tui.services import utilities as U
from patron_tui.services.imports.engine import run_import
from patron_tui.services.jobs import job_runs
from patron_tui.services.run_history import (count_runs, counts_text, list_runs, run_counts, run_kinds,
                                             summary_lines)
from patron_tui.services.utilities import Selections
from patron_tui.store import Store
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.job_manager import JobManagerScreen
from patron_tui.ui.screens.job_summary import JobSummaryScreen
from patron_tui.ui.screens.jobs import JobsScreen
from patron_tui.ui.screens.undo_dialog import UndoScreen

from tests import batch_helpers
from tests.jobs_helpers import write_import
from tests.pilot import settle, wait_until

def patrons(store: Store) -> dict[str, dict]:
    conn = store.connect()
    try:
        return {r["barcode"]: dict(r) for r in conn.execute("SELECT * FROM patrons WHERE barcode IS NOT NULL")}
    finally:
        conn.close()


def make_runs(store: Store, tmp_path: Path) -> dict[str, int]:
    """An import, a batch update and a utility run, in that order: kind -> run id."""
    csv_path, props = write_import(tmp_path, ["D01,P01,Baker,Ann,HS", "D11,P11,Irwin,Kay,HS"])
    engine = RunEngine(store, pool_size=1)
    try:
        imp = engine.execute("import", "Import in.csv", lambda ctx: run_import(
            ctx, path=csv_path, properties_path=props, mode="incremental"))
        assert imp.status.value == "succeeded", imp.error
        bat = batch_helpers.run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=7),
                                      statement="site = HS", engine=engine)
        assert bat.status.value == "succeeded", bat.error
        util = U.start_utility(engine, store, "tester", "change-patron-status", Selections(statuses=["Active"]),
                               {"new_status": "Restricted"}, fingerprint=None)
        util.wait()
        assert util.status.value == "succeeded", util.error
    finally:
        engine.shutdown(cancel_running=False)
    return {"import": imp.run_id, "batch_update": bat.run_id, "utility": util.run_id}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return batch_helpers.build(tmp_path / "d.db")


# -- the listing service ----------------------------------------------------------------------------

def test_list_runs_every_kind_newest_first_filtered_and_paged(store, tmp_path):
    ids = make_runs(store, tmp_path)
    conn = store.connect()
    try:
        runs = list_runs(conn, limit=50)
        assert [r["id"] for r in runs] == sorted((r["id"] for r in runs), reverse=True)
        assert [r["kind"] for r in runs[:3]] == ["utility", "batch_update", "import"]
        assert {"import", "batch_update", "utility"} <= set(run_kinds(conn))
        assert count_runs(conn) == len(runs)
        util = next(r for r in runs if r["id"] == ids["utility"])
        assert util["operator"] == "tester" and util["status"] == "succeeded" and util["duration_s"] is not None
        assert dict(util["counts"])["changed"] == 11 and "11 changed" in util["counts_text"]
        bat = next(r for r in runs if r["id"] == ids["batch_update"])
        assert dict(bat["counts"])["patrons"] == 11 and dict(bat["counts"])["profiles created"] == 3
        imp = next(r for r in runs if r["id"] == ids["import"])
        assert imp["read"] == 2 and imp["added"] == 1 and dict(imp["counts"])["read"] == 2
        # one kind; two kinds; pages
        assert [r["id"] for r in list_runs(conn, kinds=["batch_update"])] == [ids["batch_update"]]
        assert count_runs(conn, kinds=["utility", "import"]) == 2
        page2 = list_runs(conn, limit=1, offset=1)
        assert [r["id"] for r in page2] == [runs[1]["id"]]
        assert list_runs(conn, limit=10, offset=len(runs)) == []
        # job_runs keeps listing scheduled-job runs only
        assert job_runs(conn) == []
    finally:
        conn.close()


def test_run_counts_and_summary_lines_follow_the_kind():
    batch_summary = {"patrons": 8, "profiles_updated": 5, "profiles_created": 2, "unchanged": 1, "errors": 0,
                     "queues_queued": 7, "subjects_added": 0, "medium": "DB", "statement": "site = HS",
                     "set_name": "HS [bold]patrons"}
    assert run_counts(batch_summary, "batch_update")[:3] == [("patrons", 8), ("profiles updated", 5),
                                                             ("profiles created", 2)]
    lines = summary_lines({"kind": "batch_update", "summary": batch_summary, "params": {}})
    assert lines[0] == "Patrons 8 · profiles updated 5 · profiles created 2 · unchanged 1 · errors 0"
    assert "queued 7" in lines[1] and lines[2] == "Query set HS [bold]patrons: site = HS"
    assert not any("Read" in line for line in lines)
    fill = summary_lines({"kind": "queue_fill", "summary": {"queues_filled": 7, "titles_added": 28}, "params": {}})
    assert fill[0].startswith("Queues filled 7 · titles added 28")
    util = summary_lines({"kind": "utility", "params": {},
                          "summary": {"utility": "change-patron-status", "changed": 3, "skipped": 1, "errors": 0,
                                      "selected": 4, "notes": []}})
    assert util[0] == "Changed 3 · skipped 1 · errors 0 · selected 4"
    undo = summary_lines({"kind": "undo", "params": {"undoes": 5}, "summary": {
        "undoes": 5, "on_conflict": "skip", "reinserted": 1, "deleted": 2, "restored": 3, "conflicts": 1,
        "refused": 0}})
    assert undo[0] == "Undid run 5: re-inserted 1 · deleted 2 · restored 3 rows"
    assert "Conflicts 1 (left as they were)" in undo[1]
    other = summary_lines({"kind": "journal_prune", "params": {}, "summary": {"retention_days": 400, "runs": 2}})
    assert other[0] == "retention days: 400 · runs: 2"
    assert run_counts({"x": 1, "name": "a"}, "mystery") == [("x", 1)]
    assert counts_text({"read": 3, "added": 2, "updated": 0, "skipped": 1}, "job") == "3 read · 2 added · 1 skipped"
    assert counts_text({"read": 0}, "import") == "0 read" and counts_text({}, "import") == ""


# -- the console ------------------------------------------------------------------------------------

def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def open_manager(app, pilot) -> JobManagerScreen:
    await settle(app, pilot)
    await pilot.press("4")
    await settle(app, pilot)
    assert isinstance(app.screen, JobsScreen)
    await pilot.press("m")
    await settle(app, pilot)
    assert isinstance(app.screen, JobManagerScreen)
    return app.screen


async def highlight(app, pilot, table: DataTable, run_id: int) -> None:
    rows = cells(table)
    index = next(i for i, r in enumerate(rows) if r[0] == str(run_id))
    await pilot.press("home", *["down"] * index)
    await pilot.pause()
    assert table.cursor_row == index


async def test_job_manager_lists_every_kind_filters_and_opens_a_kind_worded_summary(store, tmp_path):
    ids = make_runs(store, tmp_path)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        manager = await open_manager(app, pilot)
        table = manager.query_one("#manager-runs", DataTable)
        rows = cells(table)
        assert [r[0] for r in rows] == [str(ids["utility"]), str(ids["batch_update"]), str(ids["import"])]
        assert [r[1] for r in rows] == ["utility", "batch", "import"]
        assert rows[0][2] == "Change Patron Status" and rows[0][3] == "succeeded"
        assert rows[0][4].startswith("11 changed") and rows[0][7] == "tester"
        assert rows[1][4].startswith("11 patrons · 7 profiles updated")
        assert rows[2][4].startswith("2 read · 1 added")
        assert "3 runs of every kind" in str(manager.query_one("#manager-title").render())
        assert "Run %d · utility Change Patron Status" % ids["utility"] in str(
            manager.query_one("#manager-detail").render())
        # k cycles the kind: imports, batch updates, utilities, all again
        await pilot.press("k")
        await settle(app, pilot)
        assert [r[0] for r in cells(table)] == [str(ids["import"])]
        assert manager.query_one("#manager-kind", Select).value == "import"
        assert "1 run of kind Imports" in str(manager.query_one("#manager-title").render())
        await pilot.press("k")
        await settle(app, pilot)
        assert [r[0] for r in cells(table)] == [str(ids["batch_update"])]
        # Enter: the batch run's summary speaks of profiles, not of a file read
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, JobSummaryScreen) and app.screen.run_id == ids["batch_update"]
        head = str(app.screen.query_one("#summary-counts").render())
        assert "Patrons 11 · profiles updated 7 · profiles created 3 · unchanged 1 · errors 0" in head, head
        assert "Search statement site = HS" in head and "Read 0" not in head and "File ?" not in head
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, JobManagerScreen)
        await pilot.press("k", "k")
        await settle(app, pilot)
        assert manager.query_one("#manager-kind", Select).value == "*all*" and len(cells(table)) == 3


async def test_undo_a_utility_run_from_the_job_manager_restores_the_patrons(store, tmp_path):
    before = patrons(store)
    ids = make_runs(store, tmp_path)
    after_import_and_batch = {b: {k: v for k, v in p.items() if k not in ("status", "updated_at")}
                              for b, p in patrons(store).items()}
    assert {p["status"] for p in patrons(store).values()} == {"Restricted"}
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        manager = await open_manager(app, pilot)
        table = manager.query_one("#manager-runs", DataTable)
        await highlight(app, pilot, table, ids["utility"])
        await pilot.press("u")
        await wait_until(app, pilot, lambda: isinstance(app.screen, UndoScreen) and app.screen.plan is not None)
        dialog = app.screen
        plan_text = str(dialog.query_one("#undo-plan").render())
        assert "Restore: 11 rows of patrons" in plan_text and "No row was changed again" in plan_text, plan_text
        assert dialog.query_one("#undo-confirm", Input).has_focus
        await pilot.press(*"undo", "enter")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
        await settle(app, pilot)
        undo_id = app.screen.run_id
        assert undo_id > ids["utility"]
        head = str(app.screen.query_one("#summary-counts").render())
        assert f"Undid run {ids['utility']}: re-inserted 0 · deleted 0 · restored 11 rows" in head, head
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, JobManagerScreen)
        rows = cells(table)
        assert rows[0][0] == str(undo_id) and rows[0][1] == "undo" and rows[0][3] == "succeeded"
        assert rows[0][2] == f"Undo run {ids['utility']}: Change Patron Status"
        # the utility run now says who undid it
        await highlight(app, pilot, table, ids["utility"])
        assert f"undone by run {undo_id}" in str(manager.query_one("#manager-detail").render())
        # undoing it again is refused with the sentence
        await pilot.press("u")
        await wait_until(app, pilot, lambda: isinstance(app.screen, UndoScreen) and app.screen.plan is not None)
        assert f"already undone by run {undo_id}" in str(app.screen.query_one("#undo-plan").render())
        assert not app.screen.query_one("#undo-confirm").display
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, JobManagerScreen)
    now = patrons(store)
    assert {b: p["status"] for b, p in now.items()} == {b: before.get(b, {"status": "Active"})["status"]
                                                         for b in now}
    assert {b: {k: v for k, v in p.items() if k not in ("status", "updated_at")}
            for b, p in now.items()} == after_import_and_batch
    conn = store.connect()
    try:
        (undo,) = [r for r in list_runs(conn, kinds=["undo"])]
        assert undo["id"] == undo_id and undo["params"]["undoes"] == ids["utility"]
    finally:
        conn.close()


async def test_undo_with_a_conflict_lists_it_and_skip_leaves_the_later_change(store, tmp_path):
    ids = make_runs(store, tmp_path)
    # a later run changes P03 again
    engine = RunEngine(store, pool_size=1)
    try:
        def later(ctx):
            with ctx.writer() as w:
                pid = w.conn.execute("SELECT id FROM patrons WHERE barcode = 'P03'").fetchone()[0]
                w.update("patrons", pid, {"status": "Suspended"})
            return {"changed": 1}
        h = engine.execute("test", "Later change of P03", later)
        assert h.status.value == "succeeded", h.error
    finally:
        engine.shutdown(cancel_running=False)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        manager = await open_manager(app, pilot)
        table = manager.query_one("#manager-runs", DataTable)
        assert cells(table)[0][1] == "test" and cells(table)[0][4] == "1 changed"
        await highlight(app, pilot, table, ids["utility"])
        await pilot.press("enter")   # from the run's summary this time
        await settle(app, pilot)
        assert isinstance(app.screen, JobSummaryScreen) and app.screen.run_id == ids["utility"]
        assert "Changed 11 · skipped 0 · errors 0 · selected 11" in str(
            app.screen.query_one("#summary-counts").render())
        await pilot.press("u")
        await wait_until(app, pilot, lambda: isinstance(app.screen, UndoScreen) and app.screen.plan is not None)
        dialog = app.screen
        assert "1 row changed again by a later run" in str(dialog.query_one("#undo-plan").render())
        conflicts = dialog.query_one("#undo-conflicts", DataTable)
        (row,) = cells(conflicts)
        assert row[0].startswith("patrons ") and row[1].startswith("P03 Baker")
        assert row[2] == "status: Restricted -> Suspended" and row[3].startswith(f"run {h.run_id} Later change")
        choice = dialog.query_one("#undo-choice", Select)
        assert choice.has_focus and choice.value == "skip"
        await pilot.press("tab")
        assert dialog.query_one("#undo-confirm", Input).has_focus
        await pilot.press(*"oops", "enter")   # not the word: nothing happens
        await pilot.pause()
        assert isinstance(app.screen, UndoScreen) and dialog.handle is None
        await pilot.press(*"undo", "enter")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen)
                         and app.screen.run_id != ids["utility"])
        await settle(app, pilot)
        head = str(app.screen.query_one("#summary-counts").render())
        assert "restored 10 rows" in head and "Conflicts 1 (left as they were)" in head, head
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, JobSummaryScreen) and app.screen.run_id == ids["utility"]
        assert "Undone by run" in str(app.screen.query_one("#summary-counts").render())
    now = patrons(store)
    assert now["P03"]["status"] == "Suspended"
    assert {b: p["status"] for b, p in now.items() if b != "P03"} == {b: "Active" for b in now if b != "P03"}


async def test_pages_of_runs_n_and_p(store, monkeypatch):
    from patron_tui.ui.screens import job_manager

    engine = RunEngine(store, pool_size=1)
    try:
        made = [engine.execute("check" if i % 2 else "journal_prune", f"Run number {i}",
                               lambda ctx: {"runs": 1, "rows": 2}).run_id for i in range(5)]
    finally:
        engine.shutdown(cancel_running=False)
    monkeypatch.setattr(job_manager, "PAGE", 2)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        manager = await open_manager(app, pilot)
        table = manager.query_one("#manager-runs", DataTable)
        title = lambda: str(manager.query_one("#manager-title").render())   # noqa: E731
        assert [r[0] for r in cells(table)] == [str(made[4]), str(made[3])]
        assert "5 runs of every kind · 1–2, page 1 of 3 (n/p)" in title()
        await pilot.press("n", "n")
        await settle(app, pilot)
        assert [r[0] for r in cells(table)] == [str(made[0])] and "page 3 of 3" in title()
        await pilot.press("n")   # already the last page: said, stays
        await settle(app, pilot)
        assert "page 3 of 3" in title() and any("last page" in n.message for n in app._notifications)
        await pilot.press("p")
        await settle(app, pilot)
        assert [r[0] for r in cells(table)] == [str(made[2]), str(made[1])]
        assert cells(table)[0][1] == "prune" and cells(table)[0][4] == "1 runs pruned · 2 journal rows"
        # the kind filter starts again at the first page
        await pilot.press("k")
        await settle(app, pilot)
        assert manager.query_one("#manager-kind", Select).value == "journal_prune"
        assert [r[0] for r in cells(table)] == [str(made[4]), str(made[2])] and "page 1 of 2" in title()
