"""The scheduler: starts each job's runs at their scheduled times.

Two ways to run it, both over the same one-pass function `run_due`:
- `patron-tui scheduler`: a long-running `Scheduler` loop (a systemd service), one pass
  every `interval` seconds;
- `patron-tui run-due`: a single pass (a crontab line every few minutes).

Any number of schedulers may run over one database: a scheduled slot is claimed in one
`BEGIN IMMEDIATE` transaction (`lease.claim_slot`), so exactly one of them starts it, and
the run itself holds the job's lease (`runner.run_job`), so a job never runs twice at once.
A slot missed while no scheduler was running runs once, on the next pass, if it is younger
than the maximum missed age (option, else the `jobs_max_missed_age_minutes` setting, else 6
hours); otherwise it is recorded as a run with status 'missed'.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from patron_tui.services.jobs import lease
from patron_tui.services.jobs.runner import job_params, job_title, run_job
from patron_tui.services.jobs.schedule import DueRun, due_runs, next_run
from patron_tui.services.jobs.store import JOB_KIND, list_jobs
from patron_tui.store import Store
from patron_tui.store import runlog

log = logging.getLogger("patron_tui.scheduler")

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


def _record_missed(conn, store: Store, due: DueRun, now: datetime) -> int:
    job = due.job
    age = now - due.slot
    run_id = runlog.create_run(
        conn, kind=JOB_KIND, title=job_title(job, due.mode), operator=store.operator,
        params=job_params(job, due.mode, scheduled_for=due.slot_utc), job_id=job.id, mode=due.mode,
        started_by="scheduler",
    )
    reason = (f"missed: scheduled for {due.slot.isoformat(timespec='minutes')} "
              f"and no scheduler ran until {age.total_seconds() / 3600:.1f} h later")
    runlog.finish_run(conn, run_id, status="missed", summary={"job": job.name, "mode": due.mode}, error=reason)
    return run_id


def run_due(store: Store, now: datetime | None = None, *, clock: Clock = system_clock,
            engine: Any = None, max_missed_age: timedelta | None = None, tz: tzinfo | None = None,
            wait: bool = True, runner_kw: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One scheduler pass at `now` (default: `clock()`): record missed slots, start due runs.

    `engine`: a RunEngine to start runs on (default: one made for this pass and shut down
    after it, which implies waiting). `wait`: wait for the runs started. Returns one dict
    per acted-on slot: job, slot (UTC text), mode, action (run/missed), run_id, status."""
    now = now or clock()
    own_engine = engine is None
    if own_engine:
        from patron_tui.runs import RunEngine

        engine = RunEngine(store)
    results: list[dict[str, Any]] = []
    handles = []
    conn = store.connect()
    try:
        # runs whose owner process is gone (killed, crashed) read 'interrupted' now, not at the next
        # start of some process: a long-running scheduler's engine marked them only when it started
        # (an engine made for this pass has just done so when it started)
        dead = engine.interrupted_on_start if own_engine else runlog.mark_dead_runs_interrupted(conn)
        if dead:
            log.warning("runs %s: their process stopped; marked interrupted", ", ".join(map(str, dead)))
        for items in due_runs(conn, now, max_missed_age, tz):
            latest = items[-1]
            if not lease.claim_slot(conn, latest.job.id, latest.slot_utc, now=now.astimezone(timezone.utc)):
                continue   # another scheduler has it, or the job is running: next pass decides
            for due in items:
                base = {"job": due.job.name, "slot": due.slot_utc, "mode": due.mode, "action": due.action}
                if due.action == "missed":
                    run_id = _record_missed(conn, store, due, now)
                    log.warning("job %s: %s slot %s missed (run %s)", due.job.name, due.mode, due.slot_utc, run_id)
                    results.append({**base, "run_id": run_id, "status": "missed"})
                    continue
                name, mode, kw = due.job.name, due.mode, dict(runner_kw or {})
                handle = engine.start(
                    JOB_KIND, job_title(due.job, mode),
                    lambda ctx, name=name, mode=mode, kw=kw: run_job(ctx, name, mode, **kw),
                    params=job_params(due.job, mode, scheduled_for=due.slot_utc),
                    job_id=due.job.id, mode=mode, started_by="scheduler",
                )
                log.info("job %s: %s run %s started for slot %s", name, mode, handle.run_id, due.slot_utc)
                results.append({**base, "run_id": handle.run_id, "status": "started"})
                handles.append((results[-1], handle))
        # service queues a batch profile update asked for, left unfilled (console closed, filler killed)
        from patron_tui.services.queue_fill import start_filler

        filler = start_filler(engine, store, store.operator, started_by="scheduler")
        if filler is not None:
            log.info("service-queue filler run %s started", filler.run_id)
        # runs handed to the scheduler ("run in background", services/background.py)
        from patron_tui.services.background import pick_up

        for handle in pick_up(engine, store):
            results.append({"job": handle.title, "slot": "", "mode": handle.kind, "action": "background",
                            "run_id": handle.run_id, "status": "started"})
            handles.append((results[-1], handle))
        if wait or own_engine:
            for result, handle in handles:
                handle.wait()
                result["status"] = handle.status.value
                if handle.error:
                    result["error"] = handle.error
    finally:
        conn.close()
        if own_engine:
            engine.shutdown(cancel_running=False)
    return results


def upcoming(store: Store, now: datetime | None = None, tz: tzinfo | None = None) -> list[tuple[str, datetime, str]]:
    """(job name, next run, mode) for every job with a schedule, soonest first."""
    now = now or system_clock()
    conn = store.connect()
    try:
        out = []
        for job in list_jobs(conn):
            nxt = next_run(job, now, tz)
            if nxt is not None:
                out.append((job.name, nxt[0], nxt[1]))
    finally:
        conn.close()
    return sorted(out, key=lambda t: t[1].astimezone(timezone.utc))


class Scheduler:
    """The long-running loop: a pass, then sleep until the next pass, until `stop()`.

    `clock` and `sleep` are injectable (tests drive both); runs start on the scheduler's
    own RunEngine and go on while the next passes happen."""

    def __init__(self, store: Store, *, interval: float = 30.0, clock: Clock = system_clock,
                 sleep: Callable[[float], Any] | None = None, max_missed_age: timedelta | None = None,
                 tz: tzinfo | None = None, engine: Any = None, runner_kw: dict[str, Any] | None = None,
                 on_pass: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.store = store
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()
        self.sleep = sleep or (lambda seconds: self._stop.wait(seconds))
        self.max_missed_age = max_missed_age
        self.tz = tz
        self.runner_kw = runner_kw
        self.on_pass = on_pass
        self._engine = engine
        self._own_engine = engine is None
        self.passes = 0

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from patron_tui.runs import RunEngine

            self._engine = RunEngine(self.store)
        return self._engine

    def run_once(self) -> list[dict[str, Any]]:
        results = run_due(self.store, self.clock(), engine=self.engine, max_missed_age=self.max_missed_age,
                          tz=self.tz, wait=False, runner_kw=self.runner_kw)
        self.passes += 1
        if self.on_pass is not None:
            self.on_pass(results)
        return results

    def run(self, *, max_passes: int | None = None) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception:   # a bad pass (a locked database, a bad row) must not end the service
                    log.exception("scheduler pass failed; trying again in %s s", self.interval)
                    self.passes += 1
                if max_passes is not None and self.passes >= max_passes:
                    break
                self.sleep(self.interval)
        finally:
            if self._own_engine and self._engine is not None:
                self._engine.shutdown(cancel_running=False)
                self._engine = None

    def stop(self) -> None:
        self._stop.set()
