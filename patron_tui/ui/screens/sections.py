"""Sections whose full capability arrives with later issues, and the Log section.

Each says plainly what it will hold; none shows made-up data.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from patron_tui.ui.screens.base import SectionScreen
from patron_tui.ui.screens.converter import ConverterScreen


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


class JobsScreen(SectionScreen):
    """What the Jobs section offers now: the Import Converter; more arrives later."""

    SECTION = "jobs"
    BINDINGS = [Binding("c", "open_converter", "Import Converter")]
    DEFAULT_CSS = """
    JobsScreen #jobs-title { padding: 1 2 0 2; height: auto; }
    JobsScreen #jobs-list { height: auto; max-height: 6; margin: 1 2; }
    JobsScreen #jobs-later { padding: 0 2; height: 1fr; color: $foreground-muted; }
    """

    def compose_body(self) -> ComposeResult:
        yield Static(Content("Jobs"), id="jobs-title")
        yield OptionList(
            Option(Content("Import Converter — build a properties file from a CSV"), id="converter"),
            id="jobs-list",
        )
        yield Static(Content(
            "Enter opens the highlighted job (c: Import Converter). Scheduled patron updates "
            "(directory or SFTP, weekly Full/Incremental schedule) and the Job Manager are not "
            "available in this version yet. Runs started from Utilities (5) are listed on "
            "Home (1) and stream into the log pane."
        ), id="jobs-later")

    def on_mount(self) -> None:
        self.query_one("#jobs-list", OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == "converter":
            self.action_open_converter()

    def action_open_converter(self) -> None:
        self.app.push_screen(ConverterScreen())


class LogScreen(SectionScreen):
    """The log pane, full height."""

    SECTION = "log"
    FULL_LOG = True

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.log_pane.view.focus()
