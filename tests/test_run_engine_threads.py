"""Issue 14, item 3: the run engine is called from many threads at once (screens start runs
from `@work(thread=True)` workers, the scheduler adopts queued runs): every call writes on a
connection of its own thread, so concurrent starts all succeed and every run row is there."""

from __future__ import annotations

import threading
from pathlib import Path

from patron_tui.models import RunStatus
from patron_tui.runs import RunEngine
from patron_tui.store import Store, runlog

THREADS = 4
STARTS = 25          # per thread
WAIT = 30            # the bound on every wait, never a sleep


def run_threads(engine: RunEngine, threads: list[threading.Thread], failures: list, handles: list) -> None:
    """Run the threads that call the engine to their end, then check none failed and every run
    they started succeeded; the engine is shut down either way."""
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT * STARTS)
        assert not failures, [repr(f) for f in failures[:3]]
        for h in handles:
            assert h.wait(WAIT) is RunStatus.SUCCEEDED
    finally:
        engine.shutdown()


def kind_test_runs(store: Store) -> list:
    """(title, status) of the runs of kind 'test', in the order they were made."""
    conn = store.connect()
    try:
        return [tuple(r) for r in conn.execute("SELECT title, status FROM runs WHERE kind = 'test' ORDER BY id")]
    finally:
        conn.close()


def test_runs_started_from_many_threads_at_once_all_start_and_all_rows_are_there(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "district.db", operator="tester")
    engine = RunEngine(store, pool_size=1, max_runs=2)
    barrier = threading.Barrier(THREADS)
    handles: list = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def starter(n: int) -> None:
        for i in range(STARTS):
            try:
                barrier.wait(WAIT)   # every round, the threads call start together
                h = engine.start("test", f"t{n}-{i}", lambda ctx: {"ok": 1})
                with lock:
                    handles.append(h)
            except BaseException as exc:   # noqa: BLE001 - collected and asserted below
                with lock:
                    failures.append(exc)
                barrier.abort()
                return

    run_threads(engine, [threading.Thread(target=starter, args=(n,)) for n in range(THREADS)], failures, handles)
    assert len(handles) == THREADS * STARTS
    rows = kind_test_runs(store)
    assert sorted(title for title, _ in rows) == sorted(f"t{n}-{i}" for n in range(THREADS) for i in range(STARTS))
    assert {status for _, status in rows} == {"succeeded"}


def test_adopt_and_interrupt_from_other_threads_while_runs_start(tmp_path: Path) -> None:
    """adopt (a queued row executed here) and start race on the engine from two threads."""
    store = Store.create(tmp_path / "district.db", operator="tester")
    conn = store.connect()
    try:
        queued = [runlog.queue_background(conn, kind="test", title=f"q{i}", operator="tester")
                  for i in range(20)]
    finally:
        conn.close()
    engine = RunEngine(store, pool_size=1, max_runs=2)
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []
    handles: list = []

    def adopter() -> None:
        try:
            barrier.wait(WAIT)
            for rid in queued:
                handles.append(engine.adopt(rid, "test", "q", lambda ctx: {"ok": 1}, operator="tester"))
        except BaseException as exc:   # noqa: BLE001
            failures.append(exc)

    def starter() -> None:
        try:
            barrier.wait(WAIT)
            for i in range(20):
                handles.append(engine.start("test", f"s{i}", lambda ctx: {"ok": 1}))
        except BaseException as exc:   # noqa: BLE001
            failures.append(exc)

    run_threads(engine, [threading.Thread(target=adopter), threading.Thread(target=starter)], failures, handles)
    assert [status for _, status in kind_test_runs(store)] == ["succeeded"] * 40


class _Looked(dict):
    """The engine's handle table, telling when wait_idle has looked at it."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.looked = threading.Event()

    def values(self):
        self.looked.set()
        return super().values()


def test_wait_idle_waits_for_a_run_that_a_run_started_after_it_looked(tmp_path: Path) -> None:
    """Issue 14 item 1's class of bug: run A starts run B (a queued batch its queue filler) after
    wait_idle took its look at the runs. wait_idle never says idle while B is still running."""
    store = Store.create(tmp_path / "district.db", operator="tester")
    engine = RunEngine(store, pool_size=1, max_runs=2)
    engine._handles = _Looked(engine._handles)
    release = threading.Event()
    started: list = []

    def b(ctx):
        assert release.wait(WAIT)
        return {"b": 1}

    def a(ctx):
        assert engine._handles.looked.wait(WAIT)   # wait_idle has looked: only then is B started
        started.append(engine.start("test", "B", b))
        return {"a": 1}

    seen: dict = {}

    def waiter() -> None:
        # B cannot end before this returns (release is set after it), so an idle here would be
        # a lie; with B still running, the bounded wait runs out and says so
        seen["idle"] = engine.wait_idle(1.0)
        seen["b_finished"] = started[0].finished if started else None
        release.set()

    try:
        engine._handles.looked.clear()
        first = engine.start("test", "A", a)
        engine._handles.looked.clear()   # start() itself does not look at values(); be exact anyway
        w = threading.Thread(target=waiter)
        w.start()
        w.join(WAIT)
        assert first.wait(WAIT) is RunStatus.SUCCEEDED
        assert started and started[0].wait(WAIT) is RunStatus.SUCCEEDED
        assert seen == {"idle": False, "b_finished": False}
        assert engine.wait_idle(WAIT) is True   # and once B has ended, idle
    finally:
        release.set()
        engine.shutdown()


def test_active_runs_while_another_thread_starts_a_run(tmp_path: Path) -> None:
    """active_runs (the queue filler's "is one at work?") walks the run table while another
    thread starts a run: forced here by a handle whose `finished` is read in the middle of the
    walk, at which moment a run starts. The walk sees a consistent table, never
    "dictionary changed size during iteration"."""
    from patron_tui.runs import RunHandle

    store = Store.create(tmp_path / "district.db", operator="tester")
    engine = RunEngine(store, pool_size=1, max_runs=2)
    started: list = []

    class Meanwhile(RunHandle):
        @property
        def finished(self) -> bool:   # read by active_runs during its walk
            if not started:
                started.append(engine.start("test", "started meanwhile", lambda ctx: {"ok": 1}))
            return True

    try:
        engine._handles[-1] = Meanwhile(-1, threading.Event(), kind="test")
        engine.active_runs()
        assert started and started[0].wait(WAIT) is RunStatus.SUCCEEDED
    finally:
        engine._handles.pop(-1, None)
        engine.shutdown()
