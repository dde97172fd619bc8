"""Issue 14, item 4: a run killed at any moment around its commit is either not applied and
`interrupted`, or applied and `succeeded` with its summary (counts matching the data).

Each case runs a real CLI child (an import, a batch update, a utility, an undo) that SIGKILLs
itself at a named point (PATRON_TUI_KILL_AT, patron_tui/testpoints.py): just before COMMIT (the run's
outcome already written inside the transaction), just after COMMIT, before the engine's
finish_run, after it. Then, as the next process to start would, the dead run is marked, and the
run row and the data must agree. A job run with inactivation rules (two transactions) killed
between its import's commit and its rules says exactly that.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from patron_tui.store import Store, runlog

from . import batch_helpers
from .conftest import allow_login
from .test_import_kill import patrons_dump

POINTS = ("commit", "committed", "finish", "finished")
CHILD_TIMEOUT = 120   # a bound on each child, never a sleep


def _dump(db: Path) -> dict[str, list[tuple]]:
    """The district's data (not the run bookkeeping): patrons and their profiles."""
    conn = sqlite3.connect(db)
    try:
        return {"patrons": patrons_dump(db),
                "profiles": conn.execute("SELECT * FROM patron_profiles ORDER BY id").fetchall()}
    finally:
        conn.close()


def _copy(src: Path, dst: Path) -> Path:
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()
    return dst


def _child(db: Path, argv: list[str], kill_at: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATRON_TUI_WORKERS": "1"}
    env.pop("PATRON_TUI_KILL_AT", None)
    if kill_at:
        env["PATRON_TUI_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "patron_tui", *argv, "--db", str(db)], env=env,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT)


def _last_run(db: Path) -> dict:
    conn = Store(db).connect()
    try:
        runlog.mark_dead_runs_interrupted(conn)   # what the next process to start does
        rid = conn.execute("SELECT max(id) FROM runs").fetchone()[0]
        return runlog.get_run(conn, rid)
    finally:
        conn.close()


# -- the district and the operations -------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The talking-book district of the batch tests (10 patrons, DB profiles), the login an
    operator; plus an import file and its properties."""
    root = tmp_path_factory.mktemp("truth")
    store = batch_helpers.build(root / "base.db")
    allow_login(store)
    lines = ["Student ID,Student Barcode,Last Name,First Name,School,Grade"]
    lines += [f"D{i:02d},P{i:02d},Renamed{i},First{i},HS,5" for i in range(1, 5)]      # 4 updated
    lines += [f"N{i:02d},NEW{i:02d},New{i},Pat,HS,6" for i in range(1, 7)]             # 6 added
    (root / "in.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "in.properties").write_text(
        "encoding=utf-8\ndelimiter=,\nheader=true\nmatch=district_id\n"
        "field.district_id=Student ID\nfield.barcode=Student Barcode\nfield.last_name=Last Name\n"
        "field.first_name=First Name\nfield.site=School\nfield.grade=Grade\nrequired=barcode,last_name,site\n",
        encoding="utf-8")
    return root / "base.db"


def _changed_patrons(before: dict, after: dict) -> tuple[int, int]:
    """(patrons added, patrons changed) between two dumps."""
    old = {r[0]: r for r in before["patrons"]}
    new = {r[0]: r for r in after["patrons"]}
    return len(new.keys() - old.keys()), sum(1 for k in old.keys() & new.keys() if old[k] != new[k])


def _changed_profiles(before: dict, after: dict) -> tuple[int, int]:
    old = {r[0]: r for r in before["profiles"]}
    new = {r[0]: r for r in after["profiles"]}
    return len(new.keys() - old.keys()), sum(1 for k in old.keys() & new.keys() if old[k] != new[k])


def _import(root: Path) -> list[str]:
    return ["import", str(root / "in.csv"), "--properties", str(root / "in.properties")]


def _check_import(s: dict, before: dict, after: dict) -> None:
    added, changed = _changed_patrons(before, after)
    assert (s["added"], s["updated"], s["read"]) == (added, changed, 10) == (6, 4, 10)


_BATCH = ["batch-update", "--query", "", "--medium", "DB", "--max-items-out", "11"]


def _check_batch(s: dict, before: dict, after: dict) -> None:
    created, updated = _changed_profiles(before, after)
    assert (s["profiles_created"], s["profiles_updated"]) == (created, updated)
    assert created == 2 and updated == 8   # P09, P10 get a DB profile; P01..P08 change


_UTILITY = ["utility", "change-patron-status", "--grade", "5", "--new-status", "Inactive", "--yes"]


def _check_utility(s: dict, before: dict, after: dict) -> None:
    added, changed = _changed_patrons(before, after)
    assert (added, s["changed"]) == (0, changed) and changed == 6


def _check_undo(s: dict, before: dict, after: dict) -> None:
    added, changed = _changed_patrons(before, after)
    assert (added, s["restored"]) == (0, changed) and changed == 6


CASES = {
    "import": (_import, _check_import, "import"),
    "batch": (lambda root: _BATCH, _check_batch, "batch_update"),
    "utility": (lambda root: _UTILITY, _check_utility, "utility"),
    "undo": (None, _check_undo, "undo"),
}


@pytest.fixture(scope="module")
def undo_base(base: Path) -> tuple[Path, int]:
    """The district after a status change (run to its end), and that run's id: what the undo
    cases undo."""
    db = _copy(base, base.with_name("undo_base.db"))
    done = _child(db, _UTILITY, None)
    assert done.returncode == 0, done.stderr
    run = _last_run(db)
    assert run["status"] == "succeeded" and run["summary"]["changed"] == 6
    return db, run["id"]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_run_killed_around_its_commit_is_either_not_applied_or_succeeded_with_its_summary(
        case, point, base, undo_base, tmp_path):
    argv_of, check, kind = CASES[case]
    if case == "undo":
        src, undone = undo_base
        argv = ["undo", str(undone)]
    else:
        src, argv = base, argv_of(base.parent)
    db = _copy(src, tmp_path / "district.db")
    before = _dump(db)

    proc = _child(db, argv, point)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr

    run = _last_run(db)
    after = _dump(db)
    assert run["kind"] == kind
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        journalled = conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ?", (run["id"],)).fetchone()[0]
    finally:
        conn.close()
    if run["status"] == "interrupted":
        assert after == before and journalled == 0, "interrupted, yet its changes are in the database"
    else:
        assert run["status"] == "succeeded", run
        assert after != before and journalled > 0
        check(run["summary"], before, after)
        assert run["error"] is None and run["finished_at"]
        assert set(run["summary"]["messages"]) == {"info", "warning", "skipped", "error"}
    # killed before its COMMIT: not applied; from the COMMIT on: applied and succeeded
    assert run["status"] == ("interrupted" if point == "commit" else "succeeded"), run


# -- a run of several transactions: a job's import, then its inactivation rules ------------------------

@pytest.mark.parametrize("point", ["committed:1", "commit:2", "committed:2"])
def test_a_job_killed_between_its_import_and_its_rules_says_the_import_was_committed_and_the_rules_did_not_run(
        point, base, tmp_path):
    """The import's COMMIT (the first) is not the run's outcome: killed after it, or just before
    the rules' COMMIT (the second), the run is interrupted, its summary holds the committed
    import's counts and its error says the rules did not run; killed after the rules' COMMIT, it
    succeeded with the rules' counts."""
    from patron_tui.services.inactivation import InactivationRules
    from patron_tui.services.jobs import Job, save_job

    db = _copy(base, tmp_path / "district.db")
    shutil.copy(base.parent / "in.csv", tmp_path / "in.csv")
    store = Store(db, operator="tester")
    conn = store.connect()
    try:
        with store.writer(conn, None) as w:   # the rule inactivates the 6 patrons not in the file
            save_job(w, Job(name="nightly", path=str(tmp_path / "in.csv"),
                            properties_path=str(base.parent / "in.properties"),
                            inactivation=InactivationRules(inactivate_days=0)))
        # the district's patrons were made long ago (test set-up, not a run of the product)
        conn.execute("UPDATE patrons SET created_at = '2020-01-01T00:00:00Z'")
    finally:
        conn.close()
    before = _dump(db)

    proc = _child(db, ["jobs", "run", "nightly", "--mode", "full"], point)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    run = _last_run(db)
    after = _dump(db)
    assert run["kind"] == "job"
    old = {r[0]: r for r in before["patrons"]}
    changed = [r for r in after["patrons"] if r[0] in old and r != old[r[0]]]
    added, _ = _changed_patrons(before, after)
    if point == "committed:2":
        assert run["status"] == "succeeded" and run["error"] is None
        assert run["summary"]["inactivation"]["inactivated"] == 6 and run["summary"]["inactivation"]["ran"] is True
        assert (run["summary"]["added"], run["summary"]["updated"], added, len(changed)) == (6, 4, 6, 4 + 6)
    else:
        assert run["status"] == "interrupted", run
        # truthful: the import is in the database and in the summary, the error says the rules did not run
        _check_import(run["summary"], before, after)
        assert "import was committed" in run["error"] and "rules ran: they did not run" in run["error"]
        assert "inactivation" not in run["summary"] and len(changed) == 4   # nobody inactivated
