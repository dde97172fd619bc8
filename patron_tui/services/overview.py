"""Figures for the Home section: who is in the district and what ran lately."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Overview:
    total: int
    by_status: list[tuple[str, int]]
    by_site: list[tuple[str, str, int]]  # code, name ('' when not in the site table), count
    recent_runs: list[dict[str, Any]]
    jobs: int
    next_runs: list[dict[str, Any]] = field(default_factory=list)


def overview(conn: sqlite3.Connection, *, runs: int = 8) -> Overview:
    by_status = [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT status, count(*) FROM patrons WHERE is_system = 0 GROUP BY status ORDER BY 2 DESC, 1"
        )
    ]
    by_site = [
        (r[0], r[1] or "", r[2])
        for r in conn.execute(
            "SELECT p.site, s.name, p.n FROM"
            " (SELECT site, count(*) AS n FROM patrons WHERE is_system = 0 GROUP BY site) p"
            " LEFT JOIN sites s ON s.code = p.site ORDER BY p.n DESC, p.site"
        )
    ]
    recent = [dict(r) for r in conn.execute(
        "SELECT id, kind, title, status, operator, started_by, created_at, started_at, finished_at,"
        " summary, error FROM runs ORDER BY id DESC LIMIT ?", (runs,)
    )]
    for run in recent:
        run["duration"] = duration_seconds(run.get("started_at"), run.get("finished_at"))
    jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    return Overview(
        total=sum(n for _, n in by_status),
        by_status=by_status,
        by_site=by_site,
        recent_runs=recent,
        jobs=jobs,
    )


def duration_seconds(started: str | None, finished: str | None) -> float | None:
    if not started or not finished:
        return None
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    try:
        return (datetime.strptime(finished, fmt) - datetime.strptime(started, fmt)).total_seconds()
    except ValueError:
        return None
