"""Connections to the patron store.

One connection per thread. Every connection gets the same pragmas: WAL, a busy
timeout, foreign keys on, and `isolation_level=None` so that write transactions
are opened explicitly with `BEGIN IMMEDIATE` (a deferred read-then-write
transaction under WAL fails at once with "database is locked", whatever the
timeout).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlite_utils

BUSY_TIMEOUT_MS = 15_000


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with the project's pragmas (does not create the schema)."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":  # pragma: no cover - only on filesystems without WAL
            raise sqlite3.OperationalError(f"{path}: could not switch to WAL (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache
    return conn


def as_database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """Wrap a connection for schema work and small reads/writes via sqlite-utils."""
    return sqlite_utils.Database(conn)


class DatabaseBusy(RuntimeError):
    """Another run or program held the write lock for longer than the busy timeout."""


def begin_immediate(conn: sqlite3.Connection) -> None:
    """`BEGIN IMMEDIATE`, or DatabaseBusy with a sentence when the write lock stays taken."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise DatabaseBusy(
            "the database is busy: another run or program kept writing for longer than the busy "
            "timeout; nothing was changed. Try again when that one has ended (the Job Manager and "
            "`patron-tui runs` show what is running).") from None


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any exception."""
    begin_immediate(conn)
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (interrupt, full disk)
            conn.execute("ROLLBACK")
        raise
    else:
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
