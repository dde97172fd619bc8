"""The Job Manager (Jobs → m): every run of every scheduled job, newest first.

A row is one run: its status (queued, running, succeeded, failed, cancelled, interrupted,
missed), mode, counts (read, added, updated, skipped, errors), duration, and who started it
(an operator, or the scheduler). The line under the table spells out the highlighted run.
f chooses a job to show (or all), Enter opens the run's job summary, F5 refreshes; while a
run is queued or running the list refreshes itself.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Select, Static

from patron_tui.textsafe import visible
from patron_tui.ui.screens.jobs import stamp_text

ALL_JOBS = "*all*"
MODE_SHORT = {"full": "Full", "incremental": "Incr"}
ACTIVE = ("queued", "running")


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}"


def run_detail(run: dict) -> str:
    """The highlighted run in words."""
    who = ("started by the scheduler" if run["started_by"] == "scheduler"
           else f"started by {visible(run['operator'])}")
    when = stamp_text(run["started_at"] or run["created_at"])
    mode = run["mode"] or "-"
    text = (f"Run {run['id']} · job {visible(run['job_name']) or '(deleted)'} · {run['status']} · {mode} · "
            f"{who} at {when} · {duration_text(run['duration_s'])} · read {run['read']:,}, added "
            f"{run['added']:,}, updated {run['updated']:,}, skipped {run['skipped']:,}, errors {run['errors']:,}")
    if run.get("scheduled_for"):
        text += f" · scheduled for {stamp_text(run['scheduled_for'])}"
    if run.get("error"):
        text += f" · {visible(run['error'])}"
    return text


class JobManagerScreen(Screen[None]):
    """Every run of every job (see the module doc)."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("f", "choose_job", "Filter by job"),
        Binding("f5", "reload", "Refresh"),
    ]
    DEFAULT_CSS = """
    JobManagerScreen #manager-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    JobManagerScreen #manager-filter-row { height: 1; padding: 0 1; }
    JobManagerScreen #manager-filter-row Label { width: 8; }
    JobManagerScreen #manager-job { width: 40; }
    JobManagerScreen #manager-runs { height: 1fr; }
    JobManagerScreen #manager-detail { height: 3; padding: 0 1; border-top: solid $primary; }
    """

    def __init__(self, job_name: str | None = None) -> None:
        super().__init__()
        self.job_name = job_name
        self.runs: list[dict] = []
        self._timer = None
        self._names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(Content("Job Manager — every run of every job (Enter: job summary · f filter · Esc back)"),
                     id="manager-title")
        with Horizontal(id="manager-filter-row"):
            yield Label(Content("Job"))
            yield Select([("All jobs", ALL_JOBS)], value=ALL_JOBS, allow_blank=False, id="manager-job",
                         compact=True)
        yield DataTable(cursor_type="row", zebra_stripes=True, id="manager-runs")
        yield Static(Content(""), id="manager-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#manager-runs", DataTable)
        table.add_columns("Run", "Job", "Status", "Mode", "Read", "Added", "Upd", "Skip", "Err", "Time",
                          "By", "Started")
        table.focus()
        self.action_reload()
        self._timer = self.set_interval(1.0, self._refresh_if_active)

    def _refresh_if_active(self) -> None:
        if any(r["status"] in ACTIVE for r in self.runs):
            self.action_reload()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.action_reload()

    def action_reload(self) -> None:
        self.load(self.job_name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-manager")
    def load(self, job_name: str | None) -> None:
        from patron_tui.services.jobs import job_runs, list_jobs

        conn = self.app.store.connect()
        try:
            runs = job_runs(conn, job_name=job_name, limit=500)
            names = [j.name for j in list_jobs(conn)]
        finally:
            conn.close()
        self.app.call_from_thread(self.show, runs, names)

    def show(self, runs: list[dict], names: list[str]) -> None:
        self.runs = runs
        if names != self._names:
            self._names = names
            select = self.query_one("#manager-job", Select)
            with self.prevent(Select.Changed):
                select.set_options([("All jobs", ALL_JOBS), *[(visible(n), n) for n in names]])
                select.value = self.job_name if self.job_name in names else ALL_JOBS
        table = self.query_one("#manager-runs", DataTable)
        keep = table.cursor_row
        table.clear()
        for run in runs:
            status = run["status"]
            table.add_row(
                Text(str(run["id"]), justify="right"),
                Text(visible(run["job_name"]) or "(deleted)", no_wrap=True, overflow="ellipsis"),
                Text(status, style="bold" if status in ("failed", "interrupted", "missed", "running") else ""),
                Text(MODE_SHORT.get(run["mode"] or "", run["mode"] or "-")),
                *[Text(f"{run[k]:,}", justify="right") for k in ("read", "added", "updated", "skipped", "errors")],
                Text(duration_text(run["duration_s"]), justify="right"),
                Text("sched" if run["started_by"] == "scheduler" else "oper"),
                Text(stamp_text(run["started_at"] or run["created_at"])),
                key=str(run["id"]),
            )
        if runs and keep is not None:
            table.move_cursor(row=min(keep, len(runs) - 1))
        what = f"job {visible(self.job_name)}" if self.job_name else "every job"
        title = f"Job Manager — {len(runs):,} run{'s' if len(runs) != 1 else ''} of {what} (Enter: job summary)"
        self.query_one("#manager-title", Static).update(Content(title))
        self.show_detail()

    def show_detail(self) -> None:
        table = self.query_one("#manager-runs", DataTable)
        detail = self.query_one("#manager-detail", Static)
        row = table.cursor_row
        if not self.runs or row is None or not 0 <= row < len(self.runs):
            detail.update(Content("No runs yet: run a job from Jobs (r) or let the scheduler run it."))
            return
        detail.update(Content(run_detail(self.runs[row])))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if not 0 <= event.cursor_row < len(self.runs):
            return
        from patron_tui.ui.screens.job_summary import JobSummaryScreen

        self.app.push_screen(JobSummaryScreen(self.runs[event.cursor_row]["id"]))

    def action_choose_job(self) -> None:
        self.query_one("#manager-job", Select).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "manager-job":
            return
        value = event.value
        self.job_name = None if value in (ALL_JOBS, Select.BLANK) else str(value)
        self.action_reload()
        self.query_one("#manager-runs", DataTable).focus()
