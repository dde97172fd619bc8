"""Backups of the patron database, and restoring one.

- `backup(store, path=None)`: a consistent copy made with `VACUUM INTO` (a read transaction:
  other consoles, runs and the scheduler keep writing meanwhile; the copy is the database as
  of the moment the backup began). Default path `<db dir>/backups/<db stem>-YYYYMMDD-HHMMSS.db`;
  an existing file is never overwritten.
- `restore(store, path)`: checks the copy (`PRAGMA integrity_check`, a patron_tui database of a
  schema version this code knows), then puts it in place atomically: written beside the
  database, fsynced, renamed over it; the replaced database stays as
  `<db>.before-restore-<stamp>`. Refused while a run is running, or while any other process
  has the database open (replacing a SQLite file under open connections corrupts it).
- `maybe_backup(store_or_conn, reason)`: the hook destructive runs call first (the
  Inactivation/Deletion rules, Remove Patrons): a backup when the setting
  `backup_before_destructive` is on, else nothing.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from patron_tui.store import Store
from patron_tui.store import runlog
from patron_tui.store.schema import SCHEMA_VERSION

__all__ = ["BackupError", "RestoreResult", "backup", "check_copy", "default_backup_path",
           "maybe_backup", "restore", "SETTING"]

SETTING = "backup_before_destructive"
#: tables every patron_tui database has (a copy without them is something else)
_REQUIRED_TABLES = {"patrons", "operators", "settings", "runs", "change_journal", "sites"}
RESTORE_KIND = "restore"


class BackupError(RuntimeError):
    """A backup or restore that could not be done; str(exc) is a sentence saying why. `kind`:
    the bad day behind it when there is one (store/trouble.py: "damaged", "full", "readonly",
    "busy", ...), for the CLI's exit code."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def default_backup_path(db_path: Path, folder: Path | None = None) -> Path:
    """`<db dir>/backups/<stem>-YYYYMMDD-HHMMSS.db` (or in `folder`), with -2, -3 ... when that
    name is taken."""
    folder = folder if folder is not None else db_path.parent / "backups"
    base = f"{db_path.stem}-{_stamp()}"
    candidate = folder / f"{base}.db"
    n = 2
    while candidate.exists():
        candidate = folder / f"{base}-{n}.db"
        n += 1
    return candidate


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _db_path_of(conn: sqlite3.Connection) -> Path:
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main" and row[2]:
            return Path(row[2])
    raise BackupError("this connection has no database file to back up")


def _part_of(target: Path) -> Path:
    """Where a backup to `target` is written until it is whole: `<target>.part`."""
    return target.with_name(target.name + ".part")


def _exists_error(target: Path) -> BackupError:
    return BackupError(f"{target}: a file of that name exists already; a backup never overwrites one")


def _vacuum_into(conn: sqlite3.Connection, db_path: Path, target: Path) -> Path:
    """Copy the database to `target`: written to `<target>.part`, fsynced, then renamed to
    `target` (never over an existing file), so `target` is either a whole backup or absent;
    on any failure the .part is removed. A .part left by a killed backup is replaced."""
    from patron_tui import testpoints
    from patron_tui.store.trouble import explain

    if conn.in_transaction:
        raise BackupError("a backup cannot be taken inside a write transaction")
    part = _part_of(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise _exists_error(target)
        part.unlink(missing_ok=True)   # left by a backup that was killed: never whole, never in the way
        conn.execute("VACUUM INTO ?", (str(part),))
        try:   # the copy holds what the database holds (password hashes): the same permissions
            os.chmod(part, stat.S_IMODE(db_path.stat().st_mode))
        except OSError:
            pass
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        testpoints.reach("backup-written")
        _rename_new(part, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        try:
            part.unlink()
        except OSError:
            pass
        if isinstance(exc, BackupError) or not isinstance(exc, (sqlite3.Error, OSError)):
            raise
        # the database's own trouble (damaged, busy) names the database; the rest the target
        trouble = explain(exc, db_path)
        if trouble is not None and trouble.kind in ("damaged", "busy"):
            raise BackupError(f"no backup was made: {trouble}", trouble.kind) from None
        trouble = explain(exc, target)
        if trouble is not None and trouble.kind in ("full", "readonly", "disk"):
            raise BackupError(f"no backup was made: {trouble}", trouble.kind) from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BackupError(f"{target}: the backup could not be written ({reason}); nothing was "
                          f"left there") from None
    return target


def _rename_new(part: Path, target: Path) -> None:
    """Rename `part` to `target` atomically, refusing to replace an existing `target` (a hard
    link fails on an existing name; where links are not supported, a checked rename)."""
    try:
        os.link(part, target)
    except FileExistsError:
        raise _exists_error(target) from None
    except OSError:
        if target.exists():
            raise _exists_error(target) from None
        os.rename(part, target)
        return
    part.unlink()


def backup(store: Store, path: str | os.PathLike[str] | None = None) -> Path:
    """Write a consistent copy of the database (see the module doc); returns its path."""
    db_path = Path(store.path)
    target = Path(path).expanduser() if path is not None else default_backup_path(db_path)
    if target.is_dir():
        target = default_backup_path(db_path, target)
    if target.resolve() == db_path.resolve():
        raise BackupError(f"{target}: that is the database itself")
    if target.exists():
        raise BackupError(f"{target}: a file of that name exists already; a backup never overwrites one")
    conn = store.connect()
    try:
        return _vacuum_into(conn, db_path, target)
    finally:
        conn.close()


def _setting_on(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (SETTING,)).fetchone()
    return row is not None and str(row[0]).strip().lower() in ("on", "yes", "true", "1")


def maybe_backup(store_or_conn: Store | sqlite3.Connection, reason: str = "") -> Path | None:
    """Before a destructive run (`reason` says which): a backup when the setting
    `backup_before_destructive` is on; returns its path, or None when the setting is off.
    BackupError when the setting asks for a backup and it cannot be made (the caller then
    must not go on with the destructive step)."""
    if isinstance(store_or_conn, Store):
        conn = store_or_conn.connect()
        try:
            if not _setting_on(conn):
                return None
            return _vacuum_into(conn, Path(store_or_conn.path), default_backup_path(Path(store_or_conn.path)))
        finally:
            conn.close()
    conn = store_or_conn
    if not _setting_on(conn):
        return None
    db_path = _db_path_of(conn)
    try:
        return _vacuum_into(conn, db_path, default_backup_path(db_path))
    except BackupError as exc:
        raise BackupError(f"the backup before {reason or 'this run'} failed: {exc}") from None


# -- restore ---------------------------------------------------------------------------------

def check_copy(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that `path` is a sound patron_tui database this code can open: integrity, the
    tables, the schema version. Returns {"schema_version", "patrons", "operators"}; BackupError
    with a sentence otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: cannot be opened ({exc})") from None
    try:
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path}: not a SQLite database, or a damaged one ({exc})") from None
        if result != ["ok"]:
            raise BackupError(f"{path}: the integrity check failed ({'; '.join(result[:5])}); "
                              f"nothing was restored")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = _REQUIRED_TABLES - tables
        if missing:
            raise BackupError(f"{path}: not a patron_tui database (no {', '.join(sorted(missing))} "
                              f"table); nothing was restored")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if not 1 <= version <= SCHEMA_VERSION:
            raise BackupError(f"{path}: schema version {version}, and this patron-tui knows versions "
                              f"1 to {SCHEMA_VERSION}; nothing was restored")
        return {"schema_version": version,
                "patrons": conn.execute("SELECT count(*) FROM patrons").fetchone()[0],
                "operators": conn.execute("SELECT count(*) FROM operators").fetchone()[0]}
    finally:
        conn.close()


class RestoreResult(dict):
    """{"restored": path, "from": copy, "before": the replaced database's new name,
    "schema_version", "patrons", "operators"}"""


def _exclusive(db_path: Path) -> sqlite3.Connection:
    """A connection holding the database exclusively (no other connection, in any process)."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 2000")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
    except sqlite3.OperationalError:
        conn.close()
        raise BackupError(
            f"{db_path} is open in another console, scheduler or program; close them first "
            f"(replacing a database under open connections would damage it); nothing was restored"
        ) from None
    return conn


def restore(store: Store, path: str | os.PathLike[str], *, operator: str | None = None) -> RestoreResult:
    """Put the copy at `path` in place of the store's database (see the module doc)."""
    source = Path(path).expanduser()
    db_path = Path(store.path)
    if source.resolve() == db_path.resolve():
        raise BackupError(f"{source}: that is the database itself")
    info = check_copy(source)
    conn = store.connect()
    try:
        runlog.mark_dead_runs_interrupted(conn)
        running = [r[0] for r in conn.execute("SELECT id FROM runs WHERE status = 'running' ORDER BY id")]
    finally:
        conn.close()
    if running:
        raise BackupError(f"run{'s' if len(running) > 1 else ''} {', '.join(map(str, running))} "
                          f"{'are' if len(running) > 1 else 'is'} running; a restore waits until "
                          f"no run is running (cancel it, or wait for it to end)")
    stamp = _stamp()
    before = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
    n = 2
    while before.exists():
        before = db_path.with_name(f"{db_path.name}.before-restore-{stamp}-{n}")
        n += 1
    tmp = db_path.with_name(f".{db_path.name}.restore-{stamp}.tmp")
    lock = _exclusive(db_path)
    try:
        busy, _, _ = lock.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        wal = Path(f"{db_path}-wal")
        if busy or (wal.exists() and wal.stat().st_size):
            raise BackupError(f"{db_path}: its write-ahead log could not be emptied; nothing was restored")
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, stat.S_IMODE(db_path.stat().st_mode))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.link(db_path, before)          # the replaced database keeps a name
            os.replace(tmp, db_path)          # atomic: the name always holds a whole database
            _fsync_dir(db_path.parent)
        except OSError as exc:
            raise BackupError(f"{db_path}: the restore failed ({exc.strerror or exc}); "
                              f"the database was not replaced") from None
        finally:
            if tmp.exists():
                tmp.unlink()
    finally:
        lock.close()
    # the restored database says that it was restored, and from where (bookkeeping, a run row)
    conn = store.connect()
    try:
        run_id = runlog.create_run(conn, kind=RESTORE_KIND, title=f"Restore from {source.name}",
                                   operator=operator or store.operator,
                                   params={"from": str(source), "before": str(before)})
        runlog.finish_run(conn, run_id, status="succeeded",
                          summary={"from": str(source), "before": str(before)})
    finally:
        conn.close()
    return RestoreResult(restored=str(db_path), **{"from": str(source)}, before=str(before),
                         run_id=run_id, **info)
