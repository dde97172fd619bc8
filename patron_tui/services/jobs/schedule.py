"""When a job runs next, and which of its runs are due now.

A job's weekly schedule is wall-clock time in the server's local time zone
(`dateutil.tz.tzlocal()`, injectable for tests). Occurrences come from
`dateutil.rrule` over local wall times, then are made real instants:

- spring forward: a time that does not exist that day (02:30 when clocks jump from 02:00
  to 03:00) runs at the same offset past the gap, 03:30 (`tz.resolve_imaginary`), once;
- fall back: a time that happens twice (01:30 when clocks go from 02:00 back to 01:00)
  runs once, at its first occurrence (fold=0, daylight time).

Every comparison is made in UTC: Python compares two datetimes with the same tzinfo by wall
time, which would call the two 01:30s of a fall-back night equal.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from dateutil import rrule
from dateutil import tz as dtz

from patron_tui.services.jobs.model import DAYS, Job

_WEEKDAYS = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)
DEFAULT_MAX_MISSED_AGE = timedelta(hours=6)
MAX_MISSED_AGE_SETTING = "jobs_max_missed_age_minutes"
# a scheduler down longer than this looks back no further (and records no more missed runs)
LOOKBACK = timedelta(days=8)


def local_zone() -> tzinfo:
    return dtz.tzlocal()


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("an aware datetime is needed")
    return dt.astimezone(timezone.utc)


def occurrences(job: Job, after: datetime, tz: tzinfo | None = None):
    """Yield (aware local datetime, mode) for every scheduled run strictly after `after`,
    in order, forever (nothing when the schedule is empty)."""
    tz = tz or local_zone()
    after_utc = _utc(after)
    days = [(i, d) for i, (_, d) in enumerate(job.schedule.days()) if d.mode != "none"]
    if not days:
        return
    # start a day early in wall time: a resolved spring-forward time moves later, never earlier
    start = (after_utc.astimezone(tz).replace(tzinfo=None) - timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    rules = rrule.rruleset()
    for i, d in days:
        rules.rrule(rrule.rrule(rrule.WEEKLY, dtstart=start, byweekday=_WEEKDAYS[i],
                                byhour=d.hour, byminute=d.minute, bysecond=0))
    for wall in rules:
        day = job.schedule.day(wall.weekday())
        when = dtz.resolve_imaginary(wall.replace(tzinfo=tz, fold=0))
        if _utc(when) > after_utc:
            yield when, day.mode


def next_run(job: Job, after: datetime, tz: tzinfo | None = None) -> tuple[datetime, str] | None:
    """The job's next scheduled run strictly after `after`: (aware local time, mode), or None."""
    for when, mode in occurrences(job, after, tz):
        return when, mode
    return None


def slots_between(job: Job, start: datetime, end: datetime, tz: tzinfo | None = None) -> list[tuple[datetime, str]]:
    """Scheduled runs in (start, end]."""
    out = []
    end_utc = _utc(end)
    for when, mode in occurrences(job, start, tz):
        if _utc(when) > end_utc:
            break
        out.append((when, mode))
    return out


@dataclass(frozen=True)
class DueRun:
    """One scheduled run a scheduler pass must act on: run it, or record it as missed."""

    job: Job
    slot: datetime          # the scheduled instant (aware)
    mode: str               # full / incremental
    action: str             # "run" or "missed"

    @property
    def slot_utc(self) -> str:
        return slot_text(self.slot)


def slot_text(dt: datetime) -> str:
    """A slot as stored (`job_leases.last_slot`, run params): UTC, the store's timestamp form."""
    return _utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def max_missed_age(conn: sqlite3.Connection, override: timedelta | None = None) -> timedelta:
    """The option if given, else the `jobs_max_missed_age_minutes` setting, else 6 hours."""
    if override is not None:
        return override
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (MAX_MISSED_AGE_SETTING,)).fetchone()
    if row is not None:
        try:
            return timedelta(minutes=max(0, int(row[0])))
        except ValueError:
            pass
    return DEFAULT_MAX_MISSED_AGE


def due_runs(conn: sqlite3.Connection, now: datetime, max_missed_age: timedelta | None = None,
             tz: tzinfo | None = None) -> list[list[DueRun]]:
    """What a scheduler pass at `now` must do, per job (one list per job, oldest first).

    A job's slots are counted from the later of the last slot a scheduler claimed and
    the job's last edit (an edit does not make yesterday's slots missed). Of the slots
    since then up to `now`, only the latest may run, and only if it is younger than
    `max_missed_age`; every other one is recorded as missed."""
    from patron_tui.services.jobs.store import list_jobs

    age = globals()["max_missed_age"](conn, max_missed_age)
    now_utc = _utc(now)
    baselines = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT j.id, j.updated_at, l.last_slot FROM jobs j LEFT JOIN job_leases l ON l.job_id = j.id")}
    out: list[list[DueRun]] = []
    for job in list_jobs(conn):
        updated, last_slot = baselines.get(job.id, (None, None))
        marks = [t for t in (parse_utc(updated), parse_utc(last_slot)) if t is not None]
        base = max([*marks, now_utc - LOOKBACK])
        slots = slots_between(job, base, now_utc, tz)
        if not slots:
            continue
        items = [DueRun(job, when, mode, "missed") for when, mode in slots[:-1]]
        when, mode = slots[-1]
        items.append(DueRun(job, when, mode, "run" if now_utc - _utc(when) <= age else "missed"))
        out.append(items)
    return out


__all__ = ["DAYS", "DEFAULT_MAX_MISSED_AGE", "DueRun", "due_runs", "local_zone", "max_missed_age",
           "next_run", "occurrences", "parse_utc", "slot_text", "slots_between"]
