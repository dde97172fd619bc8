"""The service-queue filler (services/queue_fill.py): the right titles (medium, subjects, not in
the history, not queued), up to the queue length, in committed chunks; a filler killed with
SIGKILL resumes and fills every queue exactly once; the scheduler picks up waiting fills."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services import batch, queue_fill
from patron_tui.services.jobs.scheduler import Scheduler
from patron_tui.store import ChangesetWriter, Store, utc_now
from patron_tui.store.identity import host_name

from .batch_helpers import add_catalog, build, run_batch
from .conftest import allow_login


def _queue(conn, barcode: str, medium: str = "DB") -> list[tuple[str, int]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT t.title, q.position FROM service_queue q JOIN titles t ON t.id = q.title_id"
        " JOIN patron_profiles pp ON pp.id = q.profile_id JOIN patrons p ON p.id = pp.patron_id"
        " WHERE p.barcode = ? AND pp.medium = ? ORDER BY q.position", (barcode, medium))]


def _fill(store: Store):
    engine = RunEngine(store, pool_size=1)
    try:
        handle = queue_fill.start_filler(engine, store, store.operator)
        if handle is not None:
            handle.wait(60)
        return handle
    finally:
        engine.shutdown()


@pytest.fixture
def store(tmp_path):
    store = build(tmp_path / "district.db")
    add_catalog(store)
    # DB titles: 1 2 3 5 6 7 9 10 11; MYS odd, BIO even, SCI 3 6 9; LP titles: 4 8 12
    conn = store.connect()
    ids = {r[0]: r[1] for r in conn.execute("SELECT barcode, id FROM patrons WHERE barcode IS NOT NULL")}
    prof = {r[0]: r[1] for r in conn.execute(
        "SELECT p.barcode, pp.id FROM patron_profiles pp JOIN patrons p ON p.id = pp.patron_id WHERE pp.medium = 'DB'")}
    title = {r[0]: r[1] for r in conn.execute("SELECT title, id FROM titles")}
    now = utc_now()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        # P01 (MYS, queue 4): had "title 3" (other case), has "Title 5" out, "Title 1" queued
        w.insert("patron_history", {"patron_id": ids["P01"], "kind": "return", "occurred_at": now,
                                    "title": "title 3"})
        w.insert("checkouts", {"patron_id": ids["P01"], "item_barcode": "I1", "title": "Title 5",
                               "checked_out_at": now, "due_at": now})
        w.insert("service_queue", {"profile_id": prof["P01"], "title_id": title["Title 1"], "position": 1,
                                   "added_at": now})
        # P04 (BIO, queue 2): full already
        for pos, t in enumerate(("Title 3", "Title 5"), 1):
            w.insert("service_queue", {"profile_id": prof["P04"], "title_id": title[t], "position": pos,
                                       "added_at": now})
        # P03 (MYS, queue 5) also likes SCI
        w.insert("profile_subjects", {"profile_id": prof["P03"], "subject": "SCI"})
        # P10's LP profile likes BIO
        lp = conn.execute("SELECT id FROM patron_profiles WHERE medium = 'LP'").fetchone()[0]
        w.insert("profile_subjects", {"profile_id": lp, "subject": "BIO"})
    conn.close()
    return store


def test_the_filler_fills_each_queue_with_the_right_titles(store):
    h = run_batch(store, batch.BatchUpdate(medium="DB", fill_service_queues=True),
                  statement="barcode in (P01, P02, P03, P04)")
    assert h.summary["queues_queued"] == 4
    h = run_batch(store, batch.BatchUpdate(medium="LP", fill_service_queues=True), statement="barcode = P10")
    conn = store.connect()
    assert queue_fill.pending(conn) == 5
    handle = _fill(store)
    assert handle.status.value == "succeeded", handle.error
    assert handle.summary["queues_filled"] == 5
    # P01: not 1 (queued), 3 (history, any case), 5 (checked out); up to 4 with the one queued
    assert _queue(conn, "P01") == [("Title 1", 1), ("Title 7", 2), ("Title 9", 3), ("Title 11", 4)]
    assert _queue(conn, "P02") == [("Title 2", 1), ("Title 6", 2), ("Title 10", 3)]          # BIO, queue 3
    assert _queue(conn, "P03") == [("Title 1", 1), ("Title 3", 2), ("Title 5", 3), ("Title 6", 4),
                                   ("Title 7", 5)]                                            # MYS or SCI
    assert _queue(conn, "P04") == [("Title 3", 1), ("Title 5", 2)]                            # was full
    assert _queue(conn, "P10", "LP") == [("Title 4", 1), ("Title 8", 2), ("Title 12", 3)]
    assert _queue(conn, "P05") == []                                                          # not asked
    assert queue_fill.pending(conn) == 0
    done = conn.execute("SELECT count(*), sum(added) FROM queue_fill_requests WHERE fill_run_id = ?",
                        (handle.run_id,)).fetchone()
    assert tuple(done) == (5, 3 + 3 + 5 + 0 + 3)
    # written through the changeset writer: each queue row journalled as an insert of this run
    journalled = conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ? AND table_name ="
                              " 'service_queue' AND op = 'insert'", (handle.run_id,)).fetchone()[0]
    assert journalled == 14
    infos = [r[0] for r in conn.execute("SELECT text FROM run_messages WHERE run_id = ? AND code = 'queue_chunk'",
                                        (handle.run_id,))]
    assert infos == ["Filled 5 service queues with 14 titles; 0 waiting."]


def test_a_queue_is_never_filled_twice(store):
    run_batch(store, batch.BatchUpdate(medium="DB", fill_service_queues=True), statement="barcode = P02")
    assert _fill(store).summary["titles_added"] == 3
    assert _fill(store) is None   # nothing waiting: no run
    conn = store.connect()
    # asked again (another batch): the queue is full, so nothing is added
    run_batch(store, batch.BatchUpdate(medium="DB", fill_service_queues=True), statement="barcode = P02")
    assert queue_fill.pending(conn) == 1
    assert _fill(store).summary["titles_added"] == 0
    assert _queue(conn, "P02") == [("Title 2", 1), ("Title 6", 2), ("Title 10", 3)]
    # a longer queue is topped up after the last position
    run_batch(store, batch.BatchUpdate(medium="DB", fill_service_queues=True, queue_length=4,
                                       add_subjects=["MYS"]), statement="barcode = P02")
    _fill(store)
    assert _queue(conn, "P02") == [("Title 2", 1), ("Title 6", 2), ("Title 10", 3), ("Title 1", 4)]


def test_a_filler_alive_elsewhere_is_not_doubled_and_a_dead_one_is_replaced(store):
    run_batch(store, batch.BatchUpdate(medium="DB", fill_service_queues=True), statement="barcode = P02")
    conn = store.connect()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with conn:
        cur = conn.execute(
            "INSERT INTO runs (kind, title, status, operator, owner_host, owner_pid, created_at)"
            " VALUES ('queue_fill', 'Fill service queues', 'running', 'tester', ?, ?, ?)",
            (host_name(), os.getpid(), utc_now()))
    assert queue_fill.live_filler(conn) == cur.lastrowid
    assert _fill(store) is None and queue_fill.pending(conn) == 1
    conn.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", (dead.pid, cur.lastrowid))
    assert queue_fill.live_filler(conn) is None
    assert _fill(store).status.value == "succeeded" and queue_fill.pending(conn) == 0


def test_the_scheduler_picks_up_waiting_fills(store):
    run_batch(store, batch.BatchUpdate(medium="DB", fill_service_queues=True), statement="grade = 5")
    conn = store.connect()
    assert queue_fill.pending(conn) == 6
    engine = RunEngine(store, pool_size=1)
    try:
        sched = Scheduler(store, engine=engine)
        assert sched.run_once() == []   # no jobs; the filler is not a job slot
        handle = engine.latest()
        assert handle is not None and handle.kind == "queue_fill"
        handle.wait(60)
        sched.run_once()                # nothing waiting: no second filler
        assert engine.latest() is handle
    finally:
        engine.shutdown()
    assert queue_fill.pending(conn) == 0
    run = conn.execute("SELECT status, started_by FROM runs WHERE id = ?", (handle.run_id,)).fetchone()
    assert tuple(run) == ("succeeded", "scheduler")


# -- killed with SIGKILL ------------------------------------------------------------------------


def _big_district(path, profiles: int) -> Store:
    store = Store.create(path, operator="tester")
    conn = store.connect()
    now = utc_now()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert_many("patrons", ({"barcode": f"B{i:05d}", "site": "UNION", "last_name": f"L{i}",
                                   "created_at": now, "updated_at": now} for i in range(profiles)))
        first = conn.execute("SELECT min(id) FROM patrons WHERE barcode IS NOT NULL").fetchone()[0]
        w.insert_many("patron_profiles", ({"patron_id": first + i, "medium": "DB", "queue_length": 3 + i % 5}
                                          for i in range(profiles)))
        p0 = conn.execute("SELECT min(id) FROM patron_profiles").fetchone()[0]
        subjects = ("MYS", "BIO", "HIS")
        w.insert_many("profile_subjects", ({"profile_id": p0 + i, "subject": subjects[i % 3]}
                                           for i in range(profiles)))
        w.insert_many("titles", ({"code": f"T{i}", "title": f"Title {i}"} for i in range(40)))
        t0 = conn.execute("SELECT min(id) FROM titles").fetchone()[0]
        w.insert_many("title_media", ({"title_id": t0 + i, "medium": "DB"} for i in range(40)))
        w.insert_many("title_subjects", ({"title_id": t0 + i, "subject": subjects[i % 3]} for i in range(40)))
        w.insert_many("patron_history", ({"patron_id": first + i, "kind": "return", "occurred_at": now,
                                          "title": f"Title {i % 40}"} for i in range(0, profiles, 2)))
    conn.close()
    return store


def _queues(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT profile_id, title_id, position FROM service_queue ORDER BY 1, 2").fetchall()
    finally:
        conn.close()


def test_a_killed_filler_resumes_and_fills_every_queue_exactly_once(tmp_path):
    n = 1200
    store = _big_district(tmp_path / "district.db", n)
    allow_login(store)   # the CLI child fills as the login: it needs "may use batch tools"
    assert run_batch(store, batch.BatchUpdate(medium="DB", fill_service_queues=True)).summary["queues_queued"] == n
    # the same database, filled by a filler that is never interrupted
    reference = tmp_path / "reference.db"
    src, dst = sqlite3.connect(store.path), sqlite3.connect(reference)
    src.backup(dst)
    src.close(), dst.close()
    _fill(Store(reference, operator="tester"))

    # killed by itself just after its third chunk's COMMIT (testpoints: no clock, no polling)
    env = {**os.environ, "PATRON_TUI_FILL_CHUNK": "100", "PATRON_TUI_KILL_AT": "committed:3"}
    cmd = [sys.executable, "-m", "patron_tui", "fill-queues", "--db", str(store.path)]
    killed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    watch = sqlite3.connect(store.path, timeout=15)
    done = watch.execute("SELECT count(*) FROM queue_fill_requests WHERE done_at IS NOT NULL").fetchone()[0]
    killed_run = watch.execute("SELECT id FROM runs WHERE kind = 'queue_fill'").fetchone()[0]
    assert done == 300, done    # killed just after its third chunk committed, before the end
    assert done % 100 == 0      # whole chunks only: the chunk being written was rolled back
    partial = _queues(store.path)
    assert {p for p, _, _ in partial} <= {r[0] for r in watch.execute(
        "SELECT profile_id FROM queue_fill_requests WHERE done_at IS NOT NULL")}

    again = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert watch.execute("SELECT count(*) FROM queue_fill_requests WHERE done_at IS NULL").fetchone()[0] == 0
    final = _queues(store.path)
    assert final == _queues(reference)   # the same queues as a filler that was never killed
    assert len(final) == len(set((p, t) for p, t, _ in final))
    assert len(final) == len(set((p, pos) for p, _, pos in final))
    by_run = dict(watch.execute("SELECT fill_run_id, count(*) FROM queue_fill_requests GROUP BY fill_run_id"))
    assert by_run[killed_run] == done and sum(by_run.values()) == n
    status = watch.execute("SELECT status FROM runs WHERE id = ?", (killed_run,)).fetchone()[0]
    assert status == "interrupted"
    watch.close()
