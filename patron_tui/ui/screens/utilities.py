"""Utilities: runs that act on the whole database or on a selection.

Today it holds the troubleshooting run, Check database; the patron utilities
join this list as they are built.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from patron_tui.ui.screens.base import SectionScreen

UTILITIES = [
    ("check", "Check database",
     "Integrity check, orphan rows, duplicate barcodes and district IDs, patrons at the "
     "Union Site, grades/sites/policies not in the reference tables."),
]


class UtilitiesScreen(SectionScreen):
    SECTION = "utilities"
    BINDINGS = [Binding("x", "cancel_run", "Cancel run")]

    DEFAULT_CSS = """
    UtilitiesScreen #util-body { height: 1fr; padding: 0 1; }
    UtilitiesScreen #util-list { height: auto; max-height: 8; }
    UtilitiesScreen #util-desc { height: auto; margin: 1 0; color: $foreground-muted; }
    UtilitiesScreen #util-status { height: 1; }
    UtilitiesScreen ProgressBar { height: 1; display: none; }
    UtilitiesScreen ProgressBar.-active { display: block; }
    """

    def compose_body(self) -> ComposeResult:
        with Vertical(id="util-body"):
            yield Static(Content("Choose a utility and press Enter to run it."), id="util-help")
            yield OptionList(
                *[Option(title, id=key) for key, title, _ in UTILITIES], id="util-list"
            )
            yield Static(id="util-desc")
            yield Static(id="util-status")
            yield ProgressBar(id="util-progress", show_eta=False)

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self._show_description(0)
        self.set_interval(0.2, self._poll_progress)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show_description(event.option_index)

    def _show_description(self, index: int) -> None:
        if 0 <= index < len(UTILITIES):
            self.query_one("#util-desc", Static).update(Content(UTILITIES[index][2]))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == "check":
            self.app.start_check()

    def action_cancel_run(self) -> None:
        self.app.cancel_runs()

    def _poll_progress(self) -> None:
        status = self.query_one("#util-status", Static)
        bar = self.query_one(ProgressBar)
        handle = self.app.engine.latest() if self.app.engine is not None else None
        if handle is None:
            return
        bar.add_class("-active")
        if handle.finished:
            bar.update(total=1, progress=1)
        else:
            bar.update(total=handle.total or None, progress=handle.done)
        status.update(Content(f"Run {handle.run_id} {handle.title}: {handle.status.value}"))
