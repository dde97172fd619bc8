"""Issue 14, item 1: who fills the service queues of a batch update run by a scheduler pass.

The batch run hands its queues to a filler explicitly: the one it starts, or the filler already
at work (started by the pass, by another batch, by another process), which then takes its
requests; either way the batch's summary names it (`filler_run_id`). The losing ordering of the
old code (a filler was alive when the batch finished, so `start_filler` returned None and the
summary named nobody: KeyError 'filler_run_id' under load) is forced here with Events.
"""

from __future__ import annotations

import threading

from patron_tui.runs import RunEngine
from patron_tui.services import batch
from patron_tui.services.jobs.scheduler import run_due
from patron_tui.services.queue_fill import FILL_KIND, fill_queues
from patron_tui.store import runlog

from tests.batch_helpers import add_catalog, build

WAIT = 60   # the bound on every wait, never a sleep


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
    at_work, release = threading.Event(), threading.Event()

    def filler_held_at_work(ctx):
        at_work.set()
        assert release.wait(WAIT)
        return fill_queues(ctx)

    try:
        # a filler someone else started is at work (it has not yet looked for requests)
        other = engine.start(FILL_KIND, "Fill service queues", filler_held_at_work, started_by="scheduler")
        assert at_work.wait(WAIT)
        run_id = _queue(store, "grade = 6", add_subjects=["SCI"], fill_service_queues=True, queue_length=2)
        results = run_due(store, engine=engine, wait=True)   # one pass: runs the queued batch to its end
        assert [(r["run_id"], r["status"]) for r in results] == [(run_id, "succeeded")]
        conn = store.connect()
        try:
            run = runlog.get_run(conn, run_id)
        finally:
            conn.close()
        assert run["summary"]["queues_queued"] == 4
        assert run["summary"]["filler_run_id"] == other.run_id   # handed to the filler at work
        release.set()
        assert other.wait(WAIT).value == "succeeded"
    finally:
        release.set()
        engine.shutdown(cancel_running=False)
    conn = store.connect()
    try:
        fills = conn.execute("SELECT fill_run_id, count(*) FROM queue_fill_requests WHERE run_id = ?"
                             " GROUP BY fill_run_id", (run_id,)).fetchall()
        filler = runlog.get_run(conn, other.run_id)
    finally:
        conn.close()
    assert [tuple(r) for r in fills] == [(other.run_id, 4)]   # and that filler did fill them
    assert filler["summary"]["queues_filled"] == 4


def test_a_queued_batch_that_finds_no_filler_starts_one_and_names_it(tmp_path):
    store = build(tmp_path / "district.db", operator="clerk")
    add_catalog(store)
    engine = RunEngine(store, pool_size=1, max_runs=2)
    try:
        run_id = _queue(store, "grade = 6", add_subjects=["SCI"], fill_service_queues=True, queue_length=2)
        results = run_due(store, engine=engine, wait=True)
        assert [(r["run_id"], r["status"]) for r in results] == [(run_id, "succeeded")]
        conn = store.connect()
        try:
            filler_id = runlog.get_run(conn, run_id)["summary"]["filler_run_id"]
        finally:
            conn.close()
        assert engine._handles[filler_id].wait(WAIT).value == "succeeded"
    finally:
        engine.shutdown(cancel_running=False)
    conn = store.connect()
    try:
        assert conn.execute("SELECT count(*) FROM queue_fill_requests WHERE run_id = ? AND fill_run_id = ?",
                            (run_id, filler_id)).fetchone()[0] == 4
    finally:
        conn.close()
