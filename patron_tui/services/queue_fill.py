"""The service-queue filler: the background batch manager that fills the queues a batch
profile update asked for (one row of `queue_fill_requests` per profile).

Filling a profile's queue = adding titles of the profile's medium (title_media) that share a
subject with the profile (title_subjects and profile_subjects), that the patron has not had
(no patron_history row and no checkout with the same title text, ignoring A-Z case) and that
are not in the queue already, in catalog order (title id), until the queue holds the
profile's queue_length titles. New titles go after the queue's last position.

The filler is its own run (kind "queue_fill") on the run engine. It works in chunks of
`CHUNK` requests, each one transaction through the changeset writer that writes the queue
rows AND marks those requests done, so a filler killed at any moment resumes at the first
request not done and no queue is ever filled twice; two fillers at once (two processes) take
different chunks, as each chunk is chosen under the write lock. Each chunk reports progress
and one info message (the log pane). Between chunks it leaves the write lock to others.

Who starts it: the caller of a batch update, once that run has succeeded, unless a filler is
at work already (`hand_off`, which says which filler takes the queues); `patron-tui fill-queues` in the foreground; and the scheduler process
(services/jobs/scheduler.py), on every pass, when requests are waiting and no filler is alive.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

from patron_tui.runs import RunContext, RunEngine, RunHandle
from patron_tui.store import utc_now
from patron_tui.store.identity import host_name, pid_alive

__all__ = ["FILL_KIND", "CHUNK", "pending", "live_filler", "hand_off", "start_filler", "fill_queues", "fill_profile_titles"]

FILL_KIND = "queue_fill"

#: requests per transaction ($PATRON_TUI_FILL_CHUNK overrides)
CHUNK = 200


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "")) if os.environ.get(name) else default
    except ValueError:
        return default


def pending(conn: sqlite3.Connection) -> int:
    """Profiles whose queue is still waiting to be filled."""
    return conn.execute("SELECT count(*) FROM queue_fill_requests WHERE done_at IS NULL").fetchone()[0]


def live_filler(conn: sqlite3.Connection, engine: RunEngine | None = None) -> int | None:
    """The id of a filler run that is working now, in any process, or None.

    A run row 'running' counts while its owner process lives (one of another host always
    counts); a filler this engine has started counts from the moment it is queued."""
    if engine is not None:
        for run_id in engine.active_runs():
            handle = engine.handle(run_id)
            if handle is not None and handle.kind == FILL_KIND:
                # not once its last transaction (the one that found nothing left) has committed
                # its outcome: it will not look for requests again
                row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
                if row is not None and row[0] in ("queued", "running"):
                    return run_id
    here = host_name()
    for r in conn.execute("SELECT id, owner_host, owner_pid FROM runs WHERE kind = ? AND status = 'running'"
                          " ORDER BY id", (FILL_KIND,)):
        if r["owner_host"] != here or (r["owner_pid"] is not None and pid_alive(r["owner_pid"])):
            return r["id"]
    return None


_hand_off_lock = threading.Lock()   # two runs of this process handing off at once start one filler


def hand_off(engine: RunEngine, store: Any, operator: str, *,
             started_by: str = "operator") -> tuple[int | None, RunHandle | None]:
    """The filler that fills the requests waiting now (call it after they are committed):
    (its run id, its handle when it was started here), or (None, None) when nothing waits.

    A filler at work takes them: it looks for requests until a transaction of its own finds
    none, and that transaction commits its outcome ('succeeded') under the write lock, so a
    filler still 'queued' or 'running' after the requests were committed will see them.
    Otherwise one is started now. `operator` is who asked (the run is recorded under the
    engine's store operator, as every run is); filling needs no permission of its own."""
    with _hand_off_lock:
        conn = store.connect()
        try:
            if pending(conn) == 0:
                return None, None
            live = live_filler(conn, engine)
            if live is not None:
                return live, None
        finally:
            conn.close()
        handle = engine.start(FILL_KIND, "Fill service queues", fill_queues,
                              params={"requested_by": operator}, started_by=started_by)
        return handle.run_id, handle


def start_filler(engine: RunEngine, store: Any, operator: str, *, started_by: str = "operator") -> RunHandle | None:
    """Start a filler run, or None when nothing is waiting or a filler is already at work
    (`hand_off` says which one)."""
    return hand_off(engine, store, operator, started_by=started_by)[1]


_CANDIDATES = (
    "SELECT tm.title_id FROM title_media tm"
    " WHERE tm.medium = ?1"
    " AND EXISTS (SELECT 1 FROM title_subjects ts JOIN profile_subjects ps ON ps.subject = ts.subject"
    "             WHERE ts.title_id = tm.title_id AND ps.profile_id = ?2)"
    " AND NOT EXISTS (SELECT 1 FROM service_queue q WHERE q.profile_id = ?2 AND q.title_id = tm.title_id)"
    " AND NOT EXISTS (SELECT 1 FROM titles t JOIN patron_history h ON h.patron_id = ?3"
    "                 AND h.title = t.title COLLATE NOCASE WHERE t.id = tm.title_id)"
    " AND NOT EXISTS (SELECT 1 FROM titles t JOIN checkouts co ON co.patron_id = ?3"
    "                 AND co.title = t.title COLLATE NOCASE WHERE t.id = tm.title_id)"
    " ORDER BY tm.title_id LIMIT ?4"
)


def fill_profile_titles(conn: sqlite3.Connection, profile_id: int) -> tuple[list[int], int]:
    """(title ids to add, first free position) for one profile's queue, in queue order."""
    p = conn.execute("SELECT patron_id, medium, queue_length FROM patron_profiles WHERE id = ?",
                     (profile_id,)).fetchone()
    if p is None:
        return [], 1
    held, last = conn.execute("SELECT count(*), coalesce(max(position), 0) FROM service_queue WHERE profile_id = ?",
                              (profile_id,)).fetchone()
    room = p["queue_length"] - held
    if room <= 0:
        return [], last + 1
    titles = [r[0] for r in conn.execute(_CANDIDATES, (p["medium"], profile_id, p["patron_id"], room))]
    return titles, last + 1


def fill_queues(ctx: RunContext) -> dict[str, Any]:
    """The run: fill every waiting queue, one committed chunk at a time (resumable)."""
    conn = ctx.conn
    chunk = max(1, int(_env_number("PATRON_TUI_FILL_CHUNK", CHUNK)))
    pause = max(0.0, _env_number("PATRON_TUI_FILL_PAUSE", 0.0))
    total = pending(conn)
    ctx.info(f"{total} service queue{'s' if total != 1 else ''} waiting to be filled.")
    done = queues = titles = empty = chunks = 0
    ctx.progress(0, total, force=True)
    while True:
        ctx.check_cancelled()
        # each chunk commits on its own with the counts so far (and, if the process dies before
        # the next, what it filled); the transaction that finds nothing left to fill is the run's
        # outcome, 'succeeded' (RunContext.writer)
        ctx.summary.update({"queues_filled": queues, "titles_added": titles, "queues_without_new_titles": empty,
                            "chunks": chunks})
        with ctx.writer() as w:
            # chosen under the write lock: another filler cannot take the same requests
            reqs = conn.execute(
                "SELECT id, profile_id FROM queue_fill_requests WHERE done_at IS NULL ORDER BY id LIMIT ?",
                (chunk,)).fetchall()
            if not reqs:
                ctx.if_stopped = None   # nothing left: this commit is the outcome, 'succeeded'
                break
            now = utc_now()
            rows: list[dict[str, Any]] = []
            marks = []
            chunk_titles = 0
            for r in reqs:
                add, pos = fill_profile_titles(conn, r["profile_id"])
                rows += [{"profile_id": r["profile_id"], "title_id": t, "position": pos + i, "added_at": now}
                         for i, t in enumerate(add)]
                marks.append((r["id"], {"done_at": now, "fill_run_id": ctx.run_id, "added": len(add)}))
                chunk_titles += len(add)
                empty += not add
            w.insert_many("service_queue", rows)
            w.update_many("queue_fill_requests", marks)
            ctx.summary.update({"queues_filled": queues + len(reqs), "titles_added": titles + chunk_titles,
                                "queues_without_new_titles": empty, "chunks": chunks + 1})
            ctx.if_stopped = (f"the process stopped after filling {queues + len(reqs)} service queues in "
                              "committed chunks; the queues still waiting are filled by the next filler")
        chunks += 1
        done += len(reqs)
        queues += len(reqs)
        titles += chunk_titles
        left = pending(conn)
        total = max(total, done + left)
        ctx.progress(done, total, force=True)
        ctx.info(f"Filled {len(reqs)} service queue{'s' if len(reqs) != 1 else ''} with {chunk_titles} "
                 f"title{'s' if chunk_titles != 1 else ''}; {left} waiting.", code="queue_chunk")
        if pause:
            time.sleep(pause)
    ctx.info(f"Every waiting service queue is filled: {queues} queues, {titles} titles added"
             + (f"; {empty} queues got no new title (full, or no title left that matches)." if empty else "."))
    return {"queues_filled": queues, "titles_added": titles, "queues_without_new_titles": empty,
            "chunks": chunks}
