"""The Jobs section: scheduled patron update jobs, the Import Converter, the Import screen and
the job summaries of recent import runs, in one list.

Keys on the list: Enter opens the highlighted entry (a job opens its form), a adds a job,
d deletes one (typed confirmation), t tests its server, r runs it now (Full or Incremental,
with a live progress bar, then its job summary), m opens the Job Manager, c the Import
Converter, i the Import screen. Adding, editing, deleting, testing and running need the
"manage patrons for the district" permission (`services.jobs.may_manage`); an operator without
it still sees the list and the Job Manager.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from patron_tui.textsafe import visible
from patron_tui.ui.screens.base import SectionScreen
from patron_tui.ui.screens.import_run import RunWatcher
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, ConfirmScreen
from patron_tui.ui.widgets.log_pane import LogPane

REFUSAL = ("You may not add, edit, delete, test or run scheduled jobs: that needs the "
           "'manage patrons for the district' permission (or security level 0).")
MODE_SHORT = {"full": "Full", "incremental": "Incr", "none": "-"}


def when_text(dt: datetime | None) -> str:
    """A local time, short: 'Mon 11-24 02:00'."""
    if dt is None:
        return "-"
    return dt.astimezone().strftime("%a %m-%d %H:%M")


def stamp_text(text: str | None) -> str:
    """A stored UTC timestamp as local 'MM-DD HH:MM' ('-' when none)."""
    if not text:
        return "-"
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return visible(text)[:16]
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone().strftime("%m-%d %H:%M")


def load_jobs_overview(store, now: datetime | None = None) -> dict[str, Any]:
    """Everything the Jobs list shows, read through services (runs on a worker thread)."""
    from patron_tui.services.imports.conflicts import import_runs
    from patron_tui.services.jobs import job_runs, list_jobs, may_manage, next_run

    now = now or datetime.now(timezone.utc)
    conn = store.connect()
    try:
        jobs = list_jobs(conn)
        last: dict[str, dict] = {}
        for run in job_runs(conn, limit=500):
            last.setdefault(run["job_name"], run)
        rows = []
        for job in jobs:
            try:
                nxt = next_run(job, now)
            except Exception:   # a schedule the zone cannot place: shown as none, never a crash
                nxt = None
            rows.append({"job": job, "next": nxt, "last": last.get(job.name)})
        return {"jobs": rows, "imports": import_runs(conn, limit=30),
                "may_manage": may_manage(conn, store.operator)}
    finally:
        conn.close()


def job_line(row: dict) -> Text:
    """One job in the list: name, source, next run, last run and its status."""
    job = row["job"]
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{visible(job.name)[:18]:18} ", "bold")
    source = "dir " if job.source == "directory" else "sftp"
    text.append(f"{source} ")
    nxt = row["next"]
    if nxt:
        text.append(f"{when_text(nxt[0])} {MODE_SHORT.get(nxt[1], nxt[1]):4}  ")
    else:
        text.append(f"{'not scheduled':20}  ")
    last = row["last"]
    if last:
        text.append(f"{stamp_text(last['started_at'] or last['created_at'])} ")
        text.append(last["status"], "bold" if last["status"] in ("failed", "interrupted", "missed") else "")
    else:
        text.append("never run")
    return text


class JobsScreen(SectionScreen):
    """The Jobs section (see the module doc)."""

    SECTION = "jobs"
    BINDINGS = [
        Binding("a", "add_job", "Add job"),
        Binding("d", "delete_job", "Delete job"),
        Binding("t", "test_job", "Test Server"),
        Binding("r", "run_job", "Run now"),
        Binding("m", "job_manager", "Job Manager"),
        Binding("c", "open_converter", "Import Converter"),
        Binding("i", "open_import", "Import a file"),
        Binding("f5", "refresh", "Refresh", show=False),
    ]
    DEFAULT_CSS = """
    JobsScreen #jobs-title { padding: 0 2; height: 1; }
    JobsScreen #jobs-list { height: 1fr; margin: 0 2; }
    JobsScreen #jobs-later { padding: 0 2; height: auto; max-height: 3; color: $foreground-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.may_manage: bool | None = None

    def compose_body(self) -> ComposeResult:
        yield Static(Content("Jobs — Enter opens the highlighted entry"), id="jobs-title")
        yield OptionList(*self._fixed_options(), id="jobs-list")
        yield Static(Content(
            "a add · Enter edit · d delete · t Test Server · r Run now · m Job Manager · "
            "c Import Converter · i Import"
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
        self.set_interval(2.0, self._refresh_if_active)

    def _refresh_if_active(self) -> None:
        # a run queued or running (here, from the CLI or by the scheduler) shows its outcome when it ends
        if self.app.screen is self and any(r["last"] and r["last"]["status"] in ("queued", "running")
                                           for r in self.rows):
            self.action_refresh()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self.is_mounted:
            self.action_refresh()

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs-list")
    def load(self) -> None:
        data = load_jobs_overview(self.app.store)
        self.app.call_from_thread(self.show, data)

    def show(self, data: dict) -> None:
        self.rows = data["jobs"]
        self.may_manage = data["may_manage"]
        ol = self.query_one("#jobs-list", OptionList)
        highlighted = ol.highlighted
        ol.clear_options()
        ol.add_options(self._fixed_options())
        ol.add_option(None)
        head = "Scheduled jobs" + ("" if self.may_manage else " (view only: you may not manage jobs)")
        ol.add_option(Option(Content(head), disabled=True))
        if self.rows:
            ol.add_option(Option(Text(f"{'name':18} src  {'next run':20}  last run", style="dim"),
                                 disabled=True))
        else:
            ol.add_option(Option(Content("No jobs yet: a adds one."), disabled=True))
        for index, row in enumerate(self.rows):
            ol.add_option(Option(job_line(row), id=f"job-{index}"))
        runs = data["imports"]
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

    # -- which job ---------------------------------------------------------------------------
    def current_job(self):
        ol = self.query_one("#jobs-list", OptionList)
        if ol.highlighted is None:
            return None
        option_id = ol.get_option_at_index(ol.highlighted).id or ""
        if option_id.startswith("job-"):
            return self.rows[int(option_id.removeprefix("job-"))]["job"]
        return None

    def _job_or_say(self):
        job = self.current_job()
        if job is None:
            self.notify("Highlight a job in the list first (a adds one).", severity="warning", markup=False)
        return job

    def _allowed(self) -> bool:
        if self.may_manage is False:
            self.notify(REFUSAL, severity="error", markup=False, timeout=8)
            return False
        return True

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id or ""
        if option_id == "converter":
            self.action_open_converter()
        elif option_id == "import":
            self.action_open_import()
        elif option_id.startswith("job-"):
            self.edit_job(self.rows[int(option_id.removeprefix("job-"))]["job"])
        elif option_id.startswith("run-"):
            from patron_tui.ui.screens.job_summary import JobSummaryScreen

            self.app.push_screen(JobSummaryScreen(int(option_id.removeprefix("run-"))))

    # -- actions ------------------------------------------------------------------------------
    def action_add_job(self) -> None:
        if self._allowed():
            from patron_tui.ui.screens.job_form import JobFormScreen

            self.app.push_screen(JobFormScreen(None))

    def edit_job(self, job) -> None:
        if self._allowed():
            from patron_tui.ui.screens.job_form import JobFormScreen

            self.app.push_screen(JobFormScreen(job))

    def action_delete_job(self) -> None:
        job = self._job_or_say()
        if job is None or not self._allowed():
            return
        question = (f"Delete the job {visible(job.name)}? Its schedule stops; its past runs and their "
                    "job summaries stay in the Job Manager.")
        self.app.push_screen(ConfirmScreen(question, "delete"),
                             lambda ok: self.delete(job.name) if ok else None)

    @work(thread=True, exit_on_error=False, group="jobs-delete")
    def delete(self, name: str) -> None:
        from patron_tui.ui.screens.job_form import delete_job_definition

        try:
            deleted = delete_job_definition(self.app.store, name)
        except (PermissionError, OSError, RuntimeError) as exc:
            self.app.call_from_thread(self.notify, visible(str(exc)), severity="error", markup=False)
            return
        text = f"Job {visible(name)} deleted." if deleted else f"There is no job {visible(name)} any more."
        self.app.call_from_thread(self.notify, text, markup=False)
        self.app.call_from_thread(self.action_refresh)

    def action_test_job(self) -> None:
        job = self._job_or_say()
        if job is None or not self._allowed():
            return
        from patron_tui.ui.screens.job_test import TestServerScreen

        self.app.push_screen(TestServerScreen(job))

    def action_run_job(self) -> None:
        job = self._job_or_say()
        if job is None or not self._allowed():
            return
        self.app.push_screen(RunModeScreen(job.name),
                             lambda mode: self.app.push_screen(JobRunScreen(job, mode)) if mode else None)

    def action_job_manager(self) -> None:
        from patron_tui.ui.screens.job_manager import JobManagerScreen

        job = self.current_job()
        self.app.push_screen(JobManagerScreen(job.name if job else None))

    def action_open_converter(self) -> None:
        from patron_tui.ui.screens.converter import ConverterScreen

        self.app.push_screen(ConverterScreen())

    def action_open_import(self) -> None:
        from patron_tui.ui.screens.import_run import ImportScreen

        self.app.push_screen(ImportScreen())


class RunModeScreen(ModalScreen["str | None"]):
    """Run the job now: f Full, i Incremental, Esc cancels."""

    BINDINGS = [
        Binding("f", "dismiss('full')", "Full"),
        Binding("i", "dismiss('incremental')", "Incremental"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="RunModeScreen")

    def __init__(self, job_name: str) -> None:
        super().__init__()
        self.job_name = job_name

    def compose(self) -> ComposeResult:
        with Vertical(id="run-mode-frame"):
            yield Static(Content(f"Run the job {visible(self.job_name)} now."))
            yield Static(Content("f Full: every record in the file · i Incremental: only new or changed "
                                 "records · Esc cancels"), classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#run-mode-frame").border_title = Content("Run now")


class JobRunScreen(RunWatcher, Screen[None]):
    """A job run, followed live: the progress bar, the figures, the log; its job summary at the end."""

    SUMMARY_ELSEWHERE = "the Job Manager (Jobs, m)"

    BINDINGS = [
        Binding("escape", "back", "Back / cancel run"),
        Binding("ctrl+c", "cancel_run", "Cancel run", show=False),
    ]
    DEFAULT_CSS = """
    JobRunScreen #jobrun-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    JobRunScreen #jobrun-source { height: auto; max-height: 2; padding: 0 1; color: $foreground-muted; }
    JobRunScreen #jobrun-progress { height: 1; padding: 0 1; }
    JobRunScreen #jobrun-status { height: auto; max-height: 3; padding: 0 1; }
    JobRunScreen LogPane { height: 1fr; min-height: 4; }
    """

    #: passed on to the SFTP download (settle_seconds, timeout, attempts); tests shorten them
    SFTP_OPTIONS: dict[str, Any] = {}

    def __init__(self, job, mode: str) -> None:
        super().__init__()
        self.job = job
        self.mode = mode
        self.handle = None
        self.started_at = 0.0
        self._timer = None
        self.summary_opened = False

    def compose(self) -> ComposeResult:
        yield Static(Content(f"Run now: job {visible(self.job.name)} ({self.mode}) · Esc back"),
                     id="jobrun-title")
        yield Static(Content(f"From {visible(self.job.source_label())}"), id="jobrun-source")
        yield ProgressBar(id="jobrun-progress", show_eta=False)
        yield Static(Content("Starting…"), id="jobrun-status")
        pane = LogPane(self.app.log_buffer, id="log-pane")
        yield pane
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.query_one(LogPane).view.focus()
        self.start()

    @property
    def running(self) -> bool:
        return self.handle is not None and not self.handle.finished

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-run-start")
    def start(self) -> None:
        from patron_tui.services.jobs import JOB_KIND, job_params, job_title, may_manage, run_job

        store = self.app.store
        conn = store.connect()
        try:
            allowed = may_manage(conn, store.operator)
        finally:
            conn.close()
        engine = self.app.engine
        if not allowed or engine is None:
            text = REFUSAL if not allowed else "The run engine is not ready yet; try again."
            self.app.call_from_thread(self._refused, text)
            return
        job, mode = self.job, self.mode
        sftp_options = {**self.SFTP_OPTIONS, "db_path": store.path}
        handle = engine.start(
            JOB_KIND, job_title(job, mode),
            lambda ctx: run_job(ctx, job.name, mode, sftp_options=dict(sftp_options)),
            job_id=job.id, mode=mode, started_by="operator", params=job_params(job, mode),
        )
        self.app.call_from_thread(self._started, handle)

    def _refused(self, text: str) -> None:
        self.query_one("#jobrun-status", Static).update(Content(text))
        self.notify(text, severity="error", markup=False, timeout=8)

    def _started(self, handle) -> None:
        self.handle = handle
        self.started_at = time.monotonic()
        self.notify(f"Run {handle.run_id}: {visible(handle.title)} started.", markup=False)
        self._timer = self.set_interval(0.1, self.poll)
        self.poll()

    def poll(self) -> None:
        handle = self.handle
        if handle is None:
            return
        done = handle.done
        elapsed = time.monotonic() - self.started_at
        minutes, seconds = divmod(int(elapsed), 60)
        figures = f"{done:,} records · {minutes}:{seconds:02d} elapsed"
        bar = self.query_one(ProgressBar)
        status = self.query_one("#jobrun-status", Static)
        if not handle.finished:
            if handle.total:
                bar.update(total=max(handle.total, done + 1), progress=done)
            else:
                bar.update(total=None, progress=done)
            status.update(Content(f"Run {handle.run_id} {handle.status.value}: {figures}"))
            return
        self.show_finished(handle, bar, status, figures)

    def action_cancel_run(self) -> None:
        from patron_tui.ui.screens.import_run import CancelRunScreen

        if not self.running:
            self.notify("No run is running.", markup=False)
            return
        handle = self.handle
        self.app.push_screen(CancelRunScreen(handle.run_id, handle.title),
                             lambda yes: handle.cancel() if yes and not handle.finished else None)

    def action_back(self) -> None:
        if self.running:
            self.action_cancel_run()
            return
        self.app.pop_screen()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.query_one(LogPane).view.reload()
