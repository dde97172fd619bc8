"""What the subcommand modules (cli_admin, cli_audit, cli_batch, cli_jobs, cli_mail,
cli_utilities) share: the --db option, the refusal that exits 2, opening the store, and
running one run to its end and printing its outcome.

A command raises `Refused` with the sentence to show; its module's entry point catches it
and returns `fail(...)`, i.e. exit code 2 with the sentence on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable


class Refused(Exception):
    """A command will not go on: the message is printed and the exit code is 2."""


def add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                   help="patron database (default: $PATRON_TUI_DB or the user data dir)")


def fail(message: object) -> int:
    """Print `message` to stderr line by line (control characters made visible); 2."""
    from patron_tui.textsafe import visible

    print("\n".join(f"patron-tui: {visible(line)}" for line in str(message).split("\n")), file=sys.stderr)
    return 2


def open_store(db_path: Path):
    """(store, connection); `Refused` when the database cannot be opened."""
    from patron_tui.store import Store, StoreError

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
    ok = handle.status.value == "succeeded"
    if as_json:
        print(json.dumps(payload, indent=2, ensure_ascii=ensure_ascii))
    elif ok:
        print(done)
    if not ok:
        if not as_json:
            fail(failed)
        return 2
    return 0
