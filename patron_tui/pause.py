"""Pause points: a test (or someone supporting a site) stops a process at a named point and
lets it go on, without any clock.

With `PATRON_TUI_PAUSE_AT=<name>` and `PATRON_TUI_PAUSE_FDS=<w>,<r>` (two inherited pipe ends),
the first time the process reaches `pause_point(<name>)` it writes "<name>\\n" to fd `w`, then
blocks reading fd `r` until the other side writes a byte or closes it. Without those variables
`pause_point` does nothing. Points: "backup-written" (services/backup.py: the copy is complete in
`<target>.part`, not yet renamed), "cli-message" (cli.py: the CLI is printing a run's message,
on the run's thread, inside its write transaction).
"""

from __future__ import annotations

import os
import threading

_seen: set[str] = set()
_lock = threading.Lock()


def pause_point(name: str) -> None:
    if os.environ.get("PATRON_TUI_PAUSE_AT") != name:
        return
    with _lock:
        if name in _seen:
            return
        _seen.add(name)
    w, _, r = os.environ.get("PATRON_TUI_PAUSE_FDS", "").partition(",")
    if not (w.isdigit() and r.isdigit()):
        return
    try:
        os.write(int(w), f"{name}\n".encode())
        os.read(int(r), 1)
    except OSError:
        pass
