"""Backups (VACUUM INTO while others write), checked atomic restores, and the
backup-before-destructive setting the Inactivation/Deletion rules obey."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from patron_tui.services.backup import BackupError, backup, check_copy, maybe_backup, restore
from patron_tui.store import ChangesetWriter, Store, runlog, utc_now

from .conftest import add_patrons, district
from .test_job_inactivation import RULES, backdate, rows, run
from .test_job_inactivation import setup as job_setup


def dump(path: Path, table: str = "patrons") -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path) -> Store:
    return district(tmp_path / "district.db", [
        {"barcode": f"P{i}", "district_id": f"D{i}", "site": "HS", "last_name": f"Last{i}"} for i in range(40)])


class WritingDuringBackup(Store):
    """A store whose backup connection lets another connection commit a write while the
    VACUUM INTO is in progress (from SQLite's progress handler: deterministic, no timing)."""

    writes: list[int]

    def connect(self) -> sqlite3.Connection:
        conn = super().connect()
        other = Store(self.path, operator="other").connect()
        other.execute("PRAGMA busy_timeout = 0")   # blocked even for a moment = a failure
        self.writes = []

        def write_once() -> int:
            if not self.writes:
                with ChangesetWriter(other, operator="other", run_id=None) as w:
                    now = utc_now()
                    self.writes.append(w.insert("patrons", {"barcode": "DURING", "site": "HS", "last_name": "During",
                                                            "created_at": now, "updated_at": now}))
            return 0

        conn.set_progress_handler(write_once, 200)
        return conn


def test_backup_is_consistent_while_another_connection_writes(store, tmp_path):
    before = dump(store.path)
    writing = WritingDuringBackup(store.path, operator="tester")
    path = backup(writing)
    assert writing.writes, "the other connection could not write during the backup"
    assert path.parent == tmp_path / "backups" and path.name.startswith("district-") and path.suffix == ".db"
    assert check_copy(path)["patrons"] in (len(before), len(before) + 1)
    copied = dump(path)
    assert copied in (before, dump(store.path))   # a snapshot: all of the write or none of it
    assert [r for r in dump(store.path) if r[1] == "DURING"]   # the write is in the database


def test_backup_never_overwrites(store, tmp_path):
    first, second = backup(store), backup(store)
    assert first != second and first.is_file() and second.is_file()
    target = tmp_path / "mine.db"
    target.write_bytes(b"keep me")
    with pytest.raises(BackupError, match="exists already; a backup never overwrites one"):
        backup(store, target)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(BackupError, match="the database itself"):
        backup(store, store.path)
    (tmp_path / "folder").mkdir()
    into = backup(store, tmp_path / "folder")   # a folder: a default name inside it
    assert into.parent == tmp_path / "folder"


def test_restore_puts_the_copy_in_place_and_keeps_the_replaced_database(store, tmp_path):
    saved = dump(store.path)
    copy = backup(store, tmp_path / "copy.db")
    add_patrons(store, [{"barcode": "LATER", "site": "HS", "last_name": "Later"}])
    changed = dump(store.path)
    result = restore(store, copy)
    assert dump(store.path) == saved
    before = Path(result["before"])
    assert before.name.startswith("district.db.before-restore-") and dump(before) == changed
    assert result["patrons"] == len(saved)
    conn = store.connect()   # usable, and it says it was restored
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run = runlog.get_run(conn, result["run_id"])
        assert run["kind"] == "restore" and run["status"] == "succeeded"
        assert run["params"]["from"] == str(copy)
    finally:
        conn.close()
    assert not list(tmp_path.glob(".district.db.restore-*"))   # nothing left beside it


def _refused(store: Store, copy: Path, match: str) -> None:
    saved = dump(store.path)
    with pytest.raises(BackupError, match=match):
        restore(store, copy)
    assert dump(store.path) == saved
    assert not list(store.path.parent.glob("district.db.before-restore-*"))


def test_restore_refuses_damaged_foreign_and_newer_copies(store, tmp_path):
    good = backup(store, tmp_path / "good.db")
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    page = 4096
    for p in range(2, len(data) // page):   # scribble over the middle of every page but the first
        data[p * page + 100: p * page + 400] = os.urandom(300)
    damaged.write_bytes(bytes(data))
    _refused(store, damaged, "damaged|integrity check failed|not a SQLite database")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    _refused(store, garbage, "not a SQLite database")
    foreign = tmp_path / "foreign.db"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE t (x)")
    c.close()
    _refused(store, foreign, "not a patron_tui database")
    newer = tmp_path / "newer.db"
    shutil.copyfile(good, newer)
    c = sqlite3.connect(newer)
    c.execute("PRAGMA user_version = 999")
    c.close()
    _refused(store, newer, "schema version 999")
    _refused(store, tmp_path / "missing.db", "no such file")


def test_restore_is_refused_while_a_run_runs_or_another_program_has_the_database_open(store, tmp_path):
    copy = backup(store, tmp_path / "copy.db")
    conn = store.connect()
    run_id = runlog.create_run(conn, kind="import", title="Import", operator="tester")
    runlog.mark_running(conn, run_id, pid=os.getpid())
    try:
        _refused(store, copy, f"run {run_id} is running")
        runlog.finish_run(conn, run_id, status="succeeded")
        _refused(store, copy, "open in another console, scheduler or program")   # `conn` is open
    finally:
        conn.close()
    restore(store, copy)


def test_maybe_backup_follows_the_setting(store, tmp_path):
    assert maybe_backup(store, "a test") is None
    assert not (tmp_path / "backups").exists()
    conn = store.connect()
    try:
        assert conn.execute("SELECT value FROM settings WHERE key = 'backup_before_destructive'").fetchone()[0] == "off"
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.update("settings", "backup_before_destructive", {"value": "on"})
        taken = maybe_backup(conn, "a test")
    finally:
        conn.close()
    assert taken is not None and taken.parent == tmp_path / "backups"
    assert check_copy(taken)["patrons"] == len(dump(store.path))
    assert maybe_backup(store, "a test") not in (None, taken)


def test_migration_adds_the_setting_to_an_existing_database_only(store, tmp_path):
    from patron_tui.store.schema import MIGRATIONS

    [m7] = [m for m in MIGRATIONS if m.version == 7]
    conn = store.connect()
    try:   # a database from before migration 7
        conn.execute("DELETE FROM settings WHERE key = 'backup_before_destructive'")
        for statement in m7.statements:
            conn.execute(statement)
        assert conn.execute("SELECT value FROM settings WHERE key = 'backup_before_destructive'").fetchone()[0] == "off"
    finally:
        conn.close()
    fresh = sqlite3.connect(tmp_path / "fresh.db")   # an empty settings table stays empty (seeding fills it)
    fresh.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for statement in m7.statements:
        fresh.execute(statement)
    assert fresh.execute("SELECT count(*) FROM settings").fetchone()[0] == 0
    fresh.close()


def test_inactivation_rules_take_a_backup_first_when_the_setting_asks(tmp_path):
    store, csv_path = job_setup(tmp_path, RULES)
    run(store, csv_path, rows())
    backdate(store)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "backup_before_destructive", {"value": "on"})
    conn.close()
    before_rules = dump(store.path)
    h = run(store, csv_path, rows(leave={"HS7"}))
    assert h.status.value == "succeeded", h.error
    assert h.summary["inactivation"]["inactivated"] == 1
    [taken] = list((tmp_path / "backups").glob("district-*.db"))
    conn = store.connect()
    try:
        (text,) = conn.execute("SELECT text FROM run_messages WHERE run_id = ? AND code = 'backup'",
                               (h.run_id,)).fetchone()
    finally:
        conn.close()
    assert str(taken) in text
    # the copy holds the patrons as the import left them, before the rules inactivated HS7
    status = {r[0]: r[1] for r in sqlite3.connect(taken).execute("SELECT district_id, status FROM patrons")}
    assert status["HS7"] == "Active"
    assert len(before_rules) == len(status)
