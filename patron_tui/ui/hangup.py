"""What the console does when its terminal goes away mid-run.

An SSH session that drops (or a terminal window closed) sends the console SIGHUP; `kill`
and systemd send SIGTERM. Python's default for both is to die on the spot: a run's data
transaction then never commits (SQLite throws it away), but its row stays 'running' until
some later start notices the dead owner. Instead, `install(app)` makes the console:

1. stop every run it executes (`RunEngine.interrupt_active`): each either finishes committing
   or rolls back entirely at its next cancellation check, and is marked 'interrupted' with the
   reason, its messages written (never half-applied: the import, the rules, a utility each
   write in one transaction);
2. wait for that, bounded (`PATRON_TUI_HANGUP_WAIT` seconds, default 60): a run still busy
   after that dies with the process, its transaction rolled back by SQLite, and the next
   start marks it interrupted;
3. ask the app to exit (which restores a terminal that is still there), and end the process
   with status 128 + the signal if that has not happened a moment later (a dead terminal can
   leave Textual's own exit stuck).

The waiting happens on a thread of its own: the signal handler runs on the event loop's
thread and returns at once, so nothing the runs wait for is blocked.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

_REASONS = {
    signal.SIGHUP: "the console's terminal hung up (SIGHUP)",
    signal.SIGTERM: "the console was told to stop (SIGTERM)",
}
GRACE_SECONDS = 3.0


def _wait_limit() -> float:
    try:
        return max(0.0, float(os.environ.get("PATRON_TUI_HANGUP_WAIT", "60")))
    except ValueError:
        return 60.0


def install(app: Any) -> None:
    """Handle SIGHUP and SIGTERM for the console `app` (a PatronApp: `.engine`, `.exit`)."""
    fired = threading.Event()

    def finish(signum: int, engine: Any) -> None:
        if engine is not None:
            engine.wait_idle(_wait_limit())
        loop = getattr(app, "_loop", None)
        if loop is not None:
            try:
                loop.call_soon_threadsafe(app.exit)
            except RuntimeError:   # the loop has closed: the app is ending anyway
                pass
        threading.Event().wait(GRACE_SECONDS)
        os._exit(128 + signum)

    def on_signal(signum: int, _frame: Any) -> None:
        if fired.is_set():
            return
        fired.set()
        engine = getattr(app, "engine", None)
        if engine is not None:
            engine.interrupt_active(_REASONS.get(signum, f"the console got signal {signum}"))
        threading.Thread(target=finish, args=(signum, engine), name="patron-hangup", daemon=True).start()

    for signum in _REASONS:
        signal.signal(signum, on_signal)
