"""The Log section, and where the other sections that live in their own modules are found."""

from __future__ import annotations

from textual.app import ComposeResult

from patron_tui.ui.screens.base import SectionScreen
from patron_tui.ui.screens.batch import BatchScreen  # the Batch update section lives in batch.py
from patron_tui.ui.screens.jobs import JobsScreen  # the Jobs section lives in jobs.py

__all__ = ["BatchScreen", "JobsScreen", "LogScreen"]


class LogScreen(SectionScreen):
    """The log pane, full height."""

    SECTION = "log"
    FULL_LOG = True

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.log_pane.view.focus()
