"""Every run of every kind, newest first: what the Job Manager lists and the run summary heads with.

`list_runs(conn, kinds=..., job_name=..., limit=..., offset=...)` pages through the `runs` table
(imports, scheduled jobs, batch updates, the queue filler, utilities, conflict resolutions, undos,
journal prunes, checks, ...) and turns each row into a plain dict with its duration, its kind's
main counts (`run_counts`) and the undo run that currently takes it back, if any.
`count_runs` says how many there are for the same filter, `run_kinds` which kinds occur.
`summary_lines(run)` is the header of a run's summary, worded for its kind.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from patron_tui.services.undo import UNDO_KIND, conflicts_refusal, undone_by

JOB = "job"
IMPORT = "import"
BATCH = "batch_update"
FILL = "queue_fill"
UTILITY = "utility"
CONFLICT = "conflict"
UNDO = UNDO_KIND
PRUNE = "journal_prune"

#: kind -> (short label for a table cell, label for a filter)
KINDS: dict[str, tuple[str, str]] = {
    JOB: ("job", "Scheduled jobs"),
    IMPORT: ("import", "Imports"),
    BATCH: ("batch", "Batch updates"),
    FILL: ("fill", "Queue filler"),
    UTILITY: ("utility", "Utilities"),
    CONFLICT: ("conflict", "Conflict resolutions"),
    UNDO: ("undo", "Undos"),
    PRUNE: ("prune", "Journal prunes"),
    "check": ("check", "Database checks"),
    "restore": ("restore", "Restores"),
}

IMPORT_COUNTS = ("read", "added", "updated", "unchanged", "skipped", "conflicts", "errors", "warnings")

#: kind -> the summary keys that are its main counts, with their words
_MAIN: dict[str, tuple[tuple[str, str], ...]] = {
    JOB: (("read", "read"), ("added", "added"), ("updated", "updated"), ("skipped", "skipped"),
          ("errors", "errors")),
    BATCH: (("patrons", "patrons"), ("profiles_updated", "profiles updated"),
            ("profiles_created", "profiles created"), ("unchanged", "unchanged"), ("errors", "errors"),
            ("queues_queued", "queues queued")),
    FILL: (("queues_filled", "queues filled"), ("titles_added", "titles added"),
           ("queues_without_new_titles", "queues without new titles")),
    UTILITY: (("changed", "changed"), ("skipped", "skipped"), ("errors", "errors"), ("selected", "selected")),
    UNDO: (("reinserted", "re-inserted"), ("deleted", "deleted"), ("restored", "restored"),
           ("conflicts", "conflicts"), ("refused", "refused")),
    PRUNE: (("runs", "runs pruned"), ("rows", "journal rows")),
    "check": (("checks", "checks"), ("faults", "faults"), ("patrons", "patrons")),
}
_MAIN[IMPORT] = _MAIN[JOB]


def kind_label(kind: str, *, short: bool = True) -> str:
    labels = KINDS.get(kind)
    if labels is None:
        return kind.replace("_", " ")
    return labels[0] if short else labels[1]


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def run_counts(summary: dict[str, Any] | None, kind: str) -> list[tuple[str, Any]]:
    """The kind's main counts as (word, value), in reading order. A kind this module does not
    know shows its summary's numbers (at most six)."""
    summary = summary or {}
    keys = _MAIN.get(kind)
    if keys is not None:
        return [(word, summary.get(key, 0)) for key, word in keys]
    return [(k.replace("_", " "), v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)][:6]


def counts_text(summary: dict[str, Any] | None, kind: str) -> str:
    """'3 read · 2 added · 1 skipped': the main counts, zeros left out but for the first (empty
    when the run has no counts yet). `run_counts` has them all."""
    if not summary:
        return ""
    counts = run_counts(summary, kind)
    return " · ".join(f"{_number(v)} {word}" for i, (word, v) in enumerate(counts) if i == 0 or v)


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration_s(run: dict[str, Any]) -> float | None:
    started, finished = _parse_ts(run.get("started_at")), _parse_ts(run.get("finished_at"))
    if started and finished:
        return round((finished - started).total_seconds(), 3)
    summary = run.get("summary")
    value = summary.get("duration_s") if isinstance(summary, dict) else None
    return value if isinstance(value, (int, float)) else None


def _where(kinds: Iterable[str] | None, job_name: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if kinds is not None:
        kinds = list(kinds)
        clauses.append("r.kind IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(kinds))
    if job_name is not None:
        clauses.append("r.kind = ? AND j.name = ?")
        params += [JOB, job_name.strip()]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def count_runs(conn: sqlite3.Connection, *, kinds: Iterable[str] | None = None, job_name: str | None = None) -> int:
    """How many runs `list_runs` pages through for this filter."""
    where, params = _where(kinds, job_name)
    return conn.execute(f"SELECT count(*) FROM runs r LEFT JOIN jobs j ON j.id = r.job_id{where}", params).fetchone()[0]


def run_kinds(conn: sqlite3.Connection) -> list[str]:
    """The kinds that have runs, in KINDS order (kinds this module does not know last)."""
    present = {r[0] for r in conn.execute("SELECT DISTINCT kind FROM runs")}
    order = list(KINDS)
    return sorted(present, key=lambda k: (order.index(k) if k in order else len(order), k))


def list_runs(conn: sqlite3.Connection, *, kinds: Iterable[str] | None = None, job_name: str | None = None,
              limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
    """Runs newest first (of these kinds; of one job when `job_name` is given), `limit` from
    `offset`. Each: id, kind, title, job_id, job_name, mode, status, started_by, operator,
    created_at, started_at, finished_at, duration_s, error, scheduled_for, summary, params,
    counts ([(word, value)]), counts_text, the import counts (read, added, ...; 0 for other
    kinds) and undone_by (the undo run that takes it back now, or None)."""
    where, params = _where(kinds, job_name)
    sql = (f"SELECT r.*, j.name AS job_name FROM runs r LEFT JOIN jobs j ON j.id = r.job_id{where}"
           " ORDER BY r.id DESC LIMIT ? OFFSET ?")
    out: list[dict[str, Any]] = []
    for r in conn.execute(sql, [*params, max(0, int(limit)), max(0, int(offset))]):
        row = dict(r)
        try:
            summary = json.loads(row["summary"] or "{}")
            run_params = json.loads(row["params"] or "{}")
        except ValueError:
            summary, run_params = {}, {}
        summary = summary if isinstance(summary, dict) else {}
        run_params = run_params if isinstance(run_params, dict) else {}
        item = {k: row[k] for k in ("id", "kind", "title", "job_id", "mode", "status", "started_by", "operator",
                                    "created_at", "started_at", "finished_at", "error")}
        item["job_name"] = row["job_name"] or (run_params.get("job") if row["kind"] == JOB else "") or ""
        item["scheduled_for"] = run_params.get("scheduled_for")
        item["summary"] = summary
        item["params"] = run_params
        item["duration_s"] = duration_s(item)
        item["counts"] = run_counts(summary, row["kind"])
        item["counts_text"] = counts_text(summary, row["kind"])
        for k in IMPORT_COUNTS:
            value = summary.get(k, 0)
            item[k] = value if isinstance(value, int) else 0
        item["undone_by"] = None
        out.append(item)
    _mark_undone(conn, out)
    return out


def _mark_undone(conn: sqlite3.Connection, runs: list[dict[str, Any]]) -> None:
    """Set `undone_by` on the runs of the page that a succeeded undo took back."""
    if not runs:
        return
    ids = [r["id"] for r in runs]
    undone = {row[0] for row in conn.execute(
        "SELECT DISTINCT json_extract(params, '$.undoes') FROM runs WHERE kind = ? AND status = 'succeeded'"
        " AND json_extract(params, '$.undoes') IN (SELECT value FROM json_each(?))", (UNDO_KIND, json.dumps(ids)))}
    for run in runs:
        if run["id"] in undone:
            run["undone_by"] = undone_by(conn, run["id"])


# -- the summary's header ----------------------------------------------------------------------

def _yes(value: Any) -> bool:
    return bool(value) and value not in ("0", "false", "no")


def _seconds(run: dict[str, Any]) -> str:
    value = duration_s(run)
    return "-" if value is None else f"{value:g} s"


def _inactivation_line(inactivation: Any) -> list[str]:
    """A job run's Inactivation / Deletion outcome in one line that fits 80 columns (none when
    the job has no rule): held (the run's inactivation_held warning, in the messages below, says
    why in full) or the counts, and the run its "% of the previous Full update" compared with."""
    if not isinstance(inactivation, dict) or not inactivation:
        return []
    base = inactivation.get("compared_with")
    run = base.get("run_id") if isinstance(base, dict) else None
    if inactivation.get("held"):
        line = "Inactivation held, the warning says why"
        return [line + (f" · compared with run {run} ({_number(base.get('read', 0))} read)" if run else "")]
    line = (f"Inactivation: {_number(inactivation.get('inactivated', 0))} inactivated · "
            f"{_number(inactivation.get('deleted', 0))} deleted · {_number(inactivation.get('kept_back', 0))} kept back")
    return [line + (f" (compared with run {run})" if run else "")]


def summary_lines(run: dict[str, Any]) -> list[str]:
    """The header of a run's summary, worded for its kind (`run` as runlog.get_run returns it:
    summary and params decoded). Plain text: the caller shows it as text, never markup."""
    kind = run.get("kind") or ""
    s = run.get("summary") or {}
    params = run.get("params") or {}
    dry = " · dry run: nothing was changed" if _yes(s.get("dry_run", params.get("dry_run"))) else ""
    if kind in (JOB, IMPORT):
        mode = s.get("mode") or run.get("mode") or "?"
        source = s.get("source") or params.get("source")
        # a job's file was fetched into a staging folder that is gone by now: name its source
        where = f"Source {source}" if source else f"File {s.get('file') or params.get('file') or '?'}"
        return [
            f"Read {s.get('read', 0):,} · added {s.get('added', 0):,} · updated {s.get('updated', 0):,} · "
            f"unchanged {s.get('unchanged', 0):,} · skipped {s.get('skipped', 0):,}",
            f"Errors {s.get('errors', 0):,} · warnings {s.get('warnings', 0):,} · "
            f"conflicts {s.get('conflicts', 0):,} · {mode} · {s.get('duration_s', 0)} s{dry}",
            f"{where} · encoding {s.get('encoding') or params.get('encoding') or 'from the properties file'}",
            *_inactivation_line(s.get("inactivation")),
        ]
    if not s:
        return [f"{kind_label(kind, short=False)} · {run.get('status', '?')} · no counts recorded"
                f" · {_seconds(run)}{dry}"]
    if kind == BATCH:
        lines = [
            f"Patrons {s.get('patrons', 0):,} · profiles updated {s.get('profiles_updated', 0):,} · "
            f"profiles created {s.get('profiles_created', 0):,} · unchanged {s.get('unchanged', 0):,} · "
            f"errors {s.get('errors', 0):,}",
            f"Service queues queued {s.get('queues_queued', 0):,} · subjects added {s.get('subjects_added', 0):,}"
            f" · medium {s.get('medium') or '?'} · {_seconds(run)}{dry}",
        ]
        target = s.get("set_name") or ""
        statement = s.get("statement") or ""
        if target or statement:
            lines.append(("Query set " + target + (": " if statement else "") if target else "Search statement ")
                         + statement)
        return lines
    if kind == FILL:
        return [
            f"Queues filled {s.get('queues_filled', 0):,} · titles added {s.get('titles_added', 0):,} · "
            f"queues without new titles {s.get('queues_without_new_titles', 0):,}",
            f"Chunks {s.get('chunks', 0):,} · {_seconds(run)}",
        ]
    if kind == UTILITY:
        lines = [
            f"Changed {s.get('changed', 0):,} · skipped {s.get('skipped', 0):,} · errors {s.get('errors', 0):,}"
            f" · selected {s.get('selected', 0):,}",
            f"Utility {s.get('utility') or params.get('utility') or '?'} · {_seconds(run)}{dry}",
        ]
        notes = s.get("notes") or []
        if isinstance(notes, list) and notes:
            lines.append("Note: " + " ".join(str(n) for n in notes))
        return lines
    if kind == UNDO:
        undoes = s.get("undoes", params.get("undoes"))
        choice = s.get("on_conflict") or params.get("on_conflict") or "skip"
        conflicts = s.get("conflicts", 0)
        if s.get("conflicts_refused"):   # refused inside its transaction: nothing was undone
            return [f"Did not undo run {undoes}: {conflicts_refusal(s['conflicts_refused'])}",
                    f"Conflicts {conflicts:,} · not chosen for {s['conflicts_refused']:,} (skip or overwrite them"
                    f" to undo) · {_seconds(run)}"]
        if run.get("status") in ("failed", "cancelled", "interrupted"):
            return [f"Did not undo run {undoes}: nothing was changed ({run.get('status')}"
                    f"{': ' + str(run['error']) if run.get('error') else ''})", _seconds(run)]
        handled = {"skip": "left as they were", "overwrite": "overwritten"}.get(choice, "none found")
        return [
            f"Undid run {undoes}: re-inserted {s.get('reinserted', 0):,} · deleted {s.get('deleted', 0):,} · "
            f"restored {s.get('restored', 0):,} rows",
            f"Conflicts {conflicts:,} ({handled}) · refused by the database {s.get('refused', 0):,} · "
            f"{_seconds(run)} · undo this run to redo run {undoes}",
        ]
    # any other kind: its summary as "key: value"
    parts = [f"{k.replace('_', ' ')}: {_number(v) if _scalar(v) else json.dumps(v, ensure_ascii=False)}"
             for k, v in s.items() if k != "messages"]
    return [" · ".join(parts[i:i + 4]) for i in range(0, min(len(parts), 12), 4)] + [_seconds(run) + dry]


__all__ = ["KINDS", "count_runs", "counts_text", "duration_s", "kind_label", "list_runs", "run_counts",
           "run_kinds", "summary_lines"]
