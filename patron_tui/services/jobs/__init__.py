"""Scheduled patron updates: job definitions, their store, the weekly schedule, the sources
(a folder on this server, an SFTP server), the runner and the scheduler."""

from patron_tui.services.jobs.directory import check_directory, fetch_directory
from patron_tui.services.jobs.model import (
    DAYS,
    DaySchedule,
    Job,
    JobOptions,
    WeeklySchedule,
    describe_validation_error,
    parse_day,
    parse_schedule,
    suggested_schedule,
)
from patron_tui.services.jobs.runner import job_params, job_title, prune_runs, run_job
from patron_tui.services.jobs.schedule import DueRun, due_runs, next_run, slots_between
from patron_tui.services.jobs.scheduler import Scheduler, run_due, upcoming
from patron_tui.services.jobs.sources import Check, SourceError, TestReport, fetch, test_job
from patron_tui.services.jobs.store import (
    JOB_KIND,
    JobExists,
    delete_job,
    get_job,
    job_runs,
    list_jobs,
    may_manage,
    require_manager,
    save_job,
)

__all__ = [
    "DAYS", "DaySchedule", "Job", "JobOptions", "WeeklySchedule", "describe_validation_error",
    "parse_day", "parse_schedule", "suggested_schedule",
    "Check", "SourceError", "TestReport", "fetch", "test_job",
    "check_directory", "fetch_directory",
    "JOB_KIND", "JobExists", "delete_job", "get_job", "job_runs", "list_jobs", "may_manage",
    "require_manager", "save_job",
    "DueRun", "due_runs", "next_run", "slots_between",
    "job_params", "job_title", "prune_runs", "run_job",
    "Scheduler", "run_due", "upcoming",
]
