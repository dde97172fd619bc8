"""Bad days (issue 14 item 10): a busy, read-only or full database, one from a newer
patron-tui, `backup` of a damaged one, a statement nested 400 deep, Ctrl+C during an import.
Each, run as a real `patron-tui` process, says ONE sentence naming the file and what to do,
exits with its documented code (cli_common.EXIT_TABLE, README "Exit codes"), shows no
traceback, and leaves the district's data as it was.

Nothing here waits on a clock: the busy database is a write lock this test holds (in another
process) and releases; the full disk is `PRAGMA max_page_count` ($PATRON_TUI_MAX_PAGES);
Ctrl+C reaches the import while it is stopped at a test point (patron_tui/testpoints.py) inside
its write transaction, and the test lets it go on once the CLI said it heard Ctrl+C.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from patron_tui.cli_common import (EXIT_BUSY, EXIT_CANNOT_WRITE, EXIT_INTERRUPTED, EXIT_REFUSED,
                                   EXIT_UNEXPECTED, EXIT_UNUSABLE)
from patron_tui.store import SCHEMA_VERSION
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.patrons import PatronDetailScreen

from tests.conftest import allow_login, district, patron_where
from tests.jobs_helpers import write_import
from tests.pilot import wait_until

PATRONS = [{"barcode": f"P{i:03d}", "district_id": f"D{i:03d}", "site": "HS", "last_name": f"Last{i}",
            "first_name": "Pat", "grade": "5"} for i in range(40)]

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def write_lock_held(db: Path):
    """Another process holds the database's write lock (BEGIN IMMEDIATE) until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def without_root_powers() -> list[str]:
    """A prefix that runs a command without the powers that let root write a read-only file
    (as root: the same uid without CAP_DAC_OVERRIDE/CAP_FOWNER); nothing for anyone else."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only file is writable for root")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def data_of(db: Path) -> str:
    """A digest of every table but the run log (a failed run records that it failed)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT IN ('runs', 'run_messages') ORDER BY name")]
        for t in tables:
            for row in sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{t}"')):
                digest.update(f"{t}{row}".encode())
        return digest.hexdigest()
    finally:
        conn.close()


@dataclass
class Day:
    """One bad day: the command, its surroundings, and what it must say."""
    db: Path
    argv: list[str]
    says: list[str]
    code: int
    env: dict[str, str] = field(default_factory=dict)
    prefix: list[str] = field(default_factory=list)
    around: Callable[[], object] = nullcontext
    #: while the command runs: interact with it; returns the stderr it read
    drive: Callable[[subprocess.Popen], str] | None = None
    pass_fds: tuple[int, ...] = ()
    new_session: bool = False     # its own process group (a terminal's Ctrl+C reaches it all)
    close_after_start: tuple[int, ...] = ()
    compare: bool = True          # the data must be as before
    lines: int = 1                # stderr lines at most
    lock_down: Callable[[], None] = lambda: None   # after the data are noted, before the command
    after: Callable[[], None] = lambda: None


def _district(tmp_path: Path, folder: str = "") -> Path:
    db = tmp_path / folder / "district.db" if folder else tmp_path / "district.db"
    store = district(db, PATRONS)
    allow_login(store)   # the CLI child acts as this login: a district administrator
    return db


def busy_import(tmp_path: Path) -> Day:
    db = _district(tmp_path)
    csv_path, props = write_import(tmp_path, ["N1,NB1,New,Pat,HS"])
    return Day(db, ["import", str(csv_path), "--properties", str(props), "--db", str(db)],
               says=["the database is busy", str(db), "nothing was changed", "try again"], code=EXIT_BUSY,
               env={"PATRON_TUI_BUSY_TIMEOUT_MS": "200"}, around=lambda: write_lock_held(db))


def readonly_file(tmp_path: Path) -> Day:
    db = _district(tmp_path)
    prefix = without_root_powers()
    db.chmod(0o444)
    return Day(db, ["protect", "P001", "--db", str(db)], prefix=prefix,
               says=[f"{db} cannot be written", "read-only", "nothing was changed", "writable"],
               code=EXIT_CANNOT_WRITE, after=lambda: db.chmod(0o644))


def readonly_folder(tmp_path: Path) -> Day:
    db = _district(tmp_path, "ro")
    prefix = without_root_powers()

    def lock_down() -> None:
        conn = sqlite3.connect(db)   # the last connection to close folds the WAL in and removes it
        conn.execute("PRAGMA user_version")
        conn.close()
        assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
        db.parent.chmod(0o555)   # the -wal and -shm a writer needs cannot be made

    return Day(db, ["protect", "P001", "--db", str(db)], prefix=prefix, lock_down=lock_down,
               says=[f"{db} cannot be written", "read-only", "nothing was changed", "writable"],
               code=EXIT_CANNOT_WRITE, after=lambda: db.parent.chmod(0o755))


def full_disk_during_a_utility(tmp_path: Path) -> Day:
    db = _district(tmp_path)
    return Day(db, ["utility", "add-patron-notes", "--query", "", "--note", "x" * 400, "--db", str(db)],
               env={"PATRON_TUI_MAX_PAGES": "1"},   # never more pages than it has: a full disk
               says=["Add Patron Notes did not run", f"the disk holding {db} is full",
                     "nothing was changed", "free some space"], code=EXIT_CANNOT_WRITE)


def full_disk_during_an_import(tmp_path: Path) -> Day:
    db = _district(tmp_path)
    csv_path, props = write_import(tmp_path, [f"N{i},NB{i},New{i},Pat,HS" for i in range(500)])
    return Day(db, ["import", str(csv_path), "--properties", str(props), "--db", str(db)],
               env={"PATRON_TUI_MAX_PAGES": "1", "PATRON_TUI_IMPORT_PROCESS": "never"},
               says=[f"the disk holding {db} is full", "nothing was changed", "free some space"],
               code=EXIT_CANNOT_WRITE)


def newer_schema(tmp_path: Path) -> Day:
    db = _district(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    return Day(db, ["query", "", "--count", "--db", str(db)],
               says=[f"{db} was written by a newer patron-tui (schema 99, this one knows "
                     f"{SCHEMA_VERSION}): upgrade patron-tui"], code=EXIT_UNUSABLE)


def backup_of_a_damaged_database(tmp_path: Path) -> Day:
    db = _district(tmp_path)
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as f:   # pages 4 and 5 become garbage: the database is damaged
        f.seek(page * 3)
        f.write(b"\xde\xad" * page)
    target = tmp_path / "copy.db"

    def after() -> None:
        assert not target.exists() and not Path(f"{target}.part").exists()

    return Day(db, ["backup", str(target), "--db", str(db)], says=[str(db), "is damaged", "restore"],
               code=EXIT_UNUSABLE, compare=False, after=after)


def statement_nested_400_deep(tmp_path: Path) -> Day:
    db = _district(tmp_path)
    statement = "(" * 400 + 'grade = "5"' + ")" * 400
    return Day(db, ["query", statement, "--count", "--db", str(db)],
               says=["bad search statement", "nested too deeply", "at most 50"], code=EXIT_REFUSED,
               lines=4)   # the statement, a caret under the "(" too deep, the sentence


def ctrl_c_during_an_import(tmp_path: Path) -> Day:
    return _ctrl_c(tmp_path, process="never")


def ctrl_c_during_an_import_with_its_mapping_process(tmp_path: Path) -> Day:
    """As a terminal does it: SIGINT to the whole process group, the mapping process too."""
    return _ctrl_c(tmp_path, process="always")


def _ctrl_c(tmp_path: Path, *, process: str) -> Day:
    db = _district(tmp_path)
    rows = ["N0,NB0,New0,Pat,NOWHERE"] + [f"N{i},NB{i},New{i},Pat,HS" for i in range(1, 2000)]
    csv_path, props = write_import(tmp_path, rows)
    reached_r, reached_w = os.pipe()
    go_r, go_w = os.pipe()

    def drive(proc: subprocess.Popen) -> str:
        try:
            # the import printed a message and stopped there, inside its write transaction
            assert os.read(reached_r, 64) == b"cli-message\n", "the import never got to writing"
            if process == "always":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGINT)
            heard = proc.stderr.readline()   # the CLI says at once that it stops
            assert "Ctrl+C" in heard, heard
        finally:
            os.close(go_w)   # let the import go on: it finds itself cancelled
            os.close(reached_r)
        return heard

    def after() -> None:
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("SELECT status FROM runs WHERE kind = 'import'").fetchall() == [("cancelled",)]
        finally:
            conn.close()

    return Day(db, ["import", str(csv_path), "--properties", str(props), "--db", str(db)],
               env={"PATRON_TUI_PAUSE_AT": "cli-message", "PATRON_TUI_PAUSE_FDS": f"{reached_w},{go_r}",
                    "PATRON_TUI_IMPORT_PROCESS": process},
               pass_fds=(reached_w, go_r), new_session=process == "always", close_after_start=(reached_w, go_r), drive=drive,
               says=["interrupted (Ctrl+C)", "was stopped", "nothing it was writing was kept", str(db),
                     "as it was"], code=EXIT_INTERRUPTED, lines=2, after=after)


BAD_DAYS = [busy_import, readonly_file, readonly_folder, full_disk_during_a_utility,
            full_disk_during_an_import, newer_schema,
            backup_of_a_damaged_database, statement_nested_400_deep, ctrl_c_during_an_import,
            ctrl_c_during_an_import_with_its_mapping_process]


@pytest.mark.parametrize("bad_day", BAD_DAYS, ids=[f.__name__ for f in BAD_DAYS])
def test_a_bad_day_is_one_sentence_with_the_file_and_its_exit_code(tmp_path, bad_day):
    day = bad_day(tmp_path)
    before = data_of(day.db) if day.compare else None
    day.lock_down()
    env = {**os.environ, "PATRON_TUI_LOG_DIR": str(tmp_path / "log"), **day.env}
    out = open(tmp_path / "stdout.txt", "w")   # a file: a run's many lines never fill a pipe
    try:
        with day.around():
            proc = subprocess.Popen([*day.prefix, sys.executable, "-m", "patron_tui", *day.argv], env=env,
                                    stdout=out, stderr=subprocess.PIPE, text=True, pass_fds=day.pass_fds,
                                    cwd=tmp_path, start_new_session=day.new_session)
            for fd in day.close_after_start:
                os.close(fd)
            try:
                err = day.drive(proc) if day.drive else ""
                err += proc.stderr.read()
            finally:
                if proc.poll() is None and day.drive is not None:
                    proc.wait(timeout=120)
            code = proc.wait(timeout=120)
    finally:
        out.close()
        day.after()
    assert "Traceback" not in err, err
    assert code == day.code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= day.lines, err
    for words in day.says:
        assert words in err, (words, err)
    if before is not None:
        assert data_of(day.db) == before   # nothing was changed, as it says


def test_an_unexpected_error_is_one_sentence_and_the_details_go_to_the_log(tmp_path, monkeypatch, capsys):
    from patron_tui import cli

    db = _district(tmp_path)

    def broken(*_a, **_k):
        raise KeyError("a fault of patron-tui")

    monkeypatch.setattr(cli, "_cmd_sets", broken)
    monkeypatch.setenv("PATRON_TUI_LOG_DIR", str(tmp_path / "log"))
    assert cli.main(["sets", "--db", str(db)]) == EXIT_UNEXPECTED
    err = capsys.readouterr().err
    log = tmp_path / "log" / "errors.log"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "unexpected error" in err and str(log) in err
    assert "Traceback" in log.read_text() and "a fault of patron-tui" in log.read_text()


def test_help_lists_the_exit_codes(capsys):
    from patron_tui import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code in (0, 1, 2, 3, 4, 5, 70, 130):
        assert f"\n  {code} " in out, out


async def test_protect_while_another_process_holds_the_write_lock_says_so(tmp_path, monkeypatch):
    store = district(tmp_path / "district.db", PATRONS[:2])
    pid = patron_where(store, barcode="P001")["id"]
    monkeypatch.setenv("PATRON_TUI_BUSY_TIMEOUT_MS", "100")
    app = make_app(store.path, operator="tester")

    def said() -> str:
        return "\n".join(n.message for n in app._notifications if "busy" in n.message)

    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(PatronDetailScreen(pid))
        await wait_until(app, pilot, lambda: isinstance(app.screen, PatronDetailScreen)
                         and app.screen.detail is not None)
        with write_lock_held(store.path):
            await pilot.press("p")
            await wait_until(app, pilot, lambda: said() != "", why=lambda: "Protect said nothing")
        message = said()
        assert message.startswith(f"Patron {pid} was not changed: the database is busy")
        assert str(store.path) in message and "try again" in message
        assert any(line.level == "error" and line.text == message for line in app.log_buffer.lines)
    assert patron_where(store, barcode="P001")["protected"] == 0
