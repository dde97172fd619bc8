"""The console under a pseudo-terminal, an import started with the keyboard, then the SSH
session drops (SIGHUP, and the terminal's master side closes): the database is exactly as
it was and the console itself marked the run interrupted before it went."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import sqlite3
import struct
import sys
import termios
import threading
import time

from patron_tui.runs import RunEngine
from patron_tui.store import ChangesetWriter, Store, runlog

from .conftest import add_patrons, allow_login

ROWS = 300_000
_ESC = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def patrons_dump(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM patrons ORDER BY id").fetchall()
    finally:
        conn.close()


class Terminal:
    """The master side of the console's pseudo-terminal: everything it drew, as plain text."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.raw += chunk

    def text(self) -> str:
        with self.lock:
            data = bytes(self.raw)
        return _ESC.sub(b"", data).decode("utf-8", "replace")

    def settle(self, quiet: float = 0.3, timeout: float = 10) -> None:
        """Wait until the console has drawn nothing new for `quiet` seconds (it has taken
        every key sent so far)."""
        deadline = time.monotonic() + timeout
        size, since = len(self.raw), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if len(self.raw) != size:
                size, since = len(self.raw), time.monotonic()
            elif time.monotonic() - since >= quiet:
                return

    def mark(self) -> int:
        """Where the output is now: `wait_for(..., since=mark)` looks only at what came after."""
        return len(self.text())

    def wait_for(self, pattern: str, timeout: float = 60, since: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = None
            for found in re.finditer(pattern, self.text()[since:]):
                pass
            if found is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"the console never showed {pattern!r}; last screen text:\n{self.text()[-2000:]}")

    def type(self, keys: str | bytes) -> None:
        os.write(self.fd, keys.encode() if isinstance(keys, str) else keys)

    def press_until(self, keys: str, pattern: str, timeout: float = 60) -> re.Match:
        """Press `keys` until the console shows `pattern` (a console still starting up, or
        busy on a loaded machine, may not have taken the first press)."""
        deadline = time.monotonic() + timeout
        while True:
            self.type(keys)
            try:
                return self.wait_for(pattern, timeout=min(3.0, max(0.1, deadline - time.monotonic())))
            except AssertionError:
                if time.monotonic() > deadline:
                    raise


def _run_status(path, kind: str = "import") -> str | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT status FROM runs WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def _wait_exit(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the console did not exit after SIGHUP")


def test_sighup_mid_import_rolls_back_and_marks_the_run_interrupted(tmp_path):
    store = Store.create(tmp_path / "district.db", operator="tester")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("sites", {"code": "HS", "name": "High School"})
    conn.close()
    add_patrons(store, [{"barcode": f"OLD{i}", "district_id": f"S{i:06d}", "site": "HS",
                         "last_name": f"Old{i}", "first_name": "Pat"} for i in range(50)])
    allow_login(store)   # the console acts as the login: importing needs "manage patrons"
    before = patrons_dump(store.path)

    csv_path = tmp_path / "big.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as f:
        f.write("Student ID,Student Barcode,Last Name,First Name,School\n")
        f.writelines(f"S{i:06d},B{i:06d},Last{i},First{i},HS\n" for i in range(ROWS))
    (tmp_path / "big.csv.bak").write_text("", encoding="utf-8")   # see the typing below
    props = tmp_path / "big.properties"
    props.write_text(
        "encoding=utf-8\ndelimiter=,\nheader=true\nmatch=district_id\n"
        "field.district_id=Student ID\nfield.barcode=Student Barcode\nfield.last_name=Last Name\n"
        "field.first_name=First Name\nfield.site=School\nrequired=barcode,last_name,site\n",
        encoding="utf-8",
    )
    env = {**os.environ, "TERM": "xterm-256color", "PATRON_TUI_HANGUP_WAIT": "60",
           "PATRON_TUI_WORKERS": "2"}
    for name in list(env):   # the console as a person starts it, not as pytest's plugins left it
        if name.startswith(("TEXTUAL", "PYTEST")) or name in ("LINES", "COLUMNS"):
            del env[name]

    pid, master = pty.fork()
    if pid == 0:   # the console, on the pseudo-terminal's slave side
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            os.execve(sys.executable, [sys.executable, "-m", "patron_tui", "--db", str(store.path)], env)
        finally:
            os._exit(127)
    term = Terminal(master)
    closed = False
    try:
        term.wait_for(r"4 Jobs")
        term.press_until("4", r"Import a file")
        term.press_until("i", r"Fill the form")
        # The path field shows the file's completion while one types; with big.csv.bak beside
        # it, "big.csv.bak" shows only once the field holds exactly .../big.csv. A bound key
        # (Ctrl+U, Enter) may overtake typed text the console has not taken yet, so each step
        # waits for its effect before the next.
        for attempt in range(3):
            term.type("\x15")   # Ctrl+U: an empty field (a repeated "i" may have typed into it)
            term.settle()
            since = term.mark()
            term.type(str(csv_path))
            try:
                term.wait_for(r"big\.csv\.bak", since=since, timeout=15)
                break
            except AssertionError:
                if attempt == 2:
                    raise
        since = term.mark()
        term.type("\r")   # Enter: the file is checked, and its .properties filled in beside it
        term.wait_for(r"big\.properties", since=since)
        term.type("\x13")   # Ctrl+S: start the import
        # mid-import: the console shows records going by while its one transaction is open
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            m = term.wait_for(r"Run (\d+) running: ([\d,]+) records")
            if int(m.group(2).replace(",", "")) >= 5_000:
                break
            time.sleep(0.05)
        assert _run_status(store.path) == "running"
        run_id = int(m.group(1))

        os.kill(pid, signal.SIGHUP)   # the SSH session drops...
        os.close(master)              # ...and with it the terminal
        closed = True
        status = _wait_exit(pid, 120)
    finally:
        if not closed:
            os.close(master)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    assert os.WIFEXITED(status) or os.WIFSIGNALED(status)

    check = sqlite3.connect(store.path)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert check.execute("SELECT count(*) FROM change_journal WHERE run_id IS NOT NULL").fetchone()[0] == 0
    finally:
        check.close()
    assert patrons_dump(store.path) == before

    conn = store.connect()
    try:
        run = runlog.get_run(conn, run_id)
        codes = [m["code"] for m in runlog.messages(conn, run_id)]
    finally:
        conn.close()
    # marked by the console itself on its way out, not left for the next start to find
    assert run["kind"] == "import" and run["status"] == "interrupted", run
    assert "SIGHUP" in run["error"] and run["finished_at"]
    assert "interrupted" in codes
    engine = RunEngine(store)
    try:
        assert engine.interrupted_on_start == []
    finally:
        engine.shutdown()


async def test_closing_the_console_mid_run_rolls_back_and_marks_the_run_interrupted(small_store):
    """Ctrl+Q while a run writes: the run rolls back whole and is marked interrupted."""
    from patron_tui.ui.app import make_app

    before = patrons_dump(small_store.path)
    writing = threading.Event()

    def slow_rename(ctx):
        with ctx.writer() as w:
            for pid in [r[0] for r in ctx.conn.execute("SELECT id FROM patrons WHERE is_system = 0")]:
                w.update("patrons", pid, {"last_name": "Renamed"})
            writing.set()
            while True:   # until the console closes
                ctx.check_cancelled()
                time.sleep(0.01)

    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        handle = app.engine.start("test", "Rename everyone", slow_rename)
        deadline = time.monotonic() + 30
        while not writing.is_set() and time.monotonic() < deadline:
            await pilot.pause(0.02)
        assert writing.is_set(), handle.error
        await pilot.press("ctrl+q")
    assert handle.wait(30).value == "interrupted"
    assert patrons_dump(small_store.path) == before
    conn = small_store.connect()
    try:
        run = runlog.get_run(conn, handle.run_id)
    finally:
        conn.close()
    assert run["status"] == "interrupted" and "console was closed" in run["error"]
