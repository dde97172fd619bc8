"""A backup is written to `<target>.part` and renamed when whole (issue 14 item 11): a backup
killed or failed at any moment leaves no file at the target (it used to leave a 0-byte one,
after which backup and restore to that path were refused), and a .part left by a killed
backup never blocks the next one.

The kill happens at a point the test controls: the child stops at the "backup-written" test
point (patron_tui/testpoints.py), the copy complete in the .part, not yet renamed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from patron_tui.services.backup import check_copy

from tests.conftest import allow_login, district

PATRONS = [{"barcode": f"P{i}", "district_id": f"D{i}", "site": "HS", "last_name": f"Last{i}"}
           for i in range(30)]


def _store(tmp_path: Path):
    store = district(tmp_path / "district.db", PATRONS)
    allow_login(store)   # the CLI child acts as this login (backing up needs an operator)
    return store


def backup_cli(db: Path, target: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "patron_tui", "backup", str(target), "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_a_backup_killed_before_its_rename_leaves_no_target_and_the_next_backup_succeeds(tmp_path):
    store = _store(tmp_path)
    target = tmp_path / "backups" / "nightly.db"
    part = Path(f"{target}.part")
    reached_r, reached_w = os.pipe()
    go_r, go_w = os.pipe()
    child = backup_cli(store.path, target, pass_fds=(reached_w, go_r), env={
        **os.environ, "PATRON_TUI_PAUSE_AT": "backup-written", "PATRON_TUI_PAUSE_FDS": f"{reached_w},{go_r}"})
    os.close(reached_w)
    os.close(go_r)
    try:
        assert os.read(reached_r, 64) == b"backup-written\n", "the backup never got to its copy"
        assert part.stat().st_size > 0 and not target.exists()   # whole in the .part, not yet named
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        os.close(reached_r)
        os.close(go_w)
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()          # never a 0-byte or half file under the backup's name

    again = backup_cli(store.path, target)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "backup written" in out and target.stat().st_size > 0
    assert not part.exists()            # the leftover .part was replaced, then renamed
    assert check_copy(target)["patrons"] == len(PATRONS) + 1   # a sound database (+ Unknown Patron)


def test_a_failed_backup_leaves_nothing_and_a_backup_to_the_same_path_then_succeeds(tmp_path):
    good = _store(tmp_path)
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(good.path.read_bytes())
    page = sqlite3.connect(damaged).execute("PRAGMA page_size").fetchone()[0]
    with open(damaged, "r+b") as f:   # pages 4 and 5 become garbage
        f.seek(page * 3)
        f.write(b"\xde\xad" * page)
    target = tmp_path / "copy.db"

    failed = backup_cli(damaged, target)
    _, err = failed.communicate(timeout=120)
    assert failed.returncode != 0 and "no backup was made" in err and "Traceback" not in err, err
    assert not target.exists() and not Path(f"{target}.part").exists()

    ok = backup_cli(good.path, target)          # the path is free: nothing blocks it
    out, err = ok.communicate(timeout=120)
    assert ok.returncode == 0, err
    assert check_copy(target)["patrons"] == len(PATRONS) + 1


def test_a_backup_into_a_folder_it_cannot_write_leaves_nothing(tmp_path):
    from tests.test_bad_days import without_root_powers

    store = _store(tmp_path)
    folder = tmp_path / "locked"
    folder.mkdir()
    prefix = without_root_powers()
    folder.chmod(0o555)
    try:
        child = subprocess.run([*prefix, sys.executable, "-m", "patron_tui", "backup", str(folder / "b.db"),
                                "--db", str(store.path)], capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o755)
    assert child.returncode == 4, child.stderr
    assert "no backup was made" in child.stderr and "cannot be written" in child.stderr
    assert "Traceback" not in child.stderr
    assert list(folder.iterdir()) == []


def test_a_leftover_part_of_a_killed_backup_does_not_block_the_next(tmp_path):
    store = _store(tmp_path)
    target = tmp_path / "copy.db"
    Path(f"{target}.part").write_bytes(b"half a backup")
    child = backup_cli(store.path, target)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert check_copy(target)["patrons"] == len(PATRONS) + 1 and not Path(f"{target}.part").exists()
