"""The console's log: every run event that is a message, newest last.

Run threads push events into `LogBuffer.pending` (a thread-safe deque); the
app drains it on a timer, so a flood of 200,000 messages becomes a few
screen updates a second instead of 200,000 Textual messages. The buffer keeps
the newest `capacity` lines (10,000 by default).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from patron_tui.models import EventKind, RunEvent

FILTERS: dict[str, tuple[str, ...]] = {
    "all": ("info", "warning", "skipped", "error"),
    "errors": ("error",),
    "warnings": ("warning",),
    "skipped": ("skipped",),
}


@dataclass(slots=True, frozen=True)
class LogLine:
    seq: int
    ts: float
    level: str
    run_id: int
    code: str
    text: str
    line: int | None = None
    barcode: str | None = None


class LogBuffer:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.lines: deque[LogLine] = deque(maxlen=capacity)
        self.pending: deque[RunEvent] = deque()
        self._seq = 0

    def accept(self, event: RunEvent) -> None:
        """Called from run threads: cheap and thread-safe (deque.append)."""
        if event.kind is not EventKind.PROGRESS:
            self.pending.append(event)

    def add(self, level: str, text: str, *, run_id: int = 0, code: str = "") -> LogLine:
        """A console-side line (not from a run)."""
        self._seq += 1
        entry = LogLine(self._seq, time.time(), level, run_id, code, text)
        self.lines.append(entry)
        return entry

    def drain(self) -> list[LogLine]:
        """Move pending events into the buffer; returns the new lines."""
        new: list[LogLine] = []
        pending = self.pending
        while pending:
            ev = pending.popleft()
            self._seq += 1
            if ev.kind is EventKind.DONE:
                level = "error" if ev.status is not None and ev.status.value == "failed" else "info"
                text = f"run {ev.run_id} finished: {ev.text}"
                entry = LogLine(self._seq, ev.ts, level, ev.run_id, "done", text)
            else:
                entry = LogLine(self._seq, ev.ts, ev.kind.value, ev.run_id, ev.code, ev.text,
                                ev.line, ev.barcode)
            self.lines.append(entry)
            new.append(entry)
        return new

    def filtered(self, name: str) -> list[LogLine]:
        levels = FILTERS[name]
        return [ln for ln in self.lines if ln.level in levels]
