"""Sections whose full capability arrives with later issues, and the Log section.

Each says plainly what it will hold; none shows made-up data.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content
from textual.widgets import Static

from patron_tui.ui.screens.base import SectionScreen
from patron_tui.ui.screens.jobs import JobsScreen  # the Jobs section lives in jobs.py

__all__ = ["BatchScreen", "JobsScreen", "LogScreen"]


class _Planned(SectionScreen):
    TEXT = ""

    DEFAULT_CSS = """
    _Planned #planned { padding: 1 2; height: 1fr; color: $foreground-muted; }
    """

    def compose_body(self) -> ComposeResult:
        yield Static(Content(self.TEXT), id="planned")


class BatchScreen(_Planned):
    SECTION = "batch"
    TEXT = (
        "Batch update\n\n"
        "Batch Update Patron Profile works on a query set: choose a medium, fill the fields "
        "to change, preview, then PROCESS. It is not available in this version yet; "
        "nothing here changes any patron."
    )


class LogScreen(SectionScreen):
    """The log pane, full height."""

    SECTION = "log"
    FULL_LOG = True

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.log_pane.view.focus()
