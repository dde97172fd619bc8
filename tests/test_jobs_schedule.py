"""The weekly schedule in local time across DST, due and missed runs, the scheduler loop on a
controllable clock, and two schedulers over one database starting a due job once."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from dateutil import tz

from patron_tui.runs import RunEngine
from patron_tui.services.jobs import (
    Job,
    Scheduler,
    due_runs,
    job_runs,
    next_run,
    parse_schedule,
    run_due,
    slots_between,
)
from patron_tui.services.jobs import lease

from tests.jobs_helpers import add_job, make_store, write_files

NY = tz.gettz("America/New_York")
UTC = timezone.utc
# 2026: clocks spring forward Sun 8 March 02:00 -> 03:00, fall back Sun 1 November 02:00 -> 01:00
WEEK = "mon-fri=incremental@02:30,sat-sun=full@02:30"


def job(schedule: str) -> Job:
    return Job(name="J", path="/x.csv", properties_path="/p", schedule=parse_schedule(schedule))


def test_next_run_picks_the_day_mode_and_time():
    j = job("mon=full@02:00,thu=incremental@18:45")
    when, mode = next_run(j, datetime(2026, 6, 1, 2, 0, tzinfo=NY), NY)   # Monday 02:00 exactly: next one
    assert (when.replace(tzinfo=None), mode) == (datetime(2026, 6, 4, 18, 45), "incremental")
    when, mode = next_run(j, datetime(2026, 6, 4, 19, 0, tzinfo=NY), NY)
    assert (when.replace(tzinfo=None), mode) == (datetime(2026, 6, 8, 2, 0), "full")
    assert next_run(job(""), datetime(2026, 6, 1, tzinfo=NY), NY) is None


def test_spring_forward_a_time_that_does_not_exist_runs_an_hour_later_once():
    j = job(WEEK)
    slots = slots_between(j, datetime(2026, 3, 7, 3, 0, tzinfo=NY), datetime(2026, 3, 10, tzinfo=NY), NY)
    assert [(w.astimezone(UTC), m) for w, m in slots] == [
        (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), "full"),           # 02:30 does not exist: 03:30 EDT
        (datetime(2026, 3, 9, 6, 30, tzinfo=UTC), "incremental"),    # 02:30 EDT
    ]
    assert slots[0][0].hour == 3 and slots[0][0].minute == 30


def test_fall_back_the_repeated_hour_runs_once():
    j = job("mon-sun=full@01:30")
    slots = slots_between(j, datetime(2026, 10, 31, 12, 0, tzinfo=NY), datetime(2026, 11, 2, tzinfo=NY), NY)
    assert [w.astimezone(UTC) for w, _ in slots] == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC)]   # 01:30 EDT
    # asked from between the two 01:30s, the second one is not a new run
    between = datetime(2026, 11, 1, 5, 45, tzinfo=UTC)
    assert next_run(j, between, NY)[0].astimezone(UTC) == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _set_updated(store, when: datetime) -> None:
    conn = store.connect()
    conn.execute("UPDATE jobs SET updated_at = ?", (when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),))
    conn.close()


def test_scheduler_loop_fires_the_right_mode_at_the_right_time_across_dst(tmp_path):
    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ["D1,B1,Able,Ann,HS"])
    add_job(store, path=csv_path, props=props, schedule=WEEK)
    _set_updated(store, datetime(2026, 3, 5, 23, 0, tzinfo=NY))   # saved the evening before
    clock = FakeClock(datetime(2026, 3, 6, 0, 0, tzinfo=NY))
    sched = Scheduler(store, interval=1800, clock=clock, sleep=clock.sleep, tz=NY,
                      runner_kw={"settle_seconds": 0})
    sched.run(max_passes=4 * 48)   # Friday to Monday night, a pass every half hour
    conn = store.connect()
    runs = sorted(job_runs(conn, "Students"), key=lambda r: r["id"])
    assert [(r["scheduled_for"], r["mode"], r["status"], r["started_by"]) for r in runs] == [
        ("2026-03-06T07:30:00.000000Z", "incremental", "succeeded", "scheduler"),
        ("2026-03-07T07:30:00.000000Z", "full", "succeeded", "scheduler"),
        ("2026-03-08T07:30:00.000000Z", "full", "succeeded", "scheduler"),     # 03:30 EDT
        ("2026-03-09T06:30:00.000000Z", "incremental", "succeeded", "scheduler"),
    ]


def test_missed_runs_run_once_if_young_else_are_recorded_missed(tmp_path):
    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ["D1,B1,Able,Ann,HS"])
    add_job(store, path=csv_path, props=props, schedule="mon-sun=full@02:00")
    _set_updated(store, datetime(2026, 6, 1, 12, tzinfo=NY))
    # the server was down from Monday noon; it comes back Thursday 05:00: Tue and Wed are
    # missed, Thursday 02:00 is 3 hours old (younger than 6 h): it runs, once
    back = datetime(2026, 6, 4, 5, 0, tzinfo=NY)
    conn = store.connect()
    plan = due_runs(conn, back, tz=NY)
    assert [[(d.slot.day, d.action) for d in items] for items in plan] == [[(2, "missed"), (3, "missed"), (4, "run")]]
    results = run_due(store, back, tz=NY, runner_kw={"settle_seconds": 0})
    assert [(r["action"], r["status"]) for r in results] == [("missed", "missed"), ("missed", "missed"),
                                                            ("run", "succeeded")]
    assert run_due(store, back + timedelta(minutes=5), tz=NY) == []      # nothing twice
    statuses = [r["status"] for r in sorted(job_runs(conn), key=lambda r: r["id"])]
    assert statuses == ["missed", "missed", "succeeded"]
    assert "missed: scheduled for 2026-06-02T02:00" in job_runs(conn)[-1]["error"]
    # down again until Friday 09:00: Friday 02:00 is 7 hours old, older than the 6 h limit
    results = run_due(store, datetime(2026, 6, 5, 9, 0, tzinfo=NY), tz=NY)
    assert [(r["action"], r["status"]) for r in results] == [("missed", "missed")]
    # a larger limit from the settings table lets the next one run
    conn.execute("INSERT INTO settings (key, value) VALUES ('jobs_max_missed_age_minutes', '600')")
    plan = due_runs(conn, datetime(2026, 6, 6, 9, 0, tzinfo=NY), tz=NY)
    assert [d.action for items in plan for d in items] == ["run"]


def test_a_job_running_now_is_not_started_again_by_the_scheduler(tmp_path):
    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ["D1,B1,Able,Ann,HS"])
    j = add_job(store, path=csv_path, props=props, schedule="mon-sun=full@02:00")
    _set_updated(store, datetime(2026, 6, 1, 12, tzinfo=NY))
    conn = store.connect()
    assert lease.acquire(conn, j.id, "someone-else:1")   # e.g. an operator's run on another host
    now = datetime(2026, 6, 2, 2, 10, tzinfo=NY)
    assert run_due(store, now, tz=NY) == []
    lease.release(conn, j.id, "someone-else:1")
    assert [r["status"] for r in run_due(store, now + timedelta(minutes=30), tz=NY,
                                         runner_kw={"settle_seconds": 0})] == ["succeeded"]


def test_two_schedulers_started_together_run_a_due_job_once(tmp_path):
    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ["D1,B1,Able,Ann,HS", "D2,B2,Baker,Bob,HS"])
    add_job(store, path=csv_path, props=props, schedule="mon-sun=full@02:00")
    _set_updated(store, datetime(2026, 6, 1, 12, tzinfo=NY))
    now = datetime(2026, 6, 2, 2, 1, tzinfo=NY)
    engines = [RunEngine(store, pool_size=1), RunEngine(store, pool_size=1)]
    barrier = threading.Barrier(2)
    results: list[list] = [[], []]

    def scheduler(i: int) -> None:
        barrier.wait()
        for _ in range(3):   # several passes each, interleaved
            results[i] += run_due(store, now, engine=engines[i], tz=NY, runner_kw={"settle_seconds": 0})

    threads = [threading.Thread(target=scheduler, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for e in engines:
            e.shutdown(cancel_running=False)
    started = results[0] + results[1]
    assert [r["status"] for r in started] == ["succeeded"]
    conn = store.connect()
    assert [r["status"] for r in job_runs(conn)] == ["succeeded"]
    assert conn.execute("SELECT count(*) FROM patrons WHERE site='HS'").fetchone()[0] == 2


def test_two_run_due_processes_started_together_run_a_due_job_once(tmp_path):
    import json
    import os
    import subprocess
    import sys

    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ["D1,B1,Able,Ann,HS"])
    add_job(store, path=csv_path, props=props, schedule="mon-sun=full@00:00,")
    _set_updated(store, datetime.now(UTC) - timedelta(hours=30))   # one or two midnights since
    env = {**os.environ, "PATRON_TUI_SETTLE_SECONDS": "0", "PATRON_TUI_WORKERS": "1"}
    cmd = [sys.executable, "-m", "patron_tui", "run-due", "--db", str(store.path), "--json",
           "--max-missed-age", str(30 * 60)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [r for out, _ in outs for r in json.loads(out)]
    assert [r["status"] for r in results if r["action"] == "run"] == ["succeeded"]
    conn = store.connect()
    assert [r["status"] for r in job_runs(conn) if r["status"] != "missed"] == ["succeeded"]
