"""The job summary of an import run: its counts and its per-record messages.

`load_summary` reads a run's row (with its summary counts) and its messages; `messages_csv`
exports the messages as CSV (line, barcode, level, code, text), streamed row by row, with no
cap on their number. `errors_only` keeps errors, warnings and skipped records (the
"limit the job summary to errors and warnings" choice): it drops the info messages.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from typing import Any, TextIO

from patron_tui.store import runlog

CSV_COLUMNS = ("line", "barcode", "level", "code", "text")
SUMMARY_KEYS = ("mode", "dry_run", "file", "read", "added", "updated", "unchanged", "skipped",
                "errors", "warnings", "conflicts", "duration_s")


class SummaryError(LookupError):
    pass


def iter_messages(conn: sqlite3.Connection, run_id: int, *, errors_only: bool = False) -> Iterator[dict[str, Any]]:
    where = "run_id = ?" + (" AND level != 'info'" if errors_only else "")
    for row in conn.execute(
        f"SELECT id, ts, level, code, line, barcode, patron_id, text FROM run_messages WHERE {where}"
        # in file order: chunks report their problems before their decisions; lineless last
        " ORDER BY line IS NULL, line, id",
        (run_id,),
    ):
        yield dict(row)


def load_summary(conn: sqlite3.Connection, run_id: int, *, errors_only: bool = False) -> dict[str, Any]:
    """{"run": the run row (summary decoded), "messages": [message dicts]}; SummaryError if no such run."""
    run = runlog.get_run(conn, run_id)
    if run is None:
        raise SummaryError(f"no run {run_id}")
    return {"run": run, "messages": list(iter_messages(conn, run_id, errors_only=errors_only))}


def messages_csv(conn: sqlite3.Connection, run_id: int, stream: TextIO, errors_only: bool = False) -> int:
    """Write the run's messages to `stream` as CSV; returns the number of rows written."""
    if runlog.get_run(conn, run_id) is None:
        raise SummaryError(f"no run {run_id}")
    out = csv.writer(stream)
    out.writerow(CSV_COLUMNS)
    n = 0
    for m in iter_messages(conn, run_id, errors_only=errors_only):
        out.writerow(["" if m[c] is None else m[c] for c in CSV_COLUMNS])
        n += 1
    return n


__all__ = ["CSV_COLUMNS", "SUMMARY_KEYS", "SummaryError", "iter_messages", "load_summary", "messages_csv"]
