"""Models shared by every layer: run events, run records, patrons.

`RunEvent` is a slotted dataclass rather than a pydantic model: an import of
200,000 rows can emit that many events, and they are built on the hot path.
Records read back from the database are pydantic models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict


class EventKind(str, Enum):
    PROGRESS = "progress"
    INFO = "info"
    WARNING = "warning"
    SKIPPED = "skipped"
    ERROR = "error"
    DONE = "done"


MESSAGE_KINDS = (EventKind.INFO, EventKind.WARNING, EventKind.SKIPPED, EventKind.ERROR)


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    MISSED = "missed"


@dataclass(slots=True, frozen=True)
class RunEvent:
    """One fact about a run: progress, a message, or its end.

    For PROGRESS, `done`/`total` count units of work; for DONE, `status` is the
    run's final status and `text` a one-line outcome.
    """

    run_id: int
    kind: EventKind
    text: str = ""
    code: str = ""
    line: int | None = None
    barcode: str | None = None
    patron_id: int | None = None
    done: int | None = None
    total: int | None = None
    status: RunStatus | None = None
    ts: float = field(default_factory=time.time)


class RunRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    title: str
    job_id: int | None = None
    mode: str | None = None
    status: RunStatus
    operator: str
    started_by: str = "operator"
    params: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    error: str | None = None
    progress_done: int = 0
    progress_total: int | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None


class Patron(BaseModel):
    """A patron row as stored (codes, not reference-table ids)."""

    id: int | None = None
    barcode: str | None = None
    district_id: str | None = None
    site: str
    last_name: str = ""
    first_name: str = ""
    middle_name: str = ""
    nickname: str = ""
    patron_type: str = ""
    access_level: str = ""
    persona: str = ""
    grade: str = ""
    graduation_year: int | None = None
    homeroom: str = ""
    location2: str = ""
    policy: str = ""
    security_group: str = ""
    status: str = "Active"
    gender: str = ""
    username: str | None = None
    password_hash: str | None = None
    email: str = ""
    email2: str = ""
    phone: str = ""
    birthdate: str | None = None
    account_expires: str | None = None
    protected: bool = False
    created_at: str | None = None
    updated_at: str | None = None
    last_seen_import_at: str | None = None
    inactive_since: str | None = None
