"""Home: the district at a glance — patrons by status and site, recent runs,
next scheduled runs. Also the way to the administration screens: a the audit trail, o the
operators, b back up now (a consistent copy, `services.backup.backup`, in a worker)."""

from __future__ import annotations

import json

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import DataTable, Static

from patron_tui.services.overview import Overview, overview
from patron_tui.textsafe import visible
from patron_tui.ui.screens.base import SectionScreen


def cell(value: object, *, right: bool = False) -> Text:
    return Text(visible(value), no_wrap=True, overflow="ellipsis", justify="right" if right else "left")


class HomeScreen(SectionScreen):
    SECTION = "home"
    BINDINGS = [
        Binding("r", "refresh", "Refresh"),
        Binding("a", "app.open_audit", "Audit", id="home.audit"),
        Binding("b", "backup", "Back up", id="home.backup"),
        # the footer is full at 80 columns: o is listed by ? and the palette
        Binding("o", "app.open_operators", "Operators", show=False, id="home.operators"),
    ]

    DEFAULT_CSS = """
    HomeScreen #home-body { height: 1fr; }
    HomeScreen .home-title { text-style: bold; color: $accent; height: 1; margin-top: 1; }
    HomeScreen #home-total { height: auto; }
    HomeScreen #home-tables { height: auto; }
    HomeScreen #home-tables DataTable { width: 1fr; height: auto; max-height: 10; }
    HomeScreen #home-runs { height: auto; max-height: 10; }
    HomeScreen #home-next { height: auto; color: $foreground-muted; }
    """

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="home-body"):
            yield Static(Content("Loading figures…"), id="home-total")
            with Horizontal(id="home-tables"):
                yield DataTable(id="home-status", cursor_type="row", zebra_stripes=True)
                yield DataTable(id="home-sites", cursor_type="row", zebra_stripes=True)
            yield Static(Content("Recent runs"), classes="home-title")
            yield DataTable(id="home-runs", cursor_type="row", zebra_stripes=True)
            yield Static(Content("Next scheduled runs"), classes="home-title")
            yield Static(id="home-next")

    def on_mount(self) -> None:
        self.query_one("#home-status", DataTable).add_columns("Status", "Patrons")
        self.query_one("#home-sites", DataTable).add_columns("Site", "Name", "Patrons")
        self.query_one("#home-runs", DataTable).add_columns("Run", "What", "Status", "By", "Took", "Msgs")
        self.action_refresh()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self.is_mounted:
            self.action_refresh()

    def action_refresh(self) -> None:
        self.load_figures()

    def action_backup(self) -> None:
        self.notify("Backing up the database…", markup=False)
        self.back_up()

    @work(thread=True, exclusive=True, group="home-backup", exit_on_error=False)
    def back_up(self) -> None:
        from patron_tui.services.backup import BackupError, backup
        from patron_tui.services.permissions import PermissionDenied, require

        store = self.app.store
        conn = store.connect()
        try:
            require(conn, store.operator, "backup")
        except PermissionDenied as exc:
            self.app.call_from_thread(self.backup_said, f"No backup was made: {exc}", "error")
            return
        finally:
            conn.close()
        try:
            path = backup(store)
        except (BackupError, OSError) as exc:
            self.app.call_from_thread(self.backup_said, f"No backup was made: {exc}", "error")
            return
        self.app.call_from_thread(self.backup_said, f"Backup written: {path} ({path.stat().st_size:,} bytes).",
                                  "information")

    def backup_said(self, message: str, severity: str) -> None:
        self.app.log_buffer.add("error" if severity == "error" else "info", message)
        self.notify(visible(message), severity=severity, markup=False, timeout=12)

    @work(thread=True, exclusive=True, group="home", exit_on_error=False)
    def load_figures(self) -> None:
        conn = self.app.store.connect()
        try:
            figures = overview(conn)
        finally:
            conn.close()
        self.app.call_from_thread(self.show_figures, figures)

    def show_figures(self, figures: Overview) -> None:
        total = self.query_one("#home-total", Static)
        total.update(Content(f"{figures.total:,} patrons in {len(figures.by_site)} sites"))
        status = self.query_one("#home-status", DataTable)
        status.clear()
        for name, n in figures.by_status:
            status.add_row(cell(name), cell(f"{n:,}", right=True))
        sites = self.query_one("#home-sites", DataTable)
        sites.clear()
        for code, name, n in figures.by_site:
            sites.add_row(cell(code), cell(name or "(not in the site table)"), cell(f"{n:,}", right=True))
        runs = self.query_one("#home-runs", DataTable)
        runs.clear()
        if not figures.recent_runs:
            runs.add_row(cell("—"), cell("No runs yet: start one from Utilities (5)."), cell(""), cell(""), cell(""), cell(""))
        for run in figures.recent_runs:
            took = "" if run["duration"] is None else f"{run['duration']:.1f}s"
            msgs = json.loads(run["summary"] or "{}").get("messages", {})
            problems = sum(msgs.get(k, 0) for k in ("warning", "error", "skipped"))
            runs.add_row(
                cell(run["id"], right=True), cell(run["title"]), cell(run["status"]),
                cell(run["operator"]), cell(took, right=True), cell(problems, right=True),
            )
        nxt = self.query_one("#home-next", Static)
        if figures.jobs == 0:
            nxt.update(Content(
                "No scheduled patron updates are set up yet. Jobs (4) will list them with their next run times."
            ))
        else:
            nxt.update(Content(f"{figures.jobs} job(s) defined; see Jobs (4) for their schedules."))
