"""A scheduled patron update job, as the operator defines it (Destiny's "Schedule Patron
Update" page): a name, a source (a folder on this server or an SFTP server), a properties
file, an encoding, a weekly schedule and the job options.

Every validation error names the field it is about (`ValidationError` locations are
the field names: name, path, sftp_url, schedule.mon.time, options.keep_runs, ...).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from patron_tui.services.inactivation import InactivationRules

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday",
             "fri": "Friday", "sat": "Saturday", "sun": "Sunday"}
MODES: tuple[str, ...] = ("none", "full", "incremental")
NAME_MAX = 60
LARGE_DISTRICT = 50_000   # Follett: over 50,000 patrons, Incremental on weekdays

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class DaySchedule(BaseModel):
    """What runs on one weekday: none, a Full or an Incremental update, at a local time."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["none", "full", "incremental"] = "none"
    time: str = "02:00"

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        m = _TIME.match(v.strip())
        if not m:
            raise ValueError(f"time {v!r} is not HH:MM (24-hour, 00:00 to 23:59)")
        return f"{int(m.group(1)):02d}:{m.group(2)}"

    @property
    def hour(self) -> int:
        return int(self.time[:2])

    @property
    def minute(self) -> int:
        return int(self.time[3:])

    def label(self) -> str:
        return "none" if self.mode == "none" else f"{self.mode}@{self.time}"


class WeeklySchedule(BaseModel):
    """The seven days, Monday first."""

    model_config = ConfigDict(extra="forbid")

    mon: DaySchedule = Field(default_factory=DaySchedule)
    tue: DaySchedule = Field(default_factory=DaySchedule)
    wed: DaySchedule = Field(default_factory=DaySchedule)
    thu: DaySchedule = Field(default_factory=DaySchedule)
    fri: DaySchedule = Field(default_factory=DaySchedule)
    sat: DaySchedule = Field(default_factory=DaySchedule)
    sun: DaySchedule = Field(default_factory=DaySchedule)

    def days(self) -> list[tuple[str, DaySchedule]]:
        return [(d, getattr(self, d)) for d in DAYS]

    def day(self, weekday: int) -> DaySchedule:
        """By Python weekday number (0 = Monday)."""
        return getattr(self, DAYS[weekday])

    def is_empty(self) -> bool:
        return all(d.mode == "none" for _, d in self.days())

    def label(self) -> str:
        """'mon=full@02:00,tue=incremental@02:00,...' (days with none left out)."""
        return ",".join(f"{d}={s.label()}" for d, s in self.days() if s.mode != "none") or "none"


def parse_day(text: str, *, field: str = "schedule") -> DaySchedule:
    """'full@02:00', 'incremental@2:30', 'none' (also 'full 02:00')."""
    t = text.strip().lower()
    if t in ("", "none", "-"):
        return DaySchedule(mode="none")
    mode, _, time = t.replace(" ", "@").partition("@")
    if mode not in ("full", "incremental"):
        raise ValueError(f"{field}: {text!r}: the mode must be none, full or incremental")
    try:
        return DaySchedule(mode=mode, time=time or "02:00")
    except ValueError as exc:
        raise ValueError(f"{field}: {text!r}: time must be HH:MM (24-hour)") from exc


def parse_schedule(text: str, base: WeeklySchedule | None = None) -> WeeklySchedule:
    """'mon=full@02:00,tue=incremental@02:00' (days not named keep `base`, else none);
    a day may be a range 'mon-fri=incremental@02:00'."""
    days = {d: s for d, s in (base or WeeklySchedule()).days()}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower()[:3] if "-" not in key else key.strip().lower()
        if not eq:
            raise ValueError(f"schedule: {part!r} is not DAY=MODE@HH:MM")
        if "-" in key:
            a, _, b = key.partition("-")
            a, b = a.strip()[:3], b.strip()[:3]
            if a not in DAYS or b not in DAYS or DAYS.index(a) > DAYS.index(b):
                raise ValueError(f"schedule: {key!r} is not a day range such as mon-fri")
            names = DAYS[DAYS.index(a): DAYS.index(b) + 1]
        else:
            if key not in DAYS:
                raise ValueError(f"schedule: {key!r} is not a day (mon, tue, wed, thu, fri, sat, sun)")
            names = (key,)
        for n in names:
            days[n] = parse_day(value, field=f"schedule.{n}")
    return WeeklySchedule(**days)


def suggested_schedule(patron_count: int, time: str = "02:00") -> WeeklySchedule:
    """Follett's advice: over 50,000 patrons, Incremental on weekdays and Full on weekends;
    otherwise Full every day."""
    if patron_count > LARGE_DISTRICT:
        weekday = DaySchedule(mode="incremental", time=time)
        weekend = DaySchedule(mode="full", time=time)
        return WeeklySchedule(**{d: (weekend if d in ("sat", "sun") else weekday) for d in DAYS})
    return WeeklySchedule(**{d: DaySchedule(mode="full", time=time) for d in DAYS})


class JobOptions(BaseModel):
    """Patron Update Job Options."""

    model_config = ConfigDict(extra="forbid")

    allow_delete_outstanding: bool = False   # allow patrons with outstanding transactions to be deleted
    summary_errors_only: bool = False        # limit the job summary to errors and warnings
    delete_previous_runs: bool = False       # delete previously run jobs ...
    keep_runs: int | None = Field(default=None, ge=0, le=9999)   # ... keeping this many (None: keep none)


class Job(BaseModel):
    """A scheduled patron update job."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    id: int | None = None
    name: str
    source: Literal["directory", "sftp"] = "directory"
    path: str = ""                 # directory: the CSV's full path on this server
    sftp_url: str = ""             # sftp: sftp://host/sub/folders (case-sensitive)
    sftp_port: int = Field(default=22, ge=1, le=65535)
    sftp_user: str = ""
    sftp_auth: Literal["password", "key"] = "password"
    sftp_key_path: str = ""        # key auth: the private key file
    file_name: str = ""            # sftp: the CSV's name in the folder
    properties_path: str = ""
    encoding: str | None = None    # None: the properties file's
    schedule: WeeklySchedule = Field(default_factory=WeeklySchedule)
    options: JobOptions = Field(default_factory=JobOptions)
    inactivation: InactivationRules = Field(default_factory=InactivationRules)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("the job name must not be blank")
        if len(v) > NAME_MAX:
            raise ValueError(f"the job name is {len(v)} characters; at most {NAME_MAX}")
        if any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("the job name must not contain control characters")
        return v

    @field_validator("path", "sftp_user", "file_name", "properties_path", "sftp_key_path")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if any(ord(c) < 32 for c in v):
            raise ValueError("must not contain control characters")
        return v

    @field_validator("sftp_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if not v:
            return v
        if "://" not in v:
            v = "sftp://" + v
        scheme, _, rest = v.partition("://")
        if scheme.lower() != "sftp":
            raise ValueError(f"{v!r} is not an sftp:// URL")
        host = rest.split("/", 1)[0]
        if not host or "@" in host or any(c.isspace() for c in rest):
            raise ValueError(f"{v!r}: write sftp://HOST/FOLDER (no user name, no spaces in the host)")
        return "sftp://" + rest

    @field_validator("encoding", mode="before")
    @classmethod
    def _encoding(cls, v: object) -> object:
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        from patron_tui.services.imports.properties import normalize_encoding

        if not isinstance(v, str):
            raise ValueError("must be an encoding name")
        normalize_encoding(v)   # ValueError names the choices
        return v.strip()

    @model_validator(mode="after")
    def _source_fields(self) -> "Job":
        if self.source == "directory":
            if not self.path:
                raise _field_error("path", "a directory job needs the CSV file's full path")
            if not self.path.startswith(("/", "~")) and not re.match(r"^[A-Za-z]:[\\/]", self.path):
                raise _field_error("path", f"{self.path!r} is not a full path (start it with /)")
        else:
            if not self.sftp_url:
                raise _field_error("sftp_url", "an SFTP job needs the server and folder (sftp://host/folder)")
            if not self.sftp_user:
                raise _field_error("sftp_user", "an SFTP job needs the user name")
            if not self.file_name:
                raise _field_error("file_name", "an SFTP job needs the CSV file's name")
            if "/" in self.file_name:
                raise _field_error("file_name", "the file name must not contain '/' (put folders in the SFTP URL)")
            if self.sftp_auth == "key" and not self.sftp_key_path:
                raise _field_error("sftp_key_path", "key authentication needs the private key file")
        if not self.properties_path:
            raise _field_error("properties_path", "a job needs a properties file")
        o = self.options
        if o.keep_runs is not None and not o.delete_previous_runs:
            raise _field_error("options.keep_runs", "set only with 'delete previously run jobs'")
        return self

    # sftp helpers
    @property
    def sftp_host(self) -> str:
        return self.sftp_url.partition("://")[2].split("/", 1)[0]

    @property
    def sftp_folder(self) -> str:
        rest = self.sftp_url.partition("://")[2]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"

    def source_label(self) -> str:
        if self.source == "directory":
            return self.path
        folder = self.sftp_folder.rstrip("/")
        return f"sftp://{self.sftp_user}@{self.sftp_host}:{self.sftp_port}{folder}/{self.file_name}"


class _FieldError(ValueError):
    pass


def _field_error(field: str, message: str) -> ValueError:
    # pydantic reports a model validator's error at the model's root; put the field first
    return _FieldError(f"{field}: {message}")


def describe_validation_error(exc: Exception) -> list[str]:
    """A pydantic ValidationError as 'field: message' lines (other errors: their text)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return [str(exc)]
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        if not loc:   # a model validator's error already starts with its field
            out.append(msg)
        else:
            out.append(f"{loc}: {msg}")
    return out
