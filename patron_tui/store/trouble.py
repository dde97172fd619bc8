"""Bad days in one sentence: a busy, read-only, full, damaged or newer database, a disk error.

`explain(exc, db_path)` turns an exception of the store (or of the files around it) into a
`StoreTrouble`: a `kind` and ONE sentence naming the file and what to do, never a traceback.
`explain_text(text, db_path)` does the same for a run's stored error text: the run engine
stores a bad day's sentence as the run's error, and a run recorded before it did, the raw text
("OperationalError: database or disk is full").
`Store.connect` raises `StoreTrouble` itself for a database it cannot open for one of these
reasons; the CLI turns each kind into its exit code (cli_common.EXIT_CODES) and the console
shows the sentence.

Kinds: "busy" (another process holds the write lock past the busy timeout), "readonly" (the
file, its folder or its filesystem cannot be written), "full" (the disk is full), "newer"
(written by a newer patron-tui), "damaged" (not a database, or a corrupt one), "disk" (an
input/output error).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from patron_tui.store.db import DatabaseBusy, busy_timeout_ms
from patron_tui.store.identity import current_login
from patron_tui.store.schema import SchemaTooNew

__all__ = ["StoreTrouble", "explain", "explain_text", "sentence"]

KINDS = ("busy", "readonly", "full", "newer", "damaged", "disk")


class StoreTrouble(Exception):
    """A database that cannot be used right now, and why: `kind` (see KINDS), `path`, and
    str(exc) the one sentence to show."""

    def __init__(self, kind: str, path: str | os.PathLike[str] | None, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = None if path is None else str(path)


def sentence(kind: str, path: str | os.PathLike[str] | None, detail: str = "") -> str:
    """The sentence of `kind` for the file `path`."""
    where = str(path) if path else "the database"
    if kind == "busy":
        return (f"the database is busy: another run or program kept {where} locked for longer than "
                f"the busy timeout ({busy_timeout_ms() / 1000:g} s), so nothing was changed; try "
                f"again when that one has ended (`patron-tui runs` shows what is running)")
    if kind == "readonly":
        login = current_login()
        return (f"{where} cannot be written: the file, its folder or its disk is read-only for "
                f"{login}, so nothing was changed; make the file and its folder writable for "
                f"{login} (or work on a copy)")
    if kind == "full":
        folder = Path(where).parent if path else Path(".")
        return (f"the disk holding {where} is full, so nothing was changed; free some space there "
                f"(`df -h {folder}` shows how much is left) and run it again")
    if kind == "damaged":
        return (f"{where} is damaged{f' ({detail})' if detail else ''}, so nothing was changed; "
                f"restore the latest backup (`patron-tui restore FILE`) or ask for help")
    if kind == "disk":
        return (f"the disk holding {where} reported an input/output error"
                f"{f' ({detail})' if detail else ''}, so nothing was changed; check the disk "
                f"(`dmesg`), then run it again")
    if kind == "newer":
        return f"{where} was written by a newer patron-tui ({detail}): upgrade patron-tui"
    raise ValueError(kind)


# SQLite's primary result codes (the low byte of an extended code)
_SQLITE_KIND = {5: "busy", 6: "busy", 8: "readonly", 13: "full", 11: "damaged", 26: "damaged",
                10: "disk"}
# and the texts of the same errors (a run keeps only the text)
_TEXTS = (
    ("database or disk is full", "full"),
    ("attempt to write a readonly database", "readonly"),
    ("readonly database", "readonly"),
    ("the database is busy", "busy"),
    ("database is locked", "busy"),
    ("database table is locked", "busy"),
    ("database disk image is malformed", "damaged"),
    ("file is not a database", "damaged"),
    ("disk i/o error", "disk"),
)


def _readonly_place(path: Path) -> bool:
    """The file or its folder cannot be written by this process (it exists)."""
    try:
        return not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK))
    except OSError:
        return False


def explain(exc: BaseException, db_path: str | os.PathLike[str] | None = None) -> StoreTrouble | None:
    """The StoreTrouble `exc` stands for, or None when it is not one of the bad days above."""
    if isinstance(exc, StoreTrouble):
        return exc
    if isinstance(exc, DatabaseBusy):
        return StoreTrouble("busy", db_path, str(exc))
    if isinstance(exc, SchemaTooNew):
        return StoreTrouble("newer", db_path, sentence(
            "newer", db_path, f"schema {exc.version}, this one knows {exc.known}"))
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        kind = _SQLITE_KIND.get(code & 0xFF) if isinstance(code, int) else None
        if kind is None:
            kind = _kind_of_text(str(exc))
        if kind is None and code is not None and code & 0xFF == 14 and db_path is not None \
                and _readonly_place(Path(db_path)):
            kind = "readonly"   # SQLITE_CANTOPEN: the -wal/-shm beside it cannot be made
        if kind is None:
            return None
        return StoreTrouble(kind, db_path, sentence(kind, db_path, str(exc)))
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else db_path
        if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
            return StoreTrouble("full", where, sentence("full", where))
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return StoreTrouble("readonly", where, sentence("readonly", where))
        if exc.errno == errno.EIO:
            return StoreTrouble("disk", where, sentence("disk", where, exc.strerror or ""))
    return None


# what only sentence() says, per kind: a run stores a bad day's sentence as its error (runs.py)
_SENTENCES = (
    ("the database is busy: another run or program kept", "busy"),
    ("or its disk is read-only for", "readonly"),
    ("is full, so nothing was changed; free some space", "full"),
    (", so nothing was changed; restore the latest backup", "damaged"),
    ("reported an input/output error", "disk"),
    ("was written by a newer patron-tui", "newer"),
)


def _kind_of_text(text: str) -> str | None:
    low = text.lower()
    for needle, kind in _TEXTS:
        if needle in low:
            return kind
    return None


def explain_text(text: str | None, db_path: str | os.PathLike[str] | None = None) -> StoreTrouble | None:
    """The StoreTrouble a run's error text names, or None."""
    if not text:
        return None
    for mark, kind in _SENTENCES:
        if mark in text:   # already the sentence (it names the file it was about)
            return StoreTrouble(kind, db_path, text)
    kind = _kind_of_text(text)
    if kind is None:
        return None
    detail = text.split(": ", 1)[-1] if kind in ("damaged", "disk") else ""
    return StoreTrouble(kind, db_path, sentence(kind, db_path, detail))


def runs_of_this_process(db_path: str | os.PathLike[str], since: float) -> list[tuple[int, str, str]]:
    """(id, title, status) of the runs this process started executing at or after `since`
    (time.time()): what the CLI says after Ctrl+C. Read-only; [] when there is no database."""
    from datetime import datetime, timezone

    from patron_tui.store.identity import host_name

    path = Path(db_path)
    if not path.is_file():
        return []
    stamp = datetime.fromtimestamp(since - 1, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=2)
    try:
        return [(r[0], r[1], r[2]) for r in conn.execute(
            "SELECT id, title, status FROM runs WHERE owner_host = ? AND owner_pid = ? "
            "AND started_at >= ? ORDER BY id", (host_name(), os.getpid(), stamp))]
    finally:
        conn.close()
