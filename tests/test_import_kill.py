"""An import killed with SIGKILL mid-write leaves the database exactly as it was,
and the next start marks the run interrupted."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patron_tui.runs import RunEngine
from patron_tui.store import ChangesetWriter, Store, runlog

from .conftest import add_patrons, allow_login

ROWS = 60_000


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (any of its threads may have started them)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def patrons_dump(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM patrons ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("process", ["never", "always"], ids=["threads", "mapping-process"])
def test_sigkill_mid_import_keeps_the_database_and_marks_the_run_interrupted(tmp_path, process):
    store = Store.create(tmp_path / "district.db", operator="tester")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("sites", {"code": "HS", "name": "High School"})
    conn.close()
    add_patrons(store, [{"barcode": f"OLD{i}", "district_id": f"OLD{i}", "site": "HS",
                         "last_name": f"Old{i}", "first_name": "Pat"} for i in range(50)])
    allow_login(store)   # the CLI child acts as the login: importing needs "manage patrons"
    before = patrons_dump(store.path)

    csv_path = tmp_path / "big.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as f:
        f.write("Student ID,Student Barcode,Last Name,First Name,School\n")
        for i in range(ROWS):
            f.write(f"S{i:06d},B{i:06d},Last{i},First{i},HS\n")
    props = tmp_path / "big.properties"
    props.write_text(
        "encoding=utf-8\ndelimiter=,\nheader=true\nmatch=district_id\n"
        "field.district_id=Student ID\nfield.barcode=Student Barcode\nfield.last_name=Last Name\n"
        "field.first_name=First Name\nfield.site=School\nrequired=barcode,last_name,site\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "patron_tui", "import", str(csv_path), "--properties", str(props),
         "--db", str(store.path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PATRON_TUI_IMPORT_PROCESS": process},
    )
    added = 0
    deadline = time.monotonic() + 120
    try:
        # the import reports each added patron while its one transaction is still open
        for line in proc.stdout:
            if " added " in line:
                added += 1
            if added >= 2_000 or time.monotonic() > deadline:
                break
        assert added >= 2_000, "the import never got to writing"
        mappers = _children(proc.pid)
        assert bool(mappers) == (process == "always"), mappers
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # the mapping process finds its pipe closed and ends (no orphan reading on)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in mappers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in mappers)

    check = sqlite3.connect(store.path)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert check.execute("SELECT count(*) FROM change_journal WHERE run_id IS NOT NULL").fetchone()[0] == 0
    finally:
        check.close()
    assert patrons_dump(store.path) == before

    engine = RunEngine(store)
    try:
        assert len(engine.interrupted_on_start) == 1
        run_id = engine.interrupted_on_start[0]
    finally:
        engine.shutdown()
    conn = store.connect()
    try:
        run = runlog.get_run(conn, run_id)
    finally:
        conn.close()
    assert run["kind"] == "import" and run["status"] == "interrupted"
