"""Running a job: take its lease, fetch its file, import it, prune old runs.

`run_job` is a run function for `RunEngine.start`:

    engine.start("job", job_title(job, mode), lambda ctx: run_job(ctx, job.name, mode),
                 job_id=job.id, mode=mode, started_by="operator", params=job_params(job, mode))

The file is fetched into a staging folder of its own (removed after the run), then
imported by the import engine with the job's properties file, encoding and summary
option. After a Full import, the job's Inactivation / Deletion rules run when every
safeguard lets them (services/inactivation.py), in a transaction of their own. After the
run, "delete previously run jobs" keeps the newest N runs of the job.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

from patron_tui.models import EventKind
from patron_tui.runs import RunContext, RunFailed
from patron_tui.services.inactivation import apply_rules, previous_full, rule_title, safeguard
from patron_tui.services.jobs import lease
from patron_tui.services.jobs.model import Job
from patron_tui.services.jobs.sources import SourceError, fetch
from patron_tui.services.jobs.store import JOB_KIND, get_job
from patron_tui.store.changeset import ChangesetWriter

MODES = ("full", "incremental")


def job_title(job: Job, mode: str) -> str:
    return f"Job {job.name} ({mode})"


def job_params(job: Job, mode: str, **extra: Any) -> dict[str, Any]:
    """What a job run's row remembers (never a secret)."""
    return {"job": job.name, "source": job.source_label(), "properties": job.properties_path,
            "mode": mode, **extra}


def run_job(ctx: RunContext, job_name: str, mode: str, *, staging_dir: str | Path | None = None,
            secret_store: Any = None, sftp_options: dict[str, Any] | None = None,
            settle_seconds: float | None = None, today: dt.date | None = None) -> dict[str, Any]:
    """Fetch and import the job's file (see the module doc); returns the import's summary
    plus `job` and `source`."""
    if mode not in MODES:
        raise RunFailed(f"unknown mode {mode!r}; use full or incremental")
    conn = ctx.conn
    job = get_job(conn, job_name)
    if job is None:
        raise RunFailed(f"there is no job named {job_name!r}")
    owner = lease.owner_id(f"run{ctx.run_id}")
    if not lease.acquire(conn, job.id, owner):
        held = lease.holder(conn, job.id) or "another process"
        raise RunFailed(f"job {job.name!r} is already running ({held}); this run did nothing")
    summary: dict[str, Any] = {}
    try:
        ctx.info(f"Job {job.name}: {mode} update from {job.source_label()}", code="job")
        with tempfile.TemporaryDirectory(prefix="patron-job-", dir=staging_dir) as tmp:
            try:
                if job.source == "directory":
                    from patron_tui.services.jobs.directory import fetch_directory

                    path = fetch_directory(job, tmp, settle_seconds=settle_seconds)
                else:
                    store = secret_store
                    if store is None:
                        from patron_tui.services.jobs.secrets import default_secret_store

                        store = default_secret_store(ctx.store.path)
                    kw = {"db_path": ctx.store.path, **(sftp_options or {})}
                    kw.setdefault("on_retry", lambda exc, delay: ctx.warning(
                        f"{exc}; trying again in {delay:g} s", code="retry"))
                    path = fetch(job, tmp, secret_store=store, **kw)
            except SourceError as exc:
                raise RunFailed(str(exc)) from None
            ctx.check_cancelled()
            ctx.info(f"Fetched {path.name} ({path.stat().st_size:,} bytes)", code="fetched")
            from patron_tui.services.imports.engine import run_import

            ctx.summary.update({"job": job.name, "source": job.source_label()})
            if job.inactivation.any_rule:
                # the import's commit is not the run's outcome: the rules follow in a transaction
                # of their own, and a process that dies between the two says so (RunContext.writer)
                ctx.if_stopped = ("its import was committed, then the process stopped before the job's "
                                  "inactivation / deletion rules ran: they did not run")
            summary = run_import(ctx, path=path, properties_path=job.properties_path, mode=mode,
                                 encoding=job.encoding, summary_errors_only=job.options.summary_errors_only)
        summary = {**summary, "job": job.name, "source": job.source_label()}
        summary["inactivation"] = _inactivation(ctx, job, summary, today=today)
        if ctx.if_stopped is not None:   # the rules were held (nothing more to write): the outcome alone
            ctx.summary.update(summary)
            ctx.commit_outcome()
        return summary
    finally:
        try:
            lease.release(conn, job.id, owner)
        finally:
            if job.options.delete_previous_runs:
                try:
                    with ctx.writer(outcome=False) as w:   # housekeeping, not this run's outcome
                        pruned = prune_runs(w, job.id, job.options.keep_runs, current_run_id=ctx.run_id)
                    if pruned:
                        ctx.info(f"Deleted {len(pruned)} previous run(s) of this job", code="pruned")
                except Exception as exc:   # pruning must not turn a good import into a failure
                    ctx.warning(f"Could not delete previous runs: {exc}", code="prune-failed")


def _inactivation(ctx: RunContext, job: Job, summary: dict[str, Any], *, today: dt.date | None) -> dict[str, Any]:
    """After the import: the job's Inactivation / Deletion rules, when every safeguard lets
    them run (services/inactivation.py), in a transaction of their own. Each patron touched
    or kept back is a message naming the rule; the counts go to the summary."""
    rules = job.inactivation
    if not rules.any_rule:
        return {}
    # the yardstick of "% of the previous Full update": the last Full run whose rules RAN (a held
    # run's file was not trusted, so it is never the yardstick; issue 14 item 8)
    previous = previous_full(ctx.conn, job.id, ctx.run_id)
    compared = {"compared_with": previous.as_dict() if previous is not None else None}
    read = int(summary.get("read") or 0)
    held = safeguard(rules, mode=summary.get("mode", ""), status="succeeded", read=read,
                     skipped=int(summary.get("skipped") or 0), previous=previous)
    if held is not None:
        ctx.warning(f"Inactivation / deletion did not run: {held}.", code="inactivation_held")
        return {"held": held, "ran": False, **compared}
    if rules.min_percent_of_previous and previous is not None and previous.read:
        ctx.info(f"{read:,} records read is {read * 100 // previous.read}% of {previous.text()} (the job needs at "
                 f"least {rules.min_percent_of_previous}%).", code="inactivation_compared")
    from patron_tui.services.backup import BackupError, maybe_backup

    try:   # the setting backup_before_destructive: a backup first, or no inactivation/deletion
        taken = maybe_backup(ctx.conn, f"the inactivation/deletion rules of job {job.name}")
    except BackupError as exc:
        ctx.error(f"Inactivation / deletion did not run: {exc}.", code="inactivation_held")
        return {"held": str(exc), "ran": False, **compared}
    if taken is not None:
        ctx.info(f"Backup before inactivation / deletion: {taken}", code="backup")
    today = today or dt.datetime.now().date()
    with ctx.writer() as w:
        outcomes = apply_rules(w, rules, today, allow_outstanding=job.options.allow_delete_outstanding)
        counts = {"inactivated": 0, "deleted": 0, "kept_back": 0}
        for o in outcomes:
            counts[o.action] += 1
        # the last transaction of the job run: its outcome, 'succeeded', commits with the rules' changes
        ctx.summary.update({**summary, "inactivation": {**counts, "ran": True, **compared}})
        ctx.if_stopped = None
    ctx.messages(EventKind.INFO, [
        (f"{o.name}: {o.action.replace('_', ' ')} by \"{rule_title(rules, o.rule)}\""
         f" ({o.reason})", o.action, None, o.barcode, o.patron_id)
        for o in outcomes])
    ctx.info(f"Inactivation / deletion: {counts['inactivated']} inactivated, {counts['deleted']} deleted, "
             f"{counts['kept_back']} kept back (outstanding transactions, not allowed by the job).",
             code="inactivation_done")
    return {**counts, "ran": True, **compared}


def prune_runs(writer: ChangesetWriter, job_id: int, keep: int | None, *,
               current_run_id: int | None = None) -> list[int]:
    """Delete the finished runs of the job beyond the newest `keep` (the current run counts
    as one of them; None or 0 keeps only the current run), with their messages and import
    conflicts, through the writer. Returns the deleted run ids."""
    conn = writer.conn
    keep_n = max(1 if current_run_id is not None else 0, keep or 0)
    rows = [r[0] for r in conn.execute(
        "SELECT id FROM runs WHERE job_id = ? AND kind = ? ORDER BY id DESC", (job_id, JOB_KIND))]
    if current_run_id is not None and current_run_id in rows:
        rows.remove(current_run_id)
        keep_n -= 1
    finished = {r[0] for r in conn.execute(
        "SELECT id FROM runs WHERE job_id = ? AND status NOT IN ('queued', 'running')", (job_id,))}
    victims = [rid for rid in rows[keep_n:] if rid in finished]
    for rid in victims:
        writer.delete_where("import_conflicts", {"run_id": rid})
        writer.delete_where("run_messages", {"run_id": rid})
        writer.delete("runs", rid)
    return victims
