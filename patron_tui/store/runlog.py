"""Runs and their messages as rows.

A run is a row before it starts (queued), so any process can pick it up and
any console can follow it. These rows are the run engine's own bookkeeping,
not patron data: they are written here directly, each in a short
transaction on the caller's connection, never inside a data transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from patron_tui.store.changeset import utc_now
from patron_tui.store.db import write_transaction
from patron_tui.store.identity import host_name, pid_alive

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted", "missed")
LEVELS = ("info", "warning", "skipped", "error")   # run_messages.level


def create_run(
    conn: sqlite3.Connection,
    *,
    kind: str,
    title: str,
    operator: str,
    params: dict[str, Any] | None = None,
    job_id: int | None = None,
    mode: str | None = None,
    started_by: str = "operator",
) -> int:
    with write_transaction(conn):
        cur = conn.execute(
            "INSERT INTO runs (kind, title, job_id, mode, status, operator, started_by, params, created_at)"
            " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
            (kind, title, job_id, mode, operator, started_by, json.dumps(params or {}), utc_now()),
        )
        return cur.lastrowid


def mark_running(conn: sqlite3.Connection, run_id: int, *, pid: int) -> None:
    with write_transaction(conn):
        conn.execute(
            "UPDATE runs SET status='running', started_at=?, owner_host=?, owner_pid=? WHERE id=?",
            (utc_now(), host_name(), pid, run_id),
        )


def finish_run(
    conn: sqlite3.Connection,
    run_id: int,
    *,
    status: str,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    if status not in TERMINAL:
        raise ValueError(f"not a final status: {status}")
    with write_transaction(conn):
        conn.execute(
            "UPDATE runs SET status=?, summary=?, error=?, finished_at=? WHERE id=?",
            (status, json.dumps(summary or {}), error, utc_now(), run_id),
        )


IF_STOPPED = "if_stopped"   # summary key: why the run reads interrupted if its process dies now


def record_outcome(conn: sqlite3.Connection, run_id: int, *, summary: dict[str, Any],
                   if_stopped: str | None = None) -> None:
    """Inside the caller's data transaction, just before its COMMIT (ChangesetWriter's
    before_commit, installed by RunContext.writer): the run's outcome commits with its data.

    `if_stopped` None: this is the run's last transaction, so the run is 'succeeded' with
    `summary` the moment its data is committed. Otherwise more work follows the commit: the
    run stays 'running' with the summary so far, and `if_stopped` (kept in the summary) is the
    error it reads if its process dies before the next commit (mark_dead_runs_interrupted).
    A final status is never regressed: only a 'running' row is touched."""
    if if_stopped is None:
        conn.execute(
            "UPDATE runs SET status='succeeded', summary=?, error=NULL, finished_at=? WHERE id=? AND status='running'",
            (json.dumps(summary), utc_now(), run_id))
    else:
        conn.execute("UPDATE runs SET summary=? WHERE id=? AND status='running'",
                     (json.dumps({**summary, IF_STOPPED: if_stopped}), run_id))


def set_progress(conn: sqlite3.Connection, run_id: int, done: int, total: int | None) -> None:
    with write_transaction(conn):
        conn.execute(
            "UPDATE runs SET progress_done=?, progress_total=? WHERE id=?", (done, total, run_id)
        )


def add_messages(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    """rows: (run_id, ts, level, code, line, barcode, patron_id, text)."""
    if not rows:
        return
    with write_transaction(conn):
        conn.executemany(
            "INSERT INTO run_messages (run_id, ts, level, code, line, barcode, patron_id, text)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def insert_messages(conn: sqlite3.Connection, run_id: int, ts: str, level: str, rows: Sequence[tuple]) -> None:
    """Messages of one run, time and level, written inside the caller's transaction:
    rows of (text, code, line, barcode, patron_id)."""
    if not (ts.replace("-", "").replace(":", "").replace(".", "").replace("T", "").replace("Z", "").isdigit()
            and level in LEVELS):
        raise ValueError(f"insert_messages: bad time {ts!r} or level {level!r}")
    # the rows go in as they are (numbered parameters pick their fields): no tuple per row
    conn.executemany(
        "INSERT INTO run_messages (run_id, ts, level, code, line, barcode, patron_id, text)"
        f" VALUES ({int(run_id)}, '{ts}', '{level}', ?2, ?3, ?4, ?5, ?1)",
        rows,
    )


def mark_dead_runs_interrupted(conn: sqlite3.Connection) -> list[int]:
    """Runs left 'running' by a process of this host that no longer exists: 'interrupted'; the
    error is what the run said it would be if stopped then (`record_outcome`'s if_stopped: a run
    of several transactions killed between two of them), else "the process running it stopped"
    (nothing it wrote was committed). Called when an engine starts and on every scheduler pass."""
    host = host_name()
    dead = [
        r["id"]
        for r in conn.execute(
            "SELECT id, owner_host, owner_pid FROM runs WHERE status='running'"
        ).fetchall()
        if r["owner_host"] == host and (r["owner_pid"] is None or not pid_alive(r["owner_pid"]))
    ]
    if dead:
        with write_transaction(conn):
            conn.executemany(
                "UPDATE runs SET status='interrupted', finished_at=?,"
                " error=coalesce(error, json_extract(summary, '$." + IF_STOPPED + "'),"
                " 'the process running it stopped') WHERE id=? AND status='running'",
                [(utc_now(), i) for i in dead],
            )
    return dead


def get_run(conn: sqlite3.Connection, run_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    if row is None:
        return None
    out = dict(row)
    out["params"] = json.loads(out["params"] or "{}")
    out["summary"] = json.loads(out["summary"] or "{}")
    return out


def recent_runs(conn: sqlite3.Connection, limit: int = 10) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))]


def messages(
    conn: sqlite3.Connection, run_id: int, levels: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    sql = "SELECT * FROM run_messages WHERE run_id=?"
    params: list[Any] = [run_id]
    if levels:
        levels = list(levels)
        sql += f" AND level IN ({','.join('?' * len(levels))})"
        params += levels
    return [dict(r) for r in conn.execute(sql + " ORDER BY id", params)]


# -- runs handed to the scheduler ("run in background": services/background.py) ----------------

BACKGROUND_PARAM = "background"   # params key that marks a queued run any scheduler may take


def queue_background(conn: sqlite3.Connection, *, kind: str, title: str, operator: str,
                     params: dict[str, Any] | None = None, job_id: int | None = None,
                     mode: str | None = None) -> int:
    """A run row left 'queued' for a scheduler process to execute (started_by 'scheduler')."""
    return create_run(conn, kind=kind, title=title, operator=operator, job_id=job_id, mode=mode,
                      params={**(params or {}), BACKGROUND_PARAM: True}, started_by="scheduler")


def claim_background(conn: sqlite3.Connection, kinds: Iterable[str], *, pid: int) -> dict[str, Any] | None:
    """Claim the oldest queued background run of one of `kinds` for process `pid` of this host
    (compare-and-set on its owner: two schedulers never take the same run). A run claimed by a
    process of this host that died before starting it is claimed again. None: nothing to take."""
    kinds = list(kinds)
    if not kinds:
        return None
    host = host_name()
    rows = conn.execute(
        "SELECT id, owner_host, owner_pid FROM runs WHERE status = 'queued' AND started_by = 'scheduler'"
        f" AND json_extract(params, '$.{BACKGROUND_PARAM}') = 1 AND kind IN ({','.join('?' * len(kinds))})"
        " ORDER BY id", kinds).fetchall()
    for r in rows:
        owner = r["owner_pid"]
        if owner is not None and not (r["owner_host"] == host and not pid_alive(owner)):
            continue   # another live process has it
        with write_transaction(conn):
            cur = conn.execute(
                "UPDATE runs SET owner_host = ?, owner_pid = ? WHERE id = ? AND status = 'queued'"
                " AND owner_pid IS ?", (host, pid, r["id"], owner))
        if cur.rowcount == 1:
            return get_run(conn, r["id"])
    return None
