"""Test points: named places where a test (or someone supporting a site) stops a process and
lets it go on, or makes it die at once, without any clock. The one place they are documented.

A point is `reach("<name>")` in the code. Without the variables below it does nothing (one
environment lookup). `<name>[:N]` acts the N-th time the process reaches that point (1 if
no N), and only then.

- `PATRON_TUI_PAUSE_AT=<name>[:N]` with `PATRON_TUI_PAUSE_FDS=<w>,<r>` (two inherited pipe
  ends): the process writes "<name>\\n" to fd `w`, then blocks reading fd `r` until the other
  side writes a byte or closes it.
- `PATRON_TUI_KILL_AT=<name>[:N]`: the process SIGKILLs itself there.

Points:
  "backup-written"  services/backup.py: the copy is complete in `<target>.part`, not yet renamed
  "cli-message"     cli.py: the CLI is printing a run's message, on the run's thread, inside
                    its write transaction
  "commit"          runs.py: a run's outcome is written, just before its COMMIT
  "committed"       runs.py: just after a run's COMMIT
  "finish"          runs.py: before the engine's finish_run writes the run's end
  "finished"        runs.py: just after it
"""

from __future__ import annotations

import os
import signal
import threading

PAUSE_AT = "PATRON_TUI_PAUSE_AT"
PAUSE_FDS = "PATRON_TUI_PAUSE_FDS"
KILL_AT = "PATRON_TUI_KILL_AT"

_seen: dict[str, int] = {}
_lock = threading.Lock()


def _wanted(variable: str, name: str) -> bool:
    """True when `variable` names this point and this is the time it asks for (counted once
    per reach, per variable)."""
    point, _, nth = os.environ.get(variable, "").partition(":")
    if point != name:
        return False
    key = f"{variable}={name}"
    with _lock:
        _seen[key] = _seen.get(key, 0) + 1
        return _seen[key] == (int(nth) if nth.isdigit() else 1)


def reach(name: str) -> None:
    """The process is at the point `name`: pause or die there if a test asked for it."""
    environ = os.environ
    if PAUSE_AT not in environ and KILL_AT not in environ:
        return
    if _wanted(PAUSE_AT, name):
        _pause(name)
    if _wanted(KILL_AT, name):
        os.kill(os.getpid(), signal.SIGKILL)


def _pause(name: str) -> None:
    w, _, r = os.environ.get(PAUSE_FDS, "").partition(",")
    if not (w.isdigit() and r.isdigit()):
        return
    try:
        os.write(int(w), f"{name}\n".encode())
        os.read(int(r), 1)
    except OSError:
        pass
