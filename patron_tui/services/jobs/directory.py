"""The directory source: the job's CSV file is a path on this server.

The student information system may still be writing the file when the job starts,
so a fetch looks twice, `settle_seconds` apart, and refuses a file whose size or
modification time changed between the two looks (the next scheduled run picks it up).
The complete file is copied into the run's staging folder, so the import reads a
file nobody changes underneath it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from patron_tui.services.imports.sourcefile import describe
from patron_tui.services.jobs.model import Job
from patron_tui.services.jobs.sources import Check, SourceError

SETTLE_SECONDS = float(os.environ.get("PATRON_TUI_SETTLE_SECONDS", "2"))


def _stat(path: Path) -> tuple[int, int, int]:
    """(size, mtime in ns, inode): a file rewritten, cut short or replaced differs."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def job_path(job: Job) -> Path:
    return Path(job.path).expanduser()


def check_directory(job: Job) -> list[Check]:
    """Is the job's file there, a file, readable? (No waiting: a test is a quick look.)"""
    path = job_path(job)
    if not path.parent.is_dir():
        return [Check("folder", False, f"Folder {path.parent} does not exist on this server (field: path).")]
    checks = [Check("folder", True, f"Folder {path.parent} exists.")]
    what = describe(path)   # a directory, a FIFO, a link loop: said as such
    if what == "no such file":
        checks.append(Check("file", False, f"File {path.name} is not in {path.parent} (yet); "
                            "the job will fail unless it is there when the job runs (field: path)."))
    elif what is not None:
        checks.append(Check("file", False, f"{path}: {what} (field: path)."))
    elif not os.access(path, os.R_OK):
        checks.append(Check("file", False, f"File {path} cannot be read by {_user()} (field: path)."))
    else:
        size = _stat(path)[0]
        checks.append(Check("file", True, f"File {path} is there and readable ({size:,} bytes)."))
    return checks


def _user() -> str:
    from patron_tui.store.identity import current_login

    return current_login()


def fetch_directory(job: Job, dest_dir: str | Path, *, settle_seconds: float | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> Path:
    """Copy the job's file into `dest_dir` once it has stopped changing; returns the copy.
    SourceError (a sentence naming the file) when it is missing, unreadable or still being
    written."""
    path = job_path(job)
    settle = SETTLE_SECONDS if settle_seconds is None else settle_seconds
    try:
        first = _stat(path)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file (job {job.name!r}, field: path); "
                          "has the student information system written it yet?") from None
    except OSError:
        raise SourceError(f"{path}: {describe(path)} (job {job.name!r}, field: path)") from None
    what = describe(path)
    if what is not None:   # a directory, a FIFO, ...: said as such (a FIFO is never opened)
        raise SourceError(f"{path}: {what} (job {job.name!r}, field: path)")
    if settle > 0:
        sleep(settle)
    try:
        second = _stat(path)
    except OSError:
        raise SourceError(f"{path}: the file disappeared while it was being checked") from None
    if second != first:
        raise SourceError(
            f"{path}: the file is still being written (it changed from {first[0]:,} to {second[0]:,} "
            f"bytes in {settle:g} s); the job did not import it"
        )
    dest = Path(dest_dir) / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(path, dest)
    except OSError as exc:
        raise SourceError(f"{path}: cannot copy it to {dest.parent} ({exc.strerror or exc})") from None
    if _stat(path) != second:
        dest.unlink(missing_ok=True)
        raise SourceError(f"{path}: the file changed while it was being copied; the job did not import it")
    return dest
