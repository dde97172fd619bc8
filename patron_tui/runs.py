"""The run engine: a worker pool, one event stream, cancellation, persistence.

A run is a row in `runs` before it starts. `RunEngine.start` creates the row,
then executes the run's function on a run slot (its own thread) with a
`RunContext`. The function reports through the context (`info`, `warning`,
`skipped`, `error`, `progress`); every event goes to every subscriber, and
every message is persisted to `run_messages` by one persister thread with
its own connection, so messages survive a data transaction that rolls back.

Work inside a run that can go in parallel goes through `ctx.pool.map`, the
engine's own bounded pool (Textual does not cap its workers; we do).
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from patron_tui import testpoints
from patron_tui.models import EventKind, RunEvent, RunStatus
from patron_tui.store import ChangesetWriter, Store
from patron_tui.store.db import DatabaseBusy
from patron_tui.store import runlog
from patron_tui.store.trouble import explain

T = TypeVar("T")
R = TypeVar("R")

Subscriber = Callable[[RunEvent], None]
RunFunction = Callable[["RunContext"], dict[str, Any] | None]


class RunCancelled(Exception):
    """Raised inside a run when its cancel event is set."""


class RunFailed(Exception):
    """A run's own clean failure: the message is shown as the reason."""


# -- the worker pool --------------------------------------------------------------


class WorkerPool:
    """A bounded pool for the parallel part of runs.

    `map` keeps at most `2 * size` chunks in flight (constant memory on any
    input size), yields results in input order and stops submitting as soon as
    the cancel event is set.
    """

    def __init__(self, size: int | None = None) -> None:
        if size is None and os.environ.get("PATRON_TUI_WORKERS", "").isdigit():
            size = int(os.environ["PATRON_TUI_WORKERS"])
        self.size = max(1, size or os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="patron-worker")

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[R]:
        window: list[Future[R]] = []
        limit = 2 * self.size
        it = iter(items)
        try:
            for item in it:
                if cancel is not None and cancel.is_set():
                    raise RunCancelled()
                window.append(self._executor.submit(fn, item))
                if len(window) >= limit:
                    yield window.pop(0).result()
            while window:
                if cancel is not None and cancel.is_set():
                    raise RunCancelled()
                yield window.pop(0).result()
        finally:
            for fut in window:
                fut.cancel()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


# -- persistence of messages ----------------------------------------------------------


_MSG_LINGER = 0.05   # seconds a message may wait in the engine's buffer


_stamp_cache: list[tuple[int, str]] = [(0, "")]


def _utc_stamp(ts: float) -> str:
    """`ts` (time.time()) as the ISO UTC text utc_now() writes, cheaply: the seconds part is
    formatted once per second (the cache is one tuple, swapped whole)."""
    sec = int(ts)
    cached = _stamp_cache[0]
    if cached[0] != sec:
        cached = _stamp_cache[0] = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{int((ts - sec) * 1_000_000):06d}Z"


class _Persister(threading.Thread):
    """Writes run messages and progress on its own connection, in batches.

    A data transaction may hold the write lock for a while; message batches
    then wait and retry (they must not be lost), progress updates are dropped
    for a newer one.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(name="patron-run-persister", daemon=True)
        self.store = store
        self.q: queue.Queue[Any] = queue.Queue()
        self._stop_flag = False
        self.drain: Callable[[], list[tuple]] | None = None   # the engine's buffered messages
        self.buffered: Callable[[], bool] = lambda: False

    def run(self) -> None:
        conn = self.store.connect()
        try:
            while True:
                # idle, it sleeps until something is put; with messages buffered, it comes back
                # for them within _MSG_LINGER (the engine wakes it when its buffer starts filling)
                try:
                    items = [self.q.get(timeout=_MSG_LINGER if self.buffered() else None)]
                except queue.Empty:
                    items = []
                while len(items) < 2000:
                    try:
                        items.append(self.q.get_nowait())
                    except queue.Empty:
                        break
                batch = self.drain() if self.drain is not None else []
                if batch:
                    # before any barrier taken above: it was put after these were published
                    items.insert(0, ("msgs", batch))
                if items:
                    self._write(conn, items)
                if any(i is None for i in items):
                    return
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, items: list[Any]) -> None:
        msgs = [row for i in items if isinstance(i, tuple) and i[0] == "msgs" for row in i[1]]
        progress: dict[int, tuple[int, int | None]] = {}
        barriers = []
        for i in items:
            if isinstance(i, tuple) and i[0] == "progress":
                progress[i[1]] = (i[2], i[3])
            elif isinstance(i, threading.Event):
                barriers.append(i)
        while msgs:
            try:
                runlog.add_messages(conn, msgs)
                break
            except DatabaseBusy:
                time.sleep(0.05)   # a data transaction holds the lock: these wait, they are not lost
        for run_id, (done, total) in progress.items():
            try:
                runlog.set_progress(conn, run_id, done, total)
            except (sqlite3.OperationalError, DatabaseBusy):
                pass  # best effort: a newer progress will follow
        for b in barriers:
            b.set()

    def put_messages(self, rows: list[tuple]) -> None:
        self.q.put(("msgs", rows))

    def put_progress(self, run_id: int, done: int, total: int | None) -> None:
        self.q.put(("progress", run_id, done, total))

    def flush(self, timeout: float | None = None) -> bool:
        barrier = threading.Event()
        self.q.put(barrier)
        return barrier.wait(timeout)

    def stop(self) -> None:
        self.q.put(None)
        self.join()


# -- the run context -------------------------------------------------------------------


@dataclass
class RunContext:
    """What a run's function gets: reporting, cancellation, pool, writer."""

    engine: "RunEngine"
    run_id: int
    operator: str
    params: dict[str, Any]
    cancel_event: threading.Event
    summary: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"info": 0, "warning": 0, "skipped": 0, "error": 0}
    )
    # set while the run has more to do after its next commit (a job's import before its rules, a
    # filler's chunk): that commit is not the outcome, and this is the run's error if it dies then
    if_stopped: str | None = None
    committed: bool = False           # one of its transactions committed (data may have changed)
    outcome_committed: bool = False   # its last transaction committed: the run is 'succeeded'
    _conn: sqlite3.Connection | None = None
    _last_progress: float = 0.0

    @property
    def pool(self) -> WorkerPool:
        return self.engine.pool

    @property
    def store(self) -> Store:
        return self.engine.store

    @property
    def conn(self) -> sqlite3.Connection:
        """This run's own connection (runs execute on one thread)."""
        if self._conn is None:
            self._conn = self.engine.store.connect()
        return self._conn

    def writer(self, *, outcome: bool = True) -> ChangesetWriter:
        """The run's write transaction, with the run's outcome in it (DESIGN.md: a run killed at
        any moment is either not applied and interrupted, or applied and succeeded).

        Just before COMMIT the run's row is written on the same connection
        (runlog.record_outcome): with `if_stopped` None, status 'succeeded', `summary` and the
        message counts; with `if_stopped` set (more work follows this commit), the summary so
        far and that sentence. So a run function puts its summary in `ctx.summary` before it
        leaves its `with ctx.writer()` block. `outcome=False`: housekeeping that is not the
        run's outcome (a job pruning its old runs) leaves the run's row alone."""
        return _RunWriter(self, self.conn, operator=self.operator, run_id=self.run_id,
                          before_commit=self._record_outcome if outcome else None)

    def commit_outcome(self) -> None:
        """The work after the run's last data commit is done: commit its outcome ('succeeded',
        the summary) alone, in a transaction of its own."""
        self.if_stopped = None
        with self.writer():
            pass

    def _record_outcome(self, w: ChangesetWriter) -> None:
        final = self.if_stopped is None
        runlog.record_outcome(w.conn, self.run_id, summary={**self.summary, "messages": dict(self.counts)},
                              if_stopped=self.if_stopped)
        w.final_outcome = final   # type: ignore[attr-defined]
        testpoints.reach("commit")

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise RunCancelled()

    # reporting
    def _message(self, kind: EventKind, text: str, **kw: Any) -> None:
        self.counts[kind.value] += 1
        self.engine._publish(RunEvent(self.run_id, kind, text, **kw))

    def messages(self, kind: EventKind, rows: list[tuple], *, conn: sqlite3.Connection | None = None) -> None:
        """Many messages of one kind at once (an import's per-record lines): rows of
        (text, code, line, barcode, patron_id).

        With `conn` (the run's own connection, inside its write transaction) the rows are
        written there and then: messages that describe the transaction's changes ("added ...")
        commit or roll back with them, and never pile up in memory waiting for the write lock
        the transaction holds."""
        if rows:
            self.counts[kind.value] += len(rows)
            self.engine._publish_many(self.run_id, kind, rows, conn=conn)

    def info(self, text: str, **kw: Any) -> None:
        self._message(EventKind.INFO, text, **kw)

    def warning(self, text: str, **kw: Any) -> None:
        self._message(EventKind.WARNING, text, **kw)

    def skipped(self, text: str, **kw: Any) -> None:
        self._message(EventKind.SKIPPED, text, **kw)

    def error(self, text: str, **kw: Any) -> None:
        self._message(EventKind.ERROR, text, **kw)

    def progress(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        """Report progress; subscribers see it at most ~20 times a second."""
        now = time.monotonic()
        if not force and now - self._last_progress < 0.05 and (total is None or done < total):
            return
        self._last_progress = now
        self.engine._publish(RunEvent(self.run_id, EventKind.PROGRESS, done=done, total=total))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _RunWriter(ChangesetWriter):
    """A run's changeset writer: after its COMMIT, the run knows what is committed."""

    def __init__(self, ctx: RunContext, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._ctx = ctx
        self.final_outcome = False

    def __exit__(self, exc_type, exc, tb) -> None:
        super().__exit__(exc_type, exc, tb)
        if self.committed:
            self._ctx.committed = True
            if self.final_outcome:
                self._ctx.outcome_committed = True
            testpoints.reach("committed")


# -- handles and the engine ---------------------------------------------------------------


class RunHandle:
    """A run this process executes: its status and latest progress, to follow it."""

    def __init__(self, run_id: int, cancel_event: threading.Event, *, kind: str = "", title: str = "",
                 operator: str | None = None) -> None:
        self.run_id = run_id
        self.kind = kind
        self.title = title
        self.operator = operator   # who the run writes as (None: the store's operator)
        self.interrupted: str | None = None   # why it was stopped, when not by the operator
        self.done = 0
        self.total: int | None = None
        self._cancel = cancel_event
        self._done = threading.Event()
        self.status: RunStatus = RunStatus.QUEUED
        self.summary: dict[str, Any] = {}
        self.error: str | None = None

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> RunStatus:
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.run_id} still running")
        return self.status

    @property
    def finished(self) -> bool:
        return self._done.is_set()


class RunEngine:
    """Executes runs; everything they say goes to subscribers and the database."""

    def __init__(self, store: Store, *, pool_size: int | None = None, max_runs: int = 2) -> None:
        self.store = store
        self.pool = WorkerPool(pool_size)
        self._slots = ThreadPoolExecutor(max_workers=max(1, max_runs), thread_name_prefix="patron-run")
        self._subscribers: tuple[Subscriber, ...] = ()   # replaced whole: read without a lock
        self._sub_lock = threading.Lock()
        self._handles: dict[int, RunHandle] = {}
        self._msg_lock = threading.Lock()
        self._msg_buf: list[tuple] = []
        self._persister = _Persister(store)
        self._persister.drain = self._drain_messages
        self._persister.buffered = lambda: bool(self._msg_buf)
        self._persister.start()
        # no connection of its own: start/adopt/interrupt_active are called from any thread (a
        # screen's @work(thread=True) worker, the scheduler), and a connection is never shared
        # across threads (DESIGN.md): each call that writes opens one and closes it (_connection)
        with self._connection() as conn:
            self.interrupted_on_start = runlog.mark_dead_runs_interrupted(conn)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call, on the calling thread, closed when it ends."""
        conn = self.store.connect()
        try:
            yield conn
        finally:
            conn.close()

    # subscribers
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every event of every run (from run threads)."""
        with self._sub_lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._sub_lock:
                subs = list(self._subscribers)
                if callback in subs:
                    subs.remove(callback)
                    self._subscribers = tuple(subs)

        return unsubscribe

    def _drain_messages(self) -> list[tuple]:
        with self._msg_lock:
            batch, self._msg_buf = self._msg_buf, []
        return batch

    def _flush_messages(self) -> None:
        """Every message published so far is written when this returns."""
        batch = self._drain_messages()
        if batch:
            self._persister.put_messages(batch)
        self._persister.flush()

    def _publish(self, event: RunEvent) -> None:
        if event.kind is EventKind.PROGRESS:
            handle = self._handles.get(event.run_id)
            if handle is not None:
                handle.done, handle.total = event.done or 0, event.total
            self._persister.put_progress(event.run_id, event.done or 0, event.total)
        elif event.kind is not EventKind.DONE:
            row = (event.run_id, _utc_stamp(event.ts), event.kind.value, event.code, event.line,
                   event.barcode, event.patron_id, event.text)
            # messages reach the persister in batches (a run may report 200,000 of them):
            # at 512, or when the persister finds the buffer 50 ms old, or at a flush
            self._buffer([row])
        for sub in self._subscribers:
            try:
                sub(event)
            except Exception:  # a broken subscriber must not break the run
                traceback.print_exc()

    def _buffer(self, rows: list[tuple]) -> None:
        with self._msg_lock:
            wake = not self._msg_buf
            self._msg_buf.extend(rows)
            batch = None
            if len(self._msg_buf) >= 512:
                batch, self._msg_buf = self._msg_buf, []
        if batch:
            self._persister.put_messages(batch)
        elif wake:
            self._persister.q.put(("wake",))   # an idle persister blocks on its queue

    def _publish_many(self, run_id: int, kind: EventKind, rows: list[tuple], *,
                      conn: sqlite3.Connection | None = None) -> None:
        """Many messages of one kind: rows of (text, code, line, barcode, patron_id)."""
        ts = time.time()
        stamp, value = _utc_stamp(ts), kind.value
        if conn is not None:
            runlog.insert_messages(conn, run_id, stamp, value, rows)
        else:
            self._buffer([(run_id, stamp, value, code, line, barcode, pid, text)
                          for text, code, line, barcode, pid in rows])
        subscribers = self._subscribers
        if subscribers:   # events only for someone who listens
            for text, code, line, barcode, pid in rows:
                event = RunEvent(run_id, kind, text, code, line, barcode, pid, ts=ts)
                for sub in subscribers:
                    try:
                        sub(event)
                    except Exception:  # a broken subscriber must not break the run
                        traceback.print_exc()

    # runs
    def start(
        self,
        kind: str,
        title: str,
        fn: RunFunction,
        *,
        params: dict[str, Any] | None = None,
        job_id: int | None = None,
        mode: str | None = None,
        started_by: str = "operator",
    ) -> RunHandle:
        """Create the run's row (queued) and execute it on a run slot."""
        params = params or {}
        with self._connection() as conn:
            run_id = runlog.create_run(
                conn, kind=kind, title=title, operator=self.store.operator,
                params=params, job_id=job_id, mode=mode, started_by=started_by,
            )
        cancel = threading.Event()
        handle = RunHandle(run_id, cancel, kind=kind, title=title)
        self._handles[run_id] = handle
        self._slots.submit(self._execute, handle, fn, params)
        return handle

    def execute(self, kind: str, title: str, fn: RunFunction, **kw: Any) -> RunHandle:
        """Start a run and wait for it (the CLI's way)."""
        handle = self.start(kind, title, fn, **kw)
        handle.wait()
        return handle

    def cancel(self, run_id: int) -> None:
        handle = self._handles.get(run_id)
        if handle is not None:
            handle.cancel()

    def adopt(self, run_id: int, kind: str, title: str, fn: RunFunction, *, operator: str,
              params: dict[str, Any] | None = None) -> RunHandle:
        """Execute a run whose row exists already (a queued run handed to the scheduler:
        services/background.py), writing as the operator who queued it."""
        cancel = threading.Event()
        handle = RunHandle(run_id, cancel, kind=kind, title=title, operator=operator)
        self._handles[run_id] = handle
        self._slots.submit(self._execute, handle, fn, params or {})
        return handle

    def interrupt_active(self, reason: str) -> list[int]:
        """Stop every run this process executes because the process is going away (the
        terminal hung up, the console closed): each rolls back what it was writing, unless it
        is already committing, and is marked interrupted with `reason`. Does not wait."""
        active = []
        for handle in list(self._handles.values()):
            if not handle.finished:
                handle.interrupted = reason
                handle.cancel()
                active.append(handle.run_id)
        return active

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no run of this process is running; False when `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            handles = list(self._handles.values())
            for handle in handles:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not handle._done.wait(left):
                    return False
            # a run may start another before it ends (a queued batch its queue filler): look again
            # until a look finds no run it had not seen (handles are only ever added)
            if len(self._handles) == len(handles):
                return True

    def latest(self) -> RunHandle | None:
        """The most recently started run of this process, if any."""
        handles = dict(self._handles)   # a copy: another thread may start a run meanwhile
        return handles[max(handles)] if handles else None

    def handle(self, run_id: int) -> RunHandle | None:
        """The handle of a run this engine executes (or executed), or None."""
        return self._handles.get(run_id)

    def active_runs(self) -> list[int]:
        # a copy first: another thread may start a run while this walks the table
        return [rid for rid, h in list(self._handles.items()) if not h.finished]

    def _execute(self, handle: RunHandle, fn: RunFunction, params: dict[str, Any]) -> None:
        ctx = RunContext(self, handle.run_id, handle.operator or self.store.operator, params, handle._cancel)
        conn = self.store.connect()
        status = RunStatus.FAILED
        error: str | None = None
        try:
            runlog.mark_running(conn, handle.run_id, pid=os.getpid())
            handle.status = RunStatus.RUNNING
            result = fn(ctx)
            if result:
                ctx.summary.update(result)
            status = RunStatus.SUCCEEDED
        except RunCancelled:
            kept = ("; what it had committed before is kept (see the summary)" if ctx.committed else "")
            if ctx.outcome_committed:
                # its last transaction committed with the outcome 'succeeded': the stop came after
                status = RunStatus.SUCCEEDED
                ctx.warning("Stopped after its changes were committed: they are kept, and the run succeeded.",
                            code="committed")
            elif handle.interrupted:
                status, error = RunStatus.INTERRUPTED, handle.interrupted
                ctx.warning(f"Run interrupted ({error}): nothing it was writing was kept{kept}.", code="interrupted")
            else:
                status = RunStatus.CANCELLED
                error = "cancelled by the operator"
                ctx.warning(f"Run cancelled: nothing it was writing was kept{kept}.", code="cancelled")
        except (RunFailed, DatabaseBusy) as exc:
            error = str(exc)
            ctx.error(error, code="failed" if isinstance(exc, RunFailed) else "busy")
        except Exception as exc:  # the run fails, the console does not
            trouble = explain(exc, self.store.path)
            if trouble is not None:   # a bad day (a full disk...): its one sentence, everywhere
                error = str(trouble)
                ctx.error(error, code=trouble.kind)
            else:
                error = f"{type(exc).__name__}: {exc}"
                ctx.error(f"Run failed: {error}", code="crash")
        finally:
            ctx.close()
            if ctx.outcome_committed and status is not RunStatus.SUCCEEDED:
                # what failed came after the commit that made the run 'succeeded' (reporting, say):
                # the changes and that outcome stand; the failure is in the run's messages
                ctx.warning(f"After its changes were committed: {error}", code="after_commit")
                status, error = RunStatus.SUCCEEDED, None
            summary = {**ctx.summary, "messages": dict(ctx.counts)}
            self._flush_messages()
            try:
                testpoints.reach("finish")
                runlog.finish_run(conn, handle.run_id, status=status.value, summary=summary, error=error)
                testpoints.reach("finished")
            finally:
                conn.close()
            handle.status, handle.summary, handle.error = status, summary, error
            text = error or f"{status.value}"
            # DONE reaches every subscriber before wait() returns, so a caller
            # that unsubscribes after wait() never misses it
            try:
                self._publish(RunEvent(handle.run_id, EventKind.DONE, text, status=status))
            finally:
                handle._done.set()

    def shutdown(self, *, cancel_running: bool = True) -> None:
        if cancel_running:
            for h in self._handles.values():
                h.cancel()
        self._slots.shutdown(wait=True)
        self.pool.shutdown()
        self._persister.stop()
