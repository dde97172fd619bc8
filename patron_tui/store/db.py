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


def busy_timeout_ms() -> int:
    """How long a connection waits for another writer's lock: `$PATRON_TUI_BUSY_TIMEOUT_MS`
    when set (a site with long imports may want more; tests want less), else 15 s."""
    env = os.environ.get("PATRON_TUI_BUSY_TIMEOUT_MS", "").strip()
    return int(env) if env.isdigit() else BUSY_TIMEOUT_MS


def _max_pages() -> int | None:
    """`$PATRON_TUI_MAX_PAGES`: a ceiling on the database's size in pages (`PRAGMA
    max_page_count`; SQLite never lowers it below the current size). A support and test hook
    that makes a full disk happen on demand: a write that needs a new page fails as one would
    on a full disk."""
    env = os.environ.get("PATRON_TUI_MAX_PAGES", "").strip()
    return int(env) if env.isdigit() else None


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
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms()}")
    conn.execute("PRAGMA foreign_keys = ON")
    if (pages := _max_pages()) is not None:
        conn.execute(f"PRAGMA max_page_count = {pages}")
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
            f"the database is busy: another run or program kept {database_file(conn)} locked for "
            f"longer than the busy timeout ({busy_timeout_ms() / 1000:g} s), so nothing was changed; "
            "try again when that one has ended (the Job Manager and `patron-tui runs` show what "
            "is running)") from None


def database_file(conn: sqlite3.Connection) -> str:
    """The file of the connection's main database ("the database" when it has none)."""
    try:
        for row in conn.execute("PRAGMA database_list"):
            if row[1] == "main" and row[2]:
                return str(row[2])
    except sqlite3.Error:
        pass
    return "the database"


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
