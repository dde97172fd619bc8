"""The shape of every section: header, body, live log pane, footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from patron_tui.ui.widgets.header import StatusHeader
from patron_tui.ui.widgets.log_pane import LogPane


class SectionScreen(Screen):
    """A top-level section. Subclasses set SECTION and implement compose_body."""

    SECTION = "home"
    #: the Log section shows the pane full height instead of docked
    FULL_LOG = False

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.SECTION)
        yield from self.compose_body()
        pane = LogPane(self.app.log_buffer, full=self.FULL_LOG, id="log-pane")
        if not self.FULL_LOG and not self.app.log_visible:
            pane.add_class("-hidden")
        yield pane
        yield Footer()

    def compose_body(self) -> ComposeResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def log_pane(self) -> LogPane:
        return self.query_one(LogPane)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            pane = self.log_pane
            if not self.FULL_LOG:
                pane.set_class(not self.app.log_visible, "-hidden")
            pane.view.reload()
            pane.extend([])
