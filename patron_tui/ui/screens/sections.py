"""Sections whose full capability arrives with later issues, and the Log section.

Each says plainly what it will hold; none shows made-up data.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from patron_tui.textsafe import visible
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
    """What the Jobs section offers now: the Import Converter, the Import screen and the job
    summaries of recent import runs; scheduled jobs arrive later."""

    SECTION = "jobs"
    BINDINGS = [
        Binding("c", "open_converter", "Import Converter"),
        Binding("i", "open_import", "Import a file"),
        Binding("r", "refresh", "Refresh runs", show=False),
    ]
    DEFAULT_CSS = """
    JobsScreen #jobs-title { padding: 0 2; height: 1; }
    JobsScreen #jobs-list { height: 1fr; margin: 0 2; }
    JobsScreen #jobs-later { padding: 0 2; height: auto; max-height: 3; color: $foreground-muted; }
    """

    def compose_body(self) -> ComposeResult:
        yield Static(Content("Jobs — Enter opens the highlighted entry"), id="jobs-title")
        yield OptionList(*self._fixed_options(), id="jobs-list")
        yield Static(Content(
            "c Import Converter · i Import · Enter on a run opens its job summary. Scheduled patron "
            "updates and the Job Manager are not available in this version yet."
        ), id="jobs-later")

    @staticmethod
    def _fixed_options() -> list[Option]:
        return [
            Option(Content("Import Converter — build a properties file from a CSV"), id="converter"),
            Option(Content("Import a patron file — Full or Incremental, with a job summary"), id="import"),
        ]

    def on_mount(self) -> None:
        self.query_one("#jobs-list", OptionList).focus()
        self.action_refresh()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self.is_mounted:
            self.action_refresh()

    def action_refresh(self) -> None:
        self.load_runs()

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs-runs")
    def load_runs(self) -> None:
        from patron_tui.services.imports.conflicts import import_runs

        conn = self.app.store.connect()
        try:
            runs = import_runs(conn, limit=30)
        finally:
            conn.close()
        self.app.call_from_thread(self.show_runs, runs)

    def show_runs(self, runs: list[dict]) -> None:
        ol = self.query_one("#jobs-list", OptionList)
        highlighted = ol.highlighted
        ol.clear_options()
        ol.add_options(self._fixed_options())
        if runs:
            ol.add_option(None)
            ol.add_option(Option(Content("Recent imports (Enter: job summary)"), disabled=True))
        for run in runs:
            s = run["summary"] or {}
            text = Text(no_wrap=True, overflow="ellipsis")
            text.append(f"run {run['id']:>4}  ", "bold")
            text.append(visible(run["title"]))
            text.append(f"  {run['status']}")
            if "read" in s:
                text.append(f" · {s.get('read', 0):,} read, {s.get('skipped', 0):,} skipped")
            if run["open_conflicts"]:
                n = run["open_conflicts"]
                text.append(f" · {n} open conflict{'s' if n != 1 else ''}", "bold")
            ol.add_option(Option(text, id=f"run-{run['id']}"))
        if highlighted is not None and highlighted < ol.option_count:
            ol.highlighted = highlighted

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id or ""
        if option_id == "converter":
            self.action_open_converter()
        elif option_id == "import":
            self.action_open_import()
        elif option_id.startswith("run-"):
            from patron_tui.ui.screens.job_summary import JobSummaryScreen

            self.app.push_screen(JobSummaryScreen(int(option_id.removeprefix("run-"))))

    def action_open_converter(self) -> None:
        self.app.push_screen(ConverterScreen())

    def action_open_import(self) -> None:
        from patron_tui.ui.screens.import_run import ImportScreen

        self.app.push_screen(ImportScreen())


class LogScreen(SectionScreen):
    """The log pane, full height."""

    SECTION = "log"
    FULL_LOG = True

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.log_pane.view.focus()
