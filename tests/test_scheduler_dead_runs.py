"""Issue 14, item 5: a run whose owner process died while a scheduler keeps running is marked
interrupted by that scheduler's next pass (not only when some process starts an engine), and a
run of a live process is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from patron_tui.services.jobs.scheduler import Scheduler
from patron_tui.store import Store, runlog

from tests.conftest import run_row


def _dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True, timeout=60)
    return int(done.stdout)


def _running_run(store: Store, pid: int, title: str) -> int:
    conn = store.connect()
    try:
        run_id = runlog.create_run(conn, kind="import", title=title, operator="tester")
        runlog.mark_running(conn, run_id, pid=pid)
        return run_id
    finally:
        conn.close()


def test_every_scheduler_pass_marks_the_runs_whose_owner_died(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "district.db", operator="tester")
    sched = Scheduler(store, interval=0)
    try:
        sched.run_once()   # the scheduler is up (its engine started before the runs below)
        dead = _running_run(store, _dead_pid(), "killed while the scheduler ran")
        alive = _running_run(store, os.getpid(), "still running here")
        sched.run_once()   # the next pass
        got = {rid: run_row(store, rid) for rid in (dead, alive)}
    finally:
        sched.engine.shutdown(cancel_running=False)
    assert got[dead]["status"] == "interrupted"
    assert got[dead]["error"] == "the process running it stopped" and got[dead]["finished_at"]
    assert got[alive]["status"] == "running"


def test_a_dead_run_that_committed_part_of_its_work_says_what_was_committed(tmp_path: Path) -> None:
    """A run of several transactions that died between two (RunContext.if_stopped): the pass marks
    it with the sentence the run left, and keeps its summary."""
    store = Store.create(tmp_path / "district.db", operator="tester")
    sched = Scheduler(store, interval=0)
    try:
        sched.run_once()
        run_id = _running_run(store, _dead_pid(), "a job")
        conn = store.connect()
        try:
            with store.writer(conn, run_id) as w:   # as RunContext.writer records a non-final commit
                runlog.record_outcome(w.conn, run_id, summary={"added": 3},
                                      if_stopped="its import was committed, then the process stopped")
        finally:
            conn.close()
        sched.run_once()
        run = run_row(store, run_id)
    finally:
        sched.engine.shutdown(cancel_running=False)
    assert run["status"] == "interrupted" and run["summary"]["added"] == 3
    assert run["error"] == "its import was committed, then the process stopped"
