"""The Job Manager (Jobs → m): every run of every kind, newest first, a page at a time.

A row is one run: scheduled jobs, imports, batch updates, the queue filler, utilities,
conflict resolutions, undos, journal prunes, checks. Each shows its kind (and mode), title,
status, its kind's main counts, duration, when it started and who started it; the line under
the table spells out the highlighted run. k cycles the kind filter (or choose one in the Kind
list), f chooses a job (its runs only), n/p page through thousands of runs, Enter opens the
run's summary, u undoes the highlighted run (the Undo dialog), F5 refreshes; while a run is
queued or running the list refreshes itself.
"""

from __future__ import annotations

from datetime import datetime, timezone

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Select, Static

from patron_tui.services.run_history import JOB, kind_label
from patron_tui.textsafe import visible
from patron_tui.ui.screens.jobs import stamp_text

ALL_JOBS = "*all*"
ALL_KINDS = "*all*"
MODE_SHORT = {"full": "Full", "incremental": "Incr"}
ACTIVE = ("queued", "running")
PAGE = 200


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


def short_stamp(text: str | None) -> str:
    """A stored UTC timestamp in five cells: 'HH:MM' today, 'MM-DD' before (the detail line has both)."""
    if not text:
        return "-"
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return visible(text)[:5]
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    when = when.astimezone()
    return when.strftime("%H:%M") if when.date() == datetime.now().astimezone().date() else when.strftime("%m-%d")


def run_what(run: dict) -> str:
    """A job run is named by its job; any other run by its title."""
    if run["kind"] == JOB:
        return visible(run["job_name"]) or "(deleted)"
    return visible(run["title"])


def run_detail(run: dict) -> str:
    """The highlighted run in words."""
    who = ("started by the scheduler" if run["started_by"] == "scheduler"
           else f"started by {visible(run['operator'])}")
    when = stamp_text(run["started_at"] or run["created_at"])
    kind = kind_label(run["kind"])
    if run["kind"] == JOB:
        head = f"Run {run['id']} · job {visible(run['job_name']) or '(deleted)'}"
    else:
        head = f"Run {run['id']} · {kind} {visible(run['title'])}"
    text = f"{head} · {run['status']}"
    if run.get("mode"):
        text += f" · {run['mode']}"
    text += f" · {who} at {when}"
    if run.get("finished_at"):
        text += f", ended {stamp_text(run['finished_at'])}"
    text += f" · {duration_text(run['duration_s'])}"
    counts = ", ".join(f"{word} {value:,}" if isinstance(value, int) else f"{word} {visible(value)}"
                       for word, value in run["counts"]) if run["summary"] else ""
    if counts:
        text += f" · {counts}"
    if run.get("scheduled_for"):
        text += f" · scheduled for {stamp_text(run['scheduled_for'])}"
    if run.get("undone_by"):
        text += f" · undone by run {run['undone_by']}"
    if run.get("error"):
        text += f" · {visible(run['error'])}"
    return text


class JobManagerScreen(Screen[None]):
    """Every run of every kind (see the module doc)."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("f", "choose_job", "Filter by job"),
        Binding("f5", "reload", "Refresh"),
        Binding("k", "next_kind", "Kind"),
        Binding("u", "undo", "Undo run"),
        Binding("n", "page(1)", "Next page"),
        Binding("p", "page(-1)", "Prev page"),
        Binding("K", "choose_kind", "Choose kind", show=False),
    ]
    DEFAULT_CSS = """
    JobManagerScreen #manager-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    JobManagerScreen #manager-filter-row { height: 1; padding: 0 1; }
    JobManagerScreen #manager-filter-row Label { width: 5; }
    JobManagerScreen #manager-kind { width: 26; margin-right: 2; }
    JobManagerScreen #manager-job { width: 1fr; }
    JobManagerScreen #manager-runs { height: 1fr; }
    JobManagerScreen #manager-detail { height: 3; padding: 0 1; border-top: solid $primary; }
    """

    def __init__(self, job_name: str | None = None, kind: str | None = None) -> None:
        super().__init__()
        self.job_name = job_name
        self.kind = JOB if job_name else kind
        self.page = 0
        self.total = 0
        self.runs: list[dict] = []
        self._timer = None
        self._names: list[str] = []
        self._kinds: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(Content("Job Manager — every run (Enter: summary · u undo · k kind · f job · Esc back)"),
                     id="manager-title")
        with Horizontal(id="manager-filter-row"):
            yield Label(Content("Kind"))
            yield Select([(Content("All kinds"), ALL_KINDS)], value=ALL_KINDS, allow_blank=False,
                         id="manager-kind", compact=True)
            yield Label(Content("Job"))
            yield Select([(Content("All jobs"), ALL_JOBS)], value=ALL_JOBS, allow_blank=False, id="manager-job",
                         compact=True)
        yield DataTable(cursor_type="row", zebra_stripes=True, id="manager-runs")
        yield Static(Content(""), id="manager-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#manager-runs", DataTable)
        # 62 cells + 2 of padding per column: the whole row fits 80 columns
        for label, width in (("Run", 4), ("Kind", 8), ("What", 12), ("Status", 9), ("Counts", 13), ("Time", 5),
                             ("Start", 5), ("By", 6)):
            table.add_column(label, width=width)
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
        self.load(self.kind, self.job_name, self.page)

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-manager")
    def load(self, kind: str | None, job_name: str | None, page: int) -> None:
        from patron_tui.services.jobs import list_jobs
        from patron_tui.services.run_history import count_runs, list_runs, run_kinds

        kinds = [kind] if kind else None
        conn = self.app.store.connect()
        try:
            total = count_runs(conn, kinds=kinds, job_name=job_name)
            last = max(0, (total - 1) // PAGE)
            page = min(max(page, 0), last)
            runs = list_runs(conn, kinds=kinds, job_name=job_name, limit=PAGE, offset=page * PAGE)
            names = [j.name for j in list_jobs(conn)]
            present = run_kinds(conn)
        finally:
            conn.close()
        self.app.call_from_thread(self.show, runs, total, page, names, present)

    def show(self, runs: list[dict], total: int, page: int, names: list[str], present: list[str]) -> None:
        self.runs, self.total, self.page = runs, total, page
        self._show_filters(names, present)
        table = self.query_one("#manager-runs", DataTable)
        keep = table.cursor_row
        table.clear()
        for run in runs:
            status = run["status"]
            kind = kind_label(run["kind"])
            if run.get("mode"):
                kind += " " + MODE_SHORT.get(run["mode"], run["mode"])
            table.add_row(
                Text(str(run["id"]), justify="right"),
                Text(visible(kind), no_wrap=True, overflow="ellipsis"),
                Text(run_what(run), no_wrap=True, overflow="ellipsis"),
                Text(status, style="bold" if status in ("failed", "interrupted", "missed", "running") else ""),
                Text(visible(run["counts_text"]) or "-", no_wrap=True, overflow="ellipsis"),
                Text(duration_text(run["duration_s"]), justify="right"),
                Text(short_stamp(run["started_at"] or run["created_at"])),
                Text("sched" if run["started_by"] == "scheduler" else visible(run["operator"]),
                     no_wrap=True, overflow="ellipsis"),
                key=str(run["id"]),
            )
        if runs and keep is not None:
            table.move_cursor(row=min(keep, len(runs) - 1))
        self.query_one("#manager-title", Static).update(Content(self.title_text()))
        self.show_detail()

    def title_text(self) -> str:
        if self.job_name:
            what = f"job {visible(self.job_name)}"
        elif self.kind:
            what = f"kind {kind_label(self.kind, short=False)}"
        else:
            what = "every kind"
        text = f"Job Manager — {self.total:,} run{'s' if self.total != 1 else ''} of {what}"
        if self.total > PAGE:
            first = self.page * PAGE + 1
            pages = (self.total - 1) // PAGE + 1
            text += f" · {first:,}–{first + len(self.runs) - 1:,}, page {self.page + 1} of {pages} (n/p)"
        return text

    def _show_filters(self, names: list[str], present: list[str]) -> None:
        kinds = present if self.kind is None or self.kind in present else [*present, self.kind]
        if kinds != self._kinds:
            self._kinds = kinds
            select = self.query_one("#manager-kind", Select)
            with self.prevent(Select.Changed):
                select.set_options([(Content("All kinds"), ALL_KINDS),
                                    *[(Content(kind_label(k, short=False)), k) for k in kinds]])
        kind_select = self.query_one("#manager-kind", Select)
        if kind_select.value != (self.kind or ALL_KINDS):
            with self.prevent(Select.Changed):
                kind_select.value = self.kind or ALL_KINDS
        if names != self._names:
            self._names = names
            select = self.query_one("#manager-job", Select)
            with self.prevent(Select.Changed):
                select.set_options([(Content("All jobs"), ALL_JOBS), *[(Content(visible(n)), n) for n in names]])
        job_select = self.query_one("#manager-job", Select)
        want = self.job_name if self.job_name in names else ALL_JOBS
        if job_select.value != want:
            with self.prevent(Select.Changed):
                job_select.value = want

    def current_run(self) -> dict | None:
        row = self.query_one("#manager-runs", DataTable).cursor_row
        if not self.runs or row is None or not 0 <= row < len(self.runs):
            return None
        return self.runs[row]

    def show_detail(self) -> None:
        detail = self.query_one("#manager-detail", Static)
        run = self.current_run()
        if run is None:
            if self.total == 0 and not (self.kind or self.job_name):
                detail.update(Content("No runs yet: run a job from Jobs (r), import a file, run a batch update "
                                      "or a utility."))
            else:
                detail.update(Content("No runs of this kind yet: k shows another kind."))
            return
        detail.update(Content(run_detail(run)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if not 0 <= event.cursor_row < len(self.runs):
            return
        from patron_tui.ui.screens.job_summary import JobSummaryScreen

        self.app.push_screen(JobSummaryScreen(self.runs[event.cursor_row]["id"]))

    # -- filters and pages ------------------------------------------------------------------
    def action_choose_job(self) -> None:
        self.query_one("#manager-job", Select).focus()

    def action_choose_kind(self) -> None:
        self.query_one("#manager-kind", Select).focus()

    def action_next_kind(self) -> None:
        """All kinds → each kind that has runs → all kinds again."""
        order = [None, *self._kinds]
        at = order.index(self.kind) if self.kind in order else 0
        self.set_kind(order[(at + 1) % len(order)])

    def set_kind(self, kind: str | None) -> None:
        self.kind = kind
        if kind != JOB:
            self.job_name = None
        self.page = 0
        self.action_reload()

    def action_page(self, step: int) -> None:
        pages = max(1, (self.total - 1) // PAGE + 1)
        page = min(max(self.page + step, 0), pages - 1)
        if page == self.page:
            self.notify("That is the last page." if step > 0 else "That is the first page.", markup=False)
            return
        self.page = page
        self.query_one("#manager-runs", DataTable).move_cursor(row=0)
        self.action_reload()

    def on_select_changed(self, event: Select.Changed) -> None:
        value = event.value
        if event.select.id == "manager-job":
            self.job_name = None if value in (ALL_JOBS, Select.BLANK) else str(value)
            if self.job_name:
                self.kind = JOB
            self.page = 0
            self.action_reload()
        elif event.select.id == "manager-kind":
            self.set_kind(None if value in (ALL_KINDS, Select.BLANK) else str(value))
        else:
            return
        self.query_one("#manager-runs", DataTable).focus()

    # -- undo ------------------------------------------------------------------------------
    def action_undo(self) -> None:
        run = self.current_run()
        if run is None:
            self.notify("Highlight a run to undo.", markup=False)
            return
        from patron_tui.ui.screens.undo_dialog import UndoScreen

        self.app.push_screen(UndoScreen(run["id"]), self.undone)

    def undone(self, run_id: int | None) -> None:
        if run_id is None:
            return
        from patron_tui.ui.screens.job_summary import JobSummaryScreen

        self.page = 0
        self.query_one("#manager-runs", DataTable).move_cursor(row=0)
        self.action_reload()
        self.app.push_screen(JobSummaryScreen(run_id))
