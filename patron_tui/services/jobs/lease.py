"""The job lease: one row of `job_leases` per job, so a job never runs twice at once.

Whoever runs a job (the console, `patron-tui jobs run`, a scheduler) takes the lease in
one `BEGIN IMMEDIATE` transaction before it reads the file, and gives it back when the
run ends. A lease is free when nobody holds it, when it has expired, or when its owner
was a process of this host that no longer exists. The same row remembers the latest
scheduled slot a scheduler claimed (`last_slot`), so two schedulers never start a slot
twice. These rows are bookkeeping, like the runs table: written directly, not journalled.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timedelta, timezone

from patron_tui.store.changeset import utc_now
from patron_tui.store.db import write_transaction
from patron_tui.store.identity import host_name, pid_alive

LEASE_TTL = timedelta(hours=12)   # longer than any import; a dead owner on this host frees it at once


def _stamp(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def owner_id(tag: str = "") -> str:
    """host:pid[:tag] — who holds a lease."""
    return f"{host_name()}:{os.getpid()}" + (f":{tag}" if tag else "")


def _free(row: sqlite3.Row | None, now: datetime) -> bool:
    if row is None or not row["owner"]:
        return True
    expires = row["expires_at"]
    if expires and datetime.fromisoformat(expires.replace("Z", "+00:00")) <= now:
        return True
    host, _, rest = row["owner"].partition(":")
    pid = rest.split(":", 1)[0]
    return host == host_name() and pid.isdigit() and not pid_alive(int(pid))


def holder(conn: sqlite3.Connection, job_id: int, now: datetime | None = None) -> str | None:
    """Who holds the job's lease now (None: free)."""
    now = now or datetime.now(timezone.utc)
    row = conn.execute("SELECT * FROM job_leases WHERE job_id = ?", (job_id,)).fetchone()
    return None if _free(row, now) else row["owner"]


def acquire(conn: sqlite3.Connection, job_id: int, owner: str, *, ttl: timedelta = LEASE_TTL,
            now: datetime | None = None, slot: str | None = None) -> bool:
    """Take the job's lease for `owner`. With `slot` (a scheduler's claim): only if no
    scheduler has claimed that slot or a later one, and the slot is recorded as claimed.
    True when taken; False when another owner holds it or the slot is taken."""
    now = now or datetime.now(timezone.utc)
    with write_transaction(conn):
        row = conn.execute("SELECT * FROM job_leases WHERE job_id = ?", (job_id,)).fetchone()
        if row is not None and row["owner"] != owner and not _free(row, now):
            return False
        if slot is not None and row is not None and row["last_slot"] and row["last_slot"] >= slot:
            return False
        last_slot = slot if slot is not None else (row["last_slot"] if row is not None else None)
        conn.execute(
            "INSERT INTO job_leases (job_id, owner, acquired_at, expires_at, last_slot) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner, acquired_at = excluded.acquired_at,"
            " expires_at = excluded.expires_at, last_slot = excluded.last_slot",
            (job_id, owner, _stamp(now), _stamp(now + ttl), last_slot),
        )
        return True


def claim_slot(conn: sqlite3.Connection, job_id: int, slot: str, *, now: datetime | None = None) -> bool:
    """A scheduler's claim of one scheduled slot: True for exactly one caller per slot, and
    only while nobody runs the job (then the next pass tries again). Holds no lease after."""
    now = now or datetime.now(timezone.utc)
    with write_transaction(conn):
        row = conn.execute("SELECT * FROM job_leases WHERE job_id = ?", (job_id,)).fetchone()
        if row is not None and not _free(row, now):
            return False
        if row is not None and row["last_slot"] and row["last_slot"] >= slot:
            return False
        conn.execute(
            "INSERT INTO job_leases (job_id, last_slot) VALUES (?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET last_slot = excluded.last_slot",
            (job_id, slot),
        )
        return True


def release(conn: sqlite3.Connection, job_id: int, owner: str) -> None:
    with write_transaction(conn):
        conn.execute(
            "UPDATE job_leases SET owner = NULL, expires_at = NULL WHERE job_id = ? AND owner = ?",
            (job_id, owner),
        )


__all__ = ["LEASE_TTL", "acquire", "claim_slot", "holder", "owner_id", "release", "utc_now"]
