"""Jobs as rows of `jobs`, their runs as rows of `runs`, and who may manage them.

A job definition is written through the changeset writer like any other data; the
schedule and the options are JSON text. Only operators who may manage district
patrons (or are district administrators, security level 0) add, edit, delete or run jobs.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from patron_tui.services.inactivation import InactivationRules
from patron_tui.services.jobs.model import Job, JobOptions, WeeklySchedule
from patron_tui.store.changeset import ChangesetWriter, utc_now

JOB_KIND = "job"

_COLUMNS = ("id", "name", "source_kind", "path", "sftp_url", "sftp_port", "sftp_user", "sftp_auth",
            "sftp_key_path", "file_name", "properties_path", "encoding", "schedule", "options", "inactivation")


class JobExists(ValueError):
    """A job of that name exists already (the message names the field)."""


def _job_from_row(row: sqlite3.Row | dict[str, Any]) -> Job:
    r = dict(row)
    return Job.model_construct(
        id=r["id"], name=r["name"], source=r["source_kind"], path=r["path"], sftp_url=r["sftp_url"],
        sftp_port=r["sftp_port"], sftp_user=r["sftp_user"], sftp_auth=r.get("sftp_auth") or "password",
        sftp_key_path=r.get("sftp_key_path") or "", file_name=r["file_name"],
        properties_path=r["properties_path"], encoding=r["encoding"],
        schedule=WeeklySchedule.model_validate(json.loads(r["schedule"] or "{}")),
        options=JobOptions.model_validate(json.loads(r["options"] or "{}")),
        inactivation=InactivationRules.model_validate(json.loads(r.get("inactivation") or "{}")),
    )


def _row_of(job: Job) -> dict[str, Any]:
    return {
        "name": job.name, "source_kind": job.source, "path": job.path, "sftp_url": job.sftp_url,
        "sftp_port": job.sftp_port, "sftp_user": job.sftp_user, "sftp_auth": job.sftp_auth,
        "sftp_key_path": job.sftp_key_path, "file_name": job.file_name,
        "properties_path": job.properties_path, "encoding": job.encoding,
        "schedule": job.schedule.model_dump_json(), "options": job.options.model_dump_json(),
        "inactivation": job.inactivation.model_dump_json(exclude_defaults=True),
    }


def list_jobs(conn: sqlite3.Connection) -> list[Job]:
    return [_job_from_row(r) for r in conn.execute("SELECT * FROM jobs ORDER BY name COLLATE NOCASE")]


def get_job(conn: sqlite3.Connection, name: str) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE name = ?", (name.strip(),)).fetchone()
    return _job_from_row(row) if row is not None else None


def get_job_by_id(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return _job_from_row(row) if row is not None else None


def job_updated_at(conn: sqlite3.Connection, job_id: int) -> str | None:
    row = conn.execute("SELECT updated_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row[0] if row else None


def save_job(writer: ChangesetWriter, job: Job) -> Job:
    """Insert (id None) or update (by id) the job; returns it with its id.
    JobExists when another job has the name; LookupError when the id is gone."""
    job = Job.model_validate(job.model_dump())   # validated, whichever way it was built
    conn = writer.conn
    other = conn.execute("SELECT id FROM jobs WHERE name = ?", (job.name,)).fetchone()
    if other is not None and other[0] != job.id:
        raise JobExists(f"name: a job named {job.name!r} already exists")
    now = utc_now()
    row = _row_of(job)
    if job.id is None:
        job_id = writer.insert("jobs", {**row, "created_at": now, "updated_at": now})
        return job.model_copy(update={"id": job_id})
    before = writer.fetch("jobs", job.id)
    if before is None:
        raise LookupError(f"job {job.id} no longer exists (deleted meanwhile?)")
    if any(before.get(k) != v for k, v in row.items()):
        writer.update("jobs", job.id, {**row, "updated_at": now})
    return job


def delete_job(writer: ChangesetWriter, name: str) -> bool:
    """Delete the job (its runs stay, without the job). False when there is none."""
    row = writer.conn.execute("SELECT id FROM jobs WHERE name = ?", (name.strip(),)).fetchone()
    if row is None:
        return False
    writer.conn.execute("DELETE FROM job_leases WHERE job_id = ?", (row[0],))   # bookkeeping
    writer.delete("jobs", row[0])
    return True


# -- runs ------------------------------------------------------------------------------

_COUNTS = ("read", "added", "updated", "unchanged", "skipped", "conflicts", "errors", "warnings")


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def job_runs(conn: sqlite3.Connection, job_name: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The runs of jobs, newest first (of one job when `job_name` is given): id, job_id,
    job_name, title, mode, status, started_by, operator, created_at, started_at,
    finished_at, duration_s, the import counts (read, added, ...), error, scheduled_for."""
    sql = ("SELECT r.*, j.name AS job_name FROM runs r LEFT JOIN jobs j ON j.id = r.job_id"
           " WHERE r.kind = ?")
    params: list[Any] = [JOB_KIND]
    if job_name is not None:
        sql += " AND j.name = ?"
        params.append(job_name.strip())
    sql += " ORDER BY r.id DESC LIMIT ?"
    params.append(limit)
    out = []
    for r in conn.execute(sql, params):
        row = dict(r)
        summary = json.loads(row.pop("summary") or "{}")
        run_params = json.loads(row.pop("params") or "{}")
        started, finished = _parse_ts(row["started_at"]), _parse_ts(row["finished_at"])
        item = {k: row[k] for k in ("id", "job_id", "title", "mode", "status", "started_by", "operator",
                                    "created_at", "started_at", "finished_at", "error")}
        item["job_name"] = row["job_name"] or run_params.get("job", "")
        item["scheduled_for"] = run_params.get("scheduled_for")
        item["duration_s"] = (round((finished - started).total_seconds(), 3)
                              if started and finished else summary.get("duration_s"))
        for k in _COUNTS:
            item[k] = summary.get(k, 0)
        item["source"] = summary.get("source", "")
        out.append(item)
    return out


# -- permission -------------------------------------------------------------------------
# The rule lives in services/permissions.py with every other one; these names stay for callers.

from patron_tui.services.permissions import may_manage_jobs as may_manage  # noqa: E402,F401
from patron_tui.services.permissions import require_jobs_manager as require_manager  # noqa: E402,F401
