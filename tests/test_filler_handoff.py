"""Issue 14, item 1: who fills the service queues of a batch update.

The batch hands its queues to a filler explicitly (queue_fill.hand_off): the one it starts, or
the filler already at work (started by the pass, by another batch, by another process), which
then takes its requests; either way the batch's summary names it: `filler_run_id` of a batch
run by a scheduler pass, the CLI's output of a foreground `batch-update --fill-queues`, the
Batch screen's result and filler line. The losing ordering of the old code (a filler was alive
when the batch finished, so `start_filler` returned None and the summary named nobody: KeyError
'filler_run_id' under load, nothing in the CLI or on the screen) is forced here with Events.
"""

from __future__ import annotations

import asyncio
import json
import threading

from patron_tui.cli import main
from patron_tui.runs import RunEngine
from patron_tui.services import batch
from patron_tui.services.jobs.scheduler import run_due
from patron_tui.services.queue_fill import FILL_KIND, fill_queues
from patron_tui.store import current_login

from tests.batch_helpers import add_catalog, build
from tests.conftest import run_row

WAIT = 60   # the bound on every wait, never a sleep


def _filler_at_work(engine: RunEngine):
    """A filler someone else started, at work (running) but held before it looks for requests:
    (its handle, the Event that lets it go on)."""
    at_work, release = threading.Event(), threading.Event()

    def filler_held_at_work(ctx):
        at_work.set()
        assert release.wait(WAIT)
        return fill_queues(ctx)

    handle = engine.start(FILL_KIND, "Fill service queues", filler_held_at_work, started_by="scheduler")
    assert at_work.wait(WAIT)
    return handle, release


def _filled_by(store, batch_run_id: int) -> list[tuple]:
    """(filler run id, requests) of a batch's queue fill requests."""
    conn = store.connect()
    try:
        return [tuple(r) for r in conn.execute("SELECT fill_run_id, count(*) FROM queue_fill_requests WHERE run_id = ?"
                                               " GROUP BY fill_run_id", (batch_run_id,))]
    finally:
        conn.close()


def _queue(store, statement: str, **update) -> int:
    conn = store.connect()
    try:
        return batch.queue_batch_update(conn, store.operator, batch.target(conn, statement=statement),
                                        batch.BatchUpdate(medium="DB", **update))
    finally:
        conn.close()


def test_a_queued_batch_names_the_filler_already_at_work_which_fills_its_queues(tmp_path):
    store = build(tmp_path / "district.db", operator="clerk")
    add_catalog(store)
    engine = RunEngine(store, pool_size=1, max_runs=2)
    release = threading.Event()
    try:
        # a filler someone else started is at work (it has not yet looked for requests)
        other, release = _filler_at_work(engine)
        run_id = _queue(store, "grade = 6", add_subjects=["SCI"], fill_service_queues=True, queue_length=2)
        results = run_due(store, engine=engine, wait=True)   # one pass: runs the queued batch to its end
        assert [(r["run_id"], r["status"]) for r in results] == [(run_id, "succeeded")]
        run = run_row(store, run_id)
        assert run["summary"]["queues_queued"] == 4
        assert run["summary"]["filler_run_id"] == other.run_id   # handed to the filler at work
        release.set()
        assert other.wait(WAIT).value == "succeeded"
    finally:
        release.set()
        engine.shutdown(cancel_running=False)
    assert _filled_by(store, run_id) == [(other.run_id, 4)]   # and that filler did fill them
    assert run_row(store, other.run_id)["summary"]["queues_filled"] == 4


def test_a_queued_batch_that_finds_no_filler_starts_one_and_names_it(tmp_path):
    store = build(tmp_path / "district.db", operator="clerk")
    add_catalog(store)
    engine = RunEngine(store, pool_size=1, max_runs=2)
    try:
        run_id = _queue(store, "grade = 6", add_subjects=["SCI"], fill_service_queues=True, queue_length=2)
        results = run_due(store, engine=engine, wait=True)
        assert [(r["run_id"], r["status"]) for r in results] == [(run_id, "succeeded")]
        filler_id = run_row(store, run_id)["summary"]["filler_run_id"]
        assert engine._handles[filler_id].wait(WAIT).value == "succeeded"
    finally:
        engine.shutdown(cancel_running=False)
    assert _filled_by(store, run_id) == [(filler_id, 4)]


def test_a_foreground_cli_batch_names_the_filler_already_at_work_which_fills_its_queues(tmp_path, capsys):
    store = build(tmp_path / "district.db", operator=current_login())   # the CLI's operator is the login
    add_catalog(store)
    elsewhere = RunEngine(store, pool_size=1)   # another process's filler, as the CLI sees it
    release = threading.Event()
    try:
        other, release = _filler_at_work(elsewhere)
        code = main(["batch-update", "--db", str(store.path), "--query", "grade = 6", "--medium", "DB",
                     "--add-subject", "SCI", "--fill-queues", "--queue-length", "2"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert f"4 queues queued (queue filler run {other.run_id})" in out
        assert f"run {other.run_id}: queue filler already at work" in out
        release.set()
        assert other.wait(WAIT).value == "succeeded"
    finally:
        release.set()
        elsewhere.shutdown(cancel_running=False)
    conn = store.connect()
    try:
        batch_run = conn.execute("SELECT max(id) FROM runs WHERE kind = ?", (batch.BATCH_KIND,)).fetchone()[0]
    finally:
        conn.close()
    assert _filled_by(store, batch_run) == [(other.run_id, 4)]


def test_a_foreground_cli_batch_names_the_filler_it_starts(tmp_path, capsys):
    store = build(tmp_path / "district.db", operator=current_login())
    add_catalog(store)
    code = main(["batch-update", "--db", str(store.path), "--query", "grade = 6", "--medium", "DB",
                 "--add-subject", "SCI", "--fill-queues", "--queue-length", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    filler = data["filler"]
    assert (filler["started"], filler["status"], filler["summary"]["queues_filled"]) == (True, "succeeded", 4)
    assert _filled_by(store, data["run_id"]) == [(filler["run_id"], 4)]


async def test_the_batch_screen_names_and_follows_the_filler_already_at_work(tmp_path):
    from patron_tui.ui.app import make_app
    from patron_tui.ui.screens.batch import BatchReportScreen, BatchScreen

    from tests.pilot import settle, wait_until

    store = build(tmp_path / "district.db", operator="clerk")
    add_catalog(store)
    app = make_app(store.path, operator="clerk")
    release = threading.Event()
    async with app.run_test(size=(100, 30)) as pilot:
        try:
            await settle(app, pilot)
            # a filler of this console at work, held before it looks for requests
            other, release = await asyncio.to_thread(_filler_at_work, app.engine)
            await pilot.press("3")
            await wait_until(app, pilot, lambda: isinstance(app.screen, BatchScreen))
            screen = app.screen
            conn = store.connect()
            try:
                tgt = batch.target(conn, statement="grade = 6")
            finally:
                conn.close()
            handle = batch.start_batch_update(app.engine, app.store, "clerk", tgt, batch.BatchUpdate(
                medium="DB", add_subjects=["SCI"], fill_service_queues=True, queue_length=2))
            assert (await asyncio.to_thread(handle.wait, WAIT)).value == "succeeded"
            screen.finish(handle)   # what the screen does when the run it follows has ended
            await wait_until(app, pilot, lambda: isinstance(app.screen, BatchReportScreen))
            counts = str(app.screen.query_one("#report-counts").render())
            assert f"4 service queues to fill (queue filler run {other.run_id})." in counts
            line = screen.query_one("#batch-filler")
            followed = str(line.render())   # followed: its progress line (the screen's poll rewrites it)
            assert followed.startswith("Filling service queues: 0 of "), followed
            assert followed.endswith(f"(run {other.run_id}, messages in the log pane)"), followed
            release.set()
            await wait_until(app, pilot, lambda: "Service queues filled" in str(line.render()),
                             why=lambda: str(line.render()))
            assert f"4 queues, 8 titles added (run {other.run_id})" in str(line.render())
        finally:
            release.set()
    assert _filled_by(store, handle.run_id) == [(other.run_id, 4)]
