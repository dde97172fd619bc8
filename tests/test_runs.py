"""The run engine: one event stream, persisted messages, run rows through their
statuses, rollback on failure and cancel, the bounded pool, dead runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from patron_tui.models import EventKind, RunStatus
from patron_tui.runs import RunCancelled, RunEngine, RunFailed, WorkerPool
from patron_tui.store import Store, runlog, utc_now
from patron_tui.store import db as store_db

from tests.conftest import run_row

WAIT = 10  # seconds: the bound on every wait below, never a sleep


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "district.db", operator="tester")


@pytest.fixture
def engine(store: Store):
    eng = RunEngine(store, pool_size=2)
    yield eng
    eng.shutdown()


def run_messages(store: Store, run_id: int, levels=None) -> list[dict]:
    conn = store.connect()
    try:
        return runlog.messages(conn, run_id, levels)
    finally:
        conn.close()


def count(store: Store, sql: str) -> int:
    conn = store.connect()
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def poll(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def chatty(ctx) -> dict:
    ctx.info("starting", code="start")
    ctx.progress(1, 3, force=True)
    ctx.warning("Lee, Ann (barcode B1): grade 13 is unknown", code="unknown_grade", line=7,
                barcode="B1", patron_id=42)
    ctx.skipped("line 9 has no barcode", code="no_barcode", line=9)
    ctx.error("line 10 is broken", code="broken", line=10, barcode="B10")
    ctx.progress(3, 3)
    return {"answer": 42}


# -- events and messages -----------------------------------------------------------------


def test_events_reach_every_subscriber_in_order(engine):
    seen_a, seen_b = [], []
    engine.subscribe(seen_a.append)
    engine.subscribe(seen_b.append)
    broken = engine.subscribe(lambda e: 1 / 0)  # a broken subscriber breaks nothing
    handle = engine.execute("test", "Chatty", chatty)
    broken()
    assert handle.status is RunStatus.SUCCEEDED
    kinds = [e.kind for e in seen_a]
    assert kinds == [EventKind.INFO, EventKind.PROGRESS, EventKind.WARNING, EventKind.SKIPPED,
                     EventKind.ERROR, EventKind.PROGRESS, EventKind.DONE]
    assert seen_a == seen_b
    assert all(e.run_id == handle.run_id for e in seen_a)
    assert (seen_a[1].done, seen_a[1].total, seen_a[5].done, seen_a[5].total) == (1, 3, 3, 3)
    assert seen_a[-1].status is RunStatus.SUCCEEDED


def test_unsubscribed_callback_gets_nothing_more(engine):
    seen = []
    unsubscribe = engine.subscribe(seen.append)
    engine.execute("test", "First", lambda ctx: ctx.info("one"))
    unsubscribe()
    engine.execute("test", "Second", lambda ctx: ctx.info("two"))
    assert [e.text for e in seen if e.kind is EventKind.INFO] == ["one"]


def test_messages_are_persisted_with_level_code_line_barcode(engine, store):
    handle = engine.execute("test", "Chatty", chatty)
    msgs = run_messages(store, handle.run_id)
    got = [(m["level"], m["code"], m["line"], m["barcode"], m["patron_id"]) for m in msgs]
    assert got == [
        ("info", "start", None, None, None),
        ("warning", "unknown_grade", 7, "B1", 42),
        ("skipped", "no_barcode", 9, None, None),
        ("error", "broken", 10, "B10", None),
    ]
    assert msgs[1]["text"] == "Lee, Ann (barcode B1): grade 13 is unknown"
    assert [m["text"] for m in run_messages(store, handle.run_id, levels=["error"])] == [
        "line 10 is broken"]


def test_run_row_goes_queued_running_succeeded(store):
    engine = RunEngine(store, max_runs=1)  # one slot: a second run waits, queued
    release = threading.Event()
    seen_inside: list[dict] = []
    try:
        first = engine.start("test", "Blocker", lambda ctx: release.wait(WAIT) and None)
        second = engine.start("test", "Second", lambda ctx: seen_inside.append(run_row(store, ctx.run_id)) or {"n": 3})
        assert poll(lambda: run_row(store, first.run_id)["status"] == "running")
        row = run_row(store, second.run_id)
        assert row["status"] == "queued" and row["started_at"] is None and row["operator"] == "tester"
        release.set()
        assert second.wait(WAIT) is RunStatus.SUCCEEDED
        assert first.wait(WAIT) is RunStatus.SUCCEEDED
    finally:
        release.set()
        engine.shutdown()
    [inside] = seen_inside
    assert inside["status"] == "running"
    assert (inside["owner_host"], inside["owner_pid"]) == (socket.gethostname(), os.getpid())
    final = run_row(store, second.run_id)
    assert final["status"] == "succeeded" and final["error"] is None
    assert final["started_at"] and final["finished_at"] and final["finished_at"] >= final["started_at"]
    assert final["summary"]["n"] == 3 and final["summary"]["messages"]["error"] == 0


def test_failing_run_is_failed_and_its_writes_rolled_back(engine, store):
    sites_before = count(store, "SELECT count(*) FROM sites")

    def fails(ctx):
        with ctx.writer() as w:
            w.insert("sites", {"code": "HS", "name": "High School"})
            w.insert("sites", {"code": "ELM", "name": "Elm"})
            ctx.warning("said before the crash", code="early")
            raise ValueError("boom")

    handle = engine.execute("test", "Fails", fails)
    assert handle.status is RunStatus.FAILED and handle.error == "ValueError: boom"
    row = run_row(store, handle.run_id)
    assert (row["status"], row["error"]) == ("failed", "ValueError: boom")
    assert count(store, "SELECT count(*) FROM sites") == sites_before
    assert count(store, f"SELECT count(*) FROM change_journal WHERE run_id = {handle.run_id}") == 0
    # the messages live on: they are not part of the data transaction
    codes = [(m["level"], m["code"]) for m in run_messages(store, handle.run_id)]
    assert codes == [("warning", "early"), ("error", "crash")]


def test_a_run_failing_on_a_full_disk_stores_the_sentence_as_its_error(store, monkeypatch):
    """A bad day is the run's error as its one sentence (what the Job Manager and the run summary
    show), not sqlite's text; the CLI still reads its kind (exit code 4) from what is stored."""
    from patron_tui.cli_common import EXIT_CODES, failure_code
    from patron_tui.store.trouble import explain_text, sentence

    monkeypatch.setenv("PATRON_TUI_MAX_PAGES", "1")   # never more pages than it has: a full disk
    engine = RunEngine(store, pool_size=1)
    try:
        def fills_the_disk(ctx):
            with ctx.writer() as w:
                for i in range(200):
                    w.insert("sites", {"code": f"S{i}", "name": "x" * 400})

        handle = engine.execute("test", "Fills the disk", fills_the_disk)
    finally:
        engine.shutdown()
    full = sentence("full", store.path)
    assert handle.status is RunStatus.FAILED and handle.error == full
    row = run_row(store, handle.run_id)
    assert (row["status"], row["error"]) == ("failed", full)
    assert [(m["level"], m["code"], m["text"]) for m in run_messages(store, handle.run_id)] == [
        ("error", "full", full)]
    assert count(store, "SELECT count(*) FROM sites WHERE code LIKE 'S%'") == 0
    assert explain_text(row["error"]).kind == "full"
    assert failure_code(row["error"]) == EXIT_CODES["full"] == 4


def test_run_failed_reason_is_the_error_text(engine, store):
    def refuses(ctx):
        raise RunFailed("the import file is empty")

    handle = engine.execute("test", "Refuses", refuses)
    row = run_row(store, handle.run_id)
    assert (row["status"], row["error"]) == ("failed", "the import file is empty")
    assert [(m["code"], m["text"]) for m in run_messages(store, handle.run_id)] == [
        ("failed", "the import file is empty")]


def test_cancelled_run_is_cancelled_and_rolled_back(engine, store):
    started = threading.Event()

    def slow_writer(ctx):
        with ctx.writer() as w:
            w.insert("sites", {"code": "HS", "name": "High School"})
            started.set()
            ctx.cancel_event.wait(WAIT)
            ctx.check_cancelled()
            w.insert("sites", {"code": "ELM", "name": "Elm"})

    handle = engine.start("test", "Slow", slow_writer)
    assert started.wait(WAIT)
    engine.cancel(handle.run_id)
    assert handle.wait(WAIT) is RunStatus.CANCELLED
    row = run_row(store, handle.run_id)
    assert row["status"] == "cancelled"
    assert count(store, "SELECT count(*) FROM sites WHERE code IN ('HS', 'ELM')") == 0
    assert [m["code"] for m in run_messages(store, handle.run_id)] == ["cancelled"]


def test_messages_survive_another_connection_holding_the_write_lock(store, monkeypatch):
    """The persister waits for the lock and retries; no message is lost."""
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_MS", 50)  # give up fast, then retry
    attempts = []
    real_add = runlog.add_messages

    def counting_add(conn, rows):
        attempts.append(len(rows))
        return real_add(conn, rows)

    monkeypatch.setattr(runlog, "add_messages", counting_add)
    engine = RunEngine(store)
    go, emitted = threading.Event(), threading.Event()

    def speaks_under_lock(ctx):
        assert go.wait(WAIT)
        for i in range(3):
            ctx.warning(f"message {i}", code="m", barcode=f"B{i}")
        emitted.set()

    other = store.connect()
    try:
        handle = engine.start("test", "Under lock", speaks_under_lock)
        assert poll(lambda: run_row(store, handle.run_id)["status"] == "running")
        other.execute("BEGIN IMMEDIATE")
        go.set()
        assert emitted.wait(WAIT)
        assert poll(lambda: len(attempts) >= 2)  # at least one attempt failed on the lock
        assert run_messages(store, handle.run_id) == []
        other.execute("COMMIT")
        assert handle.wait(WAIT) is RunStatus.SUCCEEDED
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
        engine.shutdown()
    msgs = run_messages(store, handle.run_id)
    assert [(m["text"], m["barcode"]) for m in msgs] == [(f"message {i}", f"B{i}") for i in range(3)]


# -- dead runs ------------------------------------------------------------------------------


def test_running_run_with_dead_owner_is_interrupted_at_next_start(store):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    conn = store.connect()
    try:
        with store_db.write_transaction(conn):
            def add(host, pid):
                return conn.execute(
                    "INSERT INTO runs (kind, title, status, operator, owner_host, owner_pid, created_at,"
                    " started_at) VALUES ('import', 'Nightly', 'running', 'tester', ?, ?, ?, ?)",
                    (host, pid, utc_now(), utc_now())).lastrowid
            dead = add(socket.gethostname(), gone.pid)
            alive = add(socket.gethostname(), os.getpid())
            elsewhere = add("some-other-host", gone.pid)
    finally:
        conn.close()
    engine = RunEngine(store)
    try:
        assert engine.interrupted_on_start == [dead]
    finally:
        engine.shutdown()
    row = run_row(store, dead)
    assert row["status"] == "interrupted" and row["finished_at"] and row["error"]
    assert run_row(store, alive)["status"] == "running"
    assert run_row(store, elsewhere)["status"] == "running"


# -- the worker pool ---------------------------------------------------------------------


def test_pool_map_keeps_input_order_when_work_finishes_in_reverse():
    pool = WorkerPool(4)
    done = [threading.Event() for _ in range(4)]
    finished: list[int] = []

    def work(i: int) -> int:
        if i < 3:
            assert done[i + 1].wait(WAIT)  # item i finishes after item i + 1
        finished.append(i)
        done[i].set()
        return i * 10

    try:
        assert list(pool.map(work, range(4))) == [0, 10, 20, 30]
        assert finished == [3, 2, 1, 0]
        assert list(pool.map(lambda x: x * x, range(1000))) == [x * x for x in range(1000)]
    finally:
        pool.shutdown()


def test_pool_map_bounds_work_in_flight():
    pool = WorkerPool(2)
    pulled = 0
    running = 0
    max_running = 0
    lock = threading.Lock()

    def items():
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield i

    def work(i: int) -> int:
        nonlocal running, max_running
        with lock:
            running += 1
            max_running = max(max_running, running)
        with lock:
            running -= 1
        return i

    try:
        for consumed, result in enumerate(pool.map(work, items())):
            assert result == consumed
            assert pulled <= consumed + 2 * pool.size  # never more than 2 * size ahead
    finally:
        pool.shutdown()
    assert pulled == 200 and max_running <= pool.size


def test_pool_map_stops_submitting_when_cancelled():
    pool = WorkerPool(2)
    cancel = threading.Event()
    pulled = []

    def items():
        for i in range(10_000):
            pulled.append(i)
            yield i

    results = []
    try:
        with pytest.raises(RunCancelled):
            for r in pool.map(lambda x: x, items(), cancel=cancel):
                results.append(r)
                if len(results) == 3:
                    cancel.set()
    finally:
        pool.shutdown()
    assert results == [0, 1, 2]
    assert len(pulled) <= 3 + 2 * pool.size + 1


def test_a_run_that_cannot_get_the_write_lock_fails_with_a_sentence_and_changes_nothing(tmp_path, monkeypatch):
    import patron_tui.store.db as db_mod
    from patron_tui.store.db import connect

    monkeypatch.setattr(db_mod, "BUSY_TIMEOUT_MS", 100)
    store = Store.create(tmp_path / "busy.db", operator="tester")
    engine = RunEngine(store)

    def write(ctx):
        other = connect(store.path)          # a second process writing, as far as SQLite can tell
        other.execute("BEGIN IMMEDIATE")
        try:
            with ctx.writer() as w:
                w.insert("sites", {"code": "NEW", "name": "New"})
        finally:
            other.execute("ROLLBACK")
            other.close()

    try:
        handle = engine.execute("test", "Busy", write)
    finally:
        engine.shutdown()
    assert handle.status.value == "failed"
    assert handle.error.startswith("the database is busy") and "nothing was changed" in handle.error
    conn = store.connect()
    assert conn.execute("SELECT count(*) FROM sites WHERE code = 'NEW'").fetchone()[0] == 0
    (code,) = conn.execute("SELECT code FROM run_messages WHERE run_id = ? AND level = 'error'",
                           (handle.run_id,)).fetchone()
    conn.close()
    assert code == "busy"
