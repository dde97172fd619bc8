"""Sections whose full capability arrives with later issues, and the Log section.

Each says plainly what it will hold; none shows made-up data.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from patron_tui.ui.screens.base import SectionScreen


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


class JobsScreen(_Planned):
    SECTION = "jobs"
    TEXT = (
        "Jobs\n\n"
        "Scheduled patron updates (directory or SFTP, weekly Full/Incremental schedule) and "
        "the Job Manager are not available in this version yet. Runs started from "
        "Utilities (5) are listed on Home (1) and stream into the log pane."
    )


class LogScreen(SectionScreen):
    """The log pane, full height."""

    SECTION = "log"
    FULL_LOG = True

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.log_pane.view.focus()
