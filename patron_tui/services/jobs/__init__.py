"""Scheduled patron updates: job definitions, their store, the weekly schedule, the sources
(a folder on this server, an SFTP server), the runner and the scheduler."""

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
from patron_tui.services.jobs.sources import Check, SourceError, TestReport, fetch, test_job

__all__ = [
    "DAYS", "DaySchedule", "Job", "JobOptions", "WeeklySchedule", "describe_validation_error",
    "parse_day", "parse_schedule", "suggested_schedule",
    "Check", "SourceError", "TestReport", "fetch", "test_job",
]
