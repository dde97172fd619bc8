"""What the subcommand modules (cli_admin, cli_audit, cli_batch, cli_jobs, cli_mail,
cli_utilities) share: the --db option, the refusal that exits 2, the exit code table,
opening the store, and running one run to its end and printing its outcome.

A command raises `Refused` with the sentence to show; its module's entry point catches it
and returns `fail(...)`, i.e. exit code 2 with the sentence on stderr. A bad day (a busy,
read-only, full, damaged or newer database: store/trouble.py) is not caught here: it rises
to `patron_tui.cli.main`, which prints its one sentence and exits with its code (EXIT_CODES).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable


class Refused(Exception):
    """A command will not go on: the message is printed and the exit code is 2."""


# -- exit codes (README "Exit codes" and `patron-tui --help` show this table) --------------

EXIT_OK = 0
EXIT_FINDINGS = 1       # done, and it found or left something to look at
EXIT_REFUSED = 2        # refused or failed: bad input, no permission, a failed run; nothing changed
EXIT_BUSY = 3           # another process held the database's write lock past the busy timeout
EXIT_CANNOT_WRITE = 4   # read-only file, folder or disk, a full disk, a disk error
EXIT_UNUSABLE = 5       # damaged, not a database, or written by a newer patron-tui
EXIT_UNEXPECTED = 70    # a fault of patron-tui itself: details in the error log
EXIT_INTERRUPTED = 130  # Ctrl+C (128 + SIGINT)

#: the exit code of each kind of bad day (store/trouble.py)
EXIT_CODES = {"busy": EXIT_BUSY, "readonly": EXIT_CANNOT_WRITE, "full": EXIT_CANNOT_WRITE,
              "disk": EXIT_CANNOT_WRITE, "damaged": EXIT_UNUSABLE, "newer": EXIT_UNUSABLE}

EXIT_TABLE = (
    (EXIT_OK, "done"),
    (EXIT_FINDINGS, "done, with something to look at (check found faults, some patrons could not "
                    "be updated, a job test failed, a restore was declined)"),
    (EXIT_REFUSED, "refused or failed, nothing changed: bad input or statement, no permission, "
                   "a run that failed"),
    (EXIT_BUSY, "the database is busy: another run or program holds its write lock; try again"),
    (EXIT_CANNOT_WRITE, "cannot write: a read-only database, folder or disk, a full disk, a disk error"),
    (EXIT_UNUSABLE, "the database cannot be used: damaged, not a database, or from a newer patron-tui"),
    (EXIT_UNEXPECTED, "an unexpected error: one line here, the details in the error log"),
    (EXIT_INTERRUPTED, "interrupted by Ctrl+C; what was being written was rolled back"),
)


def exit_codes_text() -> str:
    """The exit code table, for `patron-tui --help`."""
    import textwrap

    return "exit codes:\n" + "\n".join(
        textwrap.fill(text, 78, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
        for code, text in EXIT_TABLE)


def trouble_exit(trouble) -> int:
    """Print a StoreTrouble's sentence; its exit code."""
    fail(str(trouble))
    return EXIT_CODES.get(trouble.kind, EXIT_REFUSED)


def failure_code(error: str | None) -> int:
    """The exit code of a run that did not succeed with this error text."""
    from patron_tui.store.trouble import explain_text

    trouble = explain_text(error)
    return EXIT_REFUSED if trouble is None else EXIT_CODES.get(trouble.kind, EXIT_REFUSED)


def run_failed(what: str, error: str | None, db_path: Path | None) -> int:
    """A run that did not succeed: its sentence (a bad day's own sentence when its error is one,
    store/trouble.py) on stderr; the exit code."""
    from patron_tui.store.trouble import explain_text

    trouble = explain_text(error, db_path or current_db)
    if trouble is not None:
        fail(f"{what} did not run: {trouble}")
        return EXIT_CODES.get(trouble.kind, EXIT_REFUSED)
    fail(f"{what} did not run: {error or 'it failed'}; nothing was changed")
    return EXIT_REFUSED


#: the database of this command (set by cli.main once the arguments are read): bad-day
#: sentences name it
current_db: Path | None = None


def add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                   help="patron database (default: $PATRON_TUI_DB or the user data dir)")


def fail(message: object) -> int:
    """Print `message` to stderr line by line (control characters made visible); 2, or the
    exit code of its bad day when `message` is an error with a `kind` (store/trouble.py)."""
    from patron_tui.textsafe import visible

    print("\n".join(f"patron-tui: {visible(line)}" for line in str(message).split("\n")), file=sys.stderr)
    return EXIT_CODES.get(getattr(message, "kind", None), EXIT_REFUSED)


def open_store(db_path: Path):
    """(store, connection); `Refused` when the database cannot be opened."""
    from patron_tui.store import Store, StoreError

    global current_db
    current_db = Path(db_path)   # the one bad-day sentences name
    store = Store(db_path)
    try:
        conn = store.connect()
    except StoreError as exc:
        raise Refused(str(exc)) from None
    return store, conn


def run_summary(handle) -> dict[str, Any]:
    """A run's summary without its progress messages."""
    return {k: v for k, v in handle.summary.items() if k != "messages"}


def run_json(handle, **extra: Any) -> dict[str, Any]:
    """The JSON object of a finished run: run_id, `extra`, status, error, summary."""
    return {"run_id": handle.run_id, **extra, "status": handle.status.value, "error": handle.error,
            "summary": run_summary(handle)}


def run_to_end(store, start: Callable[[Any], Any], refusals: tuple[type[BaseException], ...] = ()):
    """Start one run with `start(engine)` on a one-worker engine and wait for it; the
    exceptions in `refusals` (raised by `start`) become `Refused`."""
    from patron_tui.runs import RunEngine

    engine = RunEngine(store, pool_size=1)
    try:
        try:
            handle = start(engine)
        except refusals as exc:
            raise Refused(str(exc)) from None
        handle.wait()
    finally:
        engine.shutdown(cancel_running=False)
    return handle


def outcome(handle, as_json: bool, payload: dict[str, Any], *, done: str, failed: str,
            ensure_ascii: bool = True) -> int:
    """Print a finished run: `payload` as JSON, else `done` when it succeeded or `failed`
    (to stderr) when not; 0 when it succeeded, else 2."""
    from patron_tui.store.trouble import explain_text

    ok = handle.status.value == "succeeded"
    if as_json:
        print(json.dumps(payload, indent=2, ensure_ascii=ensure_ascii))
    elif ok:
        print(done)
    if not ok:
        trouble = explain_text(handle.error, current_db)   # a bad day says so, with its code
        if not as_json:
            fail(failed if trouble is None else trouble)
        return EXIT_REFUSED if trouble is None else EXIT_CODES.get(trouble.kind, EXIT_REFUSED)
    return 0
