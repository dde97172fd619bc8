"""The Import screen (Jobs → i): import a patron CSV file as a run, and follow it.

A form in tab order (CSV file, properties file, mode, encoding override, dry run, errors-only
summary, Start); Ctrl+S or F5 starts from anywhere in it. The import itself is
`services.imports.engine.run_import` on the app's run engine; this screen only checks the
two files, starts the run, shows its progress (records, records per second, elapsed time,
and a bar against an estimate of the record count made from the file's size) and, when the
run ends, opens its job summary. Escape or Ctrl+C cancels a running import after a yes.
Ctrl+B (Run in background) hands the import to the scheduler service instead: it is queued in
the database, and any console follows it in the Job Manager.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widgets import Button, Checkbox, Footer, Input, Label, ProgressBar, Select, Static

from patron_tui.services.imports.engine import IMPORT_KIND, MODES, run_import
from patron_tui.services.imports.properties import PropertiesError, load_properties
from patron_tui.services.imports.sourcefile import describe, open_source
from patron_tui.textsafe import visible
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, AskScreen
from patron_tui.ui.widgets.log_pane import LogPane

FROM_PROPERTIES = "from-properties"
ENCODINGS = ("utf-8", "utf-8-sig", "windows-1252", "mac-roman", "iso-8859-1", "utf-16")


class PathSuggester(Suggester):
    """Completes file system paths (Right arrow takes the completion)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(complete_path, value)


def complete_path(value: str) -> str | None:
    """The first entry of the typed folder that starts with the typed name (folders end in /)."""
    if not value:
        return None
    expanded = os.path.expanduser(value)
    folder, name = os.path.split(expanded)
    try:
        entries = sorted(os.listdir(folder or "."))
    except OSError:
        return None
    for entry in entries:
        if entry.startswith(name) and entry != name and (name or not entry.startswith(".")):
            rest = entry[len(name):]
            if os.path.isdir(os.path.join(folder or ".", entry)):
                rest += "/"
            return value + rest
    return None


def estimate_records(path: Path) -> int | None:
    """About how many records the file holds, from its size and its first 64 KB."""
    try:
        f, identity = open_source(path)   # never blocks (a FIFO swapped in is refused)
        size = identity.size
        with f:
            head = f.read(65536)
    except (OSError, ValueError):   # ValueError: sourcefile's SourceFileError
        return None
    lines = head.count(b"\n")
    if not head or not lines:
        return None
    if len(head) >= size:
        return max(0, lines - 1 + (0 if head.endswith(b"\n") else 1))
    return max(1, int(size / (len(head) / lines)) - 1)


@dataclass(frozen=True)
class ImportRequest:
    path: Path
    properties: Path
    mode: str
    encoding: str | None
    dry_run: bool
    errors_only: bool

    @property
    def title(self) -> str:
        return f"Import {self.path.name} ({self.mode}{', dry run' if self.dry_run else ''})"

    def params(self) -> dict:
        """The run's params (what a queued import is run from: services/background.py)."""
        return {"file": str(self.path), "properties": str(self.properties), "mode": self.mode,
                "dry_run": self.dry_run, "encoding": self.encoding, "errors_only": self.errors_only}


def check_csv(value: str) -> tuple[Path | None, str]:
    """(path, "") when `value` names a readable file, else (None, a message naming it)."""
    if not value.strip():
        return None, "Type the path of the patron CSV file."
    path = Path(value.strip()).expanduser()
    what = describe(path)   # no such file, a directory, a FIFO, a link loop: said as such
    if what is not None:
        return None, f"CSV file {path}: {what}."
    if not os.access(path, os.R_OK):
        return None, f"CSV file {path}: permission denied."
    return path, ""


def check_properties(value: str) -> tuple[Path | None, str]:
    """(path, "") when `value` names a valid properties file, else (None, its problems)."""
    if not value.strip():
        return None, "Type the path of the properties file (the Import Converter, Jobs → c, makes one)."
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        return None, f"Properties file {path}: {'a folder' if path.is_dir() else 'no such file'}."
    try:
        load_properties(path)
    except PropertiesError as exc:
        return None, f"Properties file {path} is not valid:\n" + "\n".join(exc.messages)
    except OSError as exc:
        return None, f"Properties file {path}: {exc.strerror or exc}."
    return path, ""


class MarkedCheckbox(Checkbox):
    """A Checkbox whose box shows X only when ticked, so it reads without colour (mono theme)."""

    @property
    def _button(self):
        self.BUTTON_INNER = "X" if self.value else " "
        return super()._button


class CancelRunScreen(AskScreen):
    """Cancel the running import? y cancels, n or Escape keeps it running."""

    BINDINGS = [
        Binding("y", "dismiss(True)", "Yes, cancel it"),
        Binding("n", "dismiss(False)", "No, keep running"),
        Binding("escape", "dismiss(False)", "Keep running", show=False),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="CancelRunScreen")
    FRAME_ID = "cancel-frame"

    def __init__(self, run_id: int, title: str) -> None:
        super().__init__("Cancel the import",
                         f"Cancel run {run_id}, {visible(title)}?\n"
                         "Nothing it was writing is kept (the import is one transaction).",
                         "y cancels the run · n or Esc keeps it running")
        self.run_id = run_id
        self.run_title = title


class RunWatcher:
    """What the Import screen and a job's Run now share: a finished run on screen, then its
    job summary (or, when the operator has moved on, a notification saying where it is)."""

    SUMMARY_ELSEWHERE = "Jobs (4)"
    _timer = None
    summary_opened = False

    def show_finished(self, handle, bar, status, figures: str) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        done = handle.done or 0
        bar.update(total=max(done, 1), progress=max(done, 1))
        outcome = handle.status.value + (f": {handle.error}" if handle.error else "")
        status.update(Content(f"Run {handle.run_id} {visible(outcome)} · {figures}"))
        if not self.summary_opened:
            self.summary_opened = True
            self.open_summary(handle.run_id)

    def open_summary(self, run_id: int) -> None:
        from patron_tui.ui.screens.job_summary import JobSummaryScreen

        if isinstance(self.app.screen, CancelRunScreen) and self.app.screen_stack[-2] is self:
            self.app.screen.dismiss(False)  # the run ended while the question was open
            self.app.push_screen(JobSummaryScreen(run_id))
        elif self.app.screen is self:
            self.app.push_screen(JobSummaryScreen(run_id))
        else:
            self.notify(f"Run {run_id} finished; its job summary is in {self.SUMMARY_ELSEWHERE}.", markup=False)


class ImportScreen(RunWatcher, Screen[None]):
    """Import a patron CSV file: the form, the run's progress, then its job summary."""

    BINDINGS = [
        Binding("ctrl+s", "start", "Start import"),
        Binding("f5", "start", "Start import", show=False),
        Binding("ctrl+b", "start_background", "Run in background", id="import.background"),
        Binding("escape", "back", "Back / cancel run"),
        Binding("ctrl+c", "cancel_run", "Cancel run", show=False),
    ]
    DEFAULT_CSS = """
    ImportScreen #import-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    ImportScreen #import-form { height: auto; padding: 0 1; }
    ImportScreen .import-row { height: 1; }
    ImportScreen .import-row Label { width: 13; }
    ImportScreen .import-row Input { width: 1fr; }
    ImportScreen .import-row Select { width: 1fr; }
    ImportScreen #import-checks { height: 1; }
    ImportScreen #import-checks Checkbox { margin-right: 2; }
    ImportScreen #import-start { margin: 0 0 0 13; min-width: 10; }
    ImportScreen #import-error { display: none; height: auto; max-height: 4; padding: 0 1; color: $error; }
    ImportScreen #import-progress { height: 1; padding: 0 1; }
    ImportScreen #import-status { height: 1; padding: 0 1; }
    ImportScreen LogPane { height: 1fr; min-height: 4; }
    """

    def __init__(self, path: str | Path | None = None, properties: str | Path | None = None) -> None:
        super().__init__()
        self.initial_path = str(path) if path else ""
        self.initial_properties = str(properties) if properties else ""
        self.handle = None
        self.request: ImportRequest | None = None
        self.estimate: int | None = None
        self.started_at = 0.0
        self._timer = None
        self.summary_opened = False

    def compose(self) -> ComposeResult:
        yield Static(Content("Import a patron file (Tab moves · Ctrl+S or F5 starts · Esc back)"),
                     id="import-title")
        with Vertical(id="import-form"):
            with Horizontal(classes="import-row"):
                yield Label(Content("CSV file"))
                yield Input(value=self.initial_path, placeholder="path of the patron CSV file",
                            suggester=PathSuggester(), id="import-path", compact=True)
            with Horizontal(classes="import-row"):
                yield Label(Content("Properties"))
                yield Input(value=self.initial_properties, placeholder="path of the .properties file",
                            suggester=PathSuggester(), id="import-properties", compact=True)
            with Horizontal(classes="import-row"):
                yield Label(Content("Mode"))
                yield Select([("Full: every record", "full"),
                              ("Incremental: new or changed records", "incremental")],
                             value="full", allow_blank=False, id="import-mode", compact=True)
            with Horizontal(classes="import-row"):
                yield Label(Content("Encoding"))
                yield Select([("from the properties file", FROM_PROPERTIES), *[(e, e) for e in ENCODINGS]],
                             value=FROM_PROPERTIES, allow_blank=False, id="import-encoding", compact=True)
            with Horizontal(id="import-checks"):
                yield MarkedCheckbox(Content("Dry run"), id="import-dry-run", compact=True)
                yield MarkedCheckbox(Content("Limit the job summary to errors and warnings"),
                               id="import-errors-only", compact=True)
            yield Button(Content("Start"), id="import-start", compact=True)
        yield Static(Content(""), id="import-error")
        yield ProgressBar(id="import-progress", show_eta=False)
        yield Static(Content("Fill the form, then Start (Ctrl+S)."), id="import-status")
        pane = LogPane(self.app.log_buffer, id="log-pane")
        pane.set_class(not self.app.log_visible, "-hidden")
        yield pane
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#import-path", Input).focus()
        self.query_one(ProgressBar).update(total=1, progress=0)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            pane = self.query_one(LogPane)
            pane.set_class(not self.app.log_visible, "-hidden")
            pane.view.reload()

    @property
    def running(self) -> bool:
        return self.handle is not None and not self.handle.finished

    # -- the form --------------------------------------------------------------------------
    def set_error(self, message: str) -> None:
        error = self.query_one("#import-error", Static)
        error.update(Content("\n".join(visible(line) for line in message.splitlines())))
        error.display = bool(message)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "import-path":
            self.check_path_field(event.value)
        elif event.input.id == "import-properties":
            self.check_properties_field(event.value)

    @work(thread=True, exclusive=True, exit_on_error=False, group="import-check")
    def check_path_field(self, value: str) -> None:
        path, problem = check_csv(value)
        self.app.call_from_thread(self._path_checked, path, problem)

    def _path_checked(self, path: Path | None, problem: str) -> None:
        self.set_error(problem)
        if path is None:
            self.notify(visible(problem.splitlines()[0]), severity="error", markup=False)
            return
        props = self.query_one("#import-properties", Input)
        sibling = path.with_suffix(".properties")
        if not props.value.strip() and sibling.is_file():
            props.value = str(sibling)
        props.focus()

    @work(thread=True, exclusive=True, exit_on_error=False, group="import-check")
    def check_properties_field(self, value: str) -> None:
        path, problem = check_properties(value)
        self.app.call_from_thread(self._properties_checked, path, problem)

    def _properties_checked(self, path: Path | None, problem: str) -> None:
        self.set_error(problem)
        if path is None:
            self.notify(visible(problem.splitlines()[0]), severity="error", markup=False)
            return
        self.query_one("#import-mode", Select).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "import-start":
            self.action_start()

    def read_form(self) -> dict:
        encoding = self.query_one("#import-encoding", Select).value
        return {
            "path": self.query_one("#import-path", Input).value,
            "properties": self.query_one("#import-properties", Input).value,
            "mode": str(self.query_one("#import-mode", Select).value),
            "encoding": None if encoding in (FROM_PROPERTIES, Select.BLANK) else str(encoding),
            "dry_run": self.query_one("#import-dry-run", Checkbox).value,
            "errors_only": self.query_one("#import-errors-only", Checkbox).value,
        }

    # -- the run ---------------------------------------------------------------------------
    def action_start(self) -> None:
        if self.running:
            self.notify("An import is running; wait for it or cancel it (Esc).", severity="warning",
                        markup=False)
            return
        self.start_import(self.read_form())

    def action_start_background(self) -> None:
        self.queue_import(self.read_form())

    def _request(self, form: dict) -> ImportRequest | None:
        """The checked form as a request (worker thread), or None once the refusal is shown."""
        path, problem = check_csv(form["path"])
        props = None
        if path is not None:
            props, problem = check_properties(form["properties"])
        if path is None or props is None or form["mode"] not in MODES:
            self.app.call_from_thread(self._refused, problem or "Choose Full or Incremental.")
            return None
        return ImportRequest(path.resolve(), props.resolve(), form["mode"], form["encoding"],
                             form["dry_run"], form["errors_only"])

    @work(thread=True, exclusive=True, exit_on_error=False, group="import-start")
    def queue_import(self, form: dict) -> None:
        """Run in background: hand the import to the scheduler service instead of starting it."""
        from patron_tui.services.background import UnknownKind, queue_run

        request = self._request(form)
        if request is None:
            return
        conn = self.app.store.connect()
        try:
            run_id = queue_run(conn, self.app.store.operator, IMPORT_KIND, request.title,
                               request.params(), mode=request.mode)
        except (PermissionError, UnknownKind) as exc:
            self.app.call_from_thread(self._refused, f"Not queued: {exc}")
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._queued, run_id)

    def _queued(self, run_id: int) -> None:
        self.set_error("")
        from patron_tui.services.background import queued_message

        text = queued_message(run_id)
        self.query_one("#import-status", Static).update(Content(text))
        self.notify(text, markup=False, timeout=8)

    @work(thread=True, exclusive=True, exit_on_error=False, group="import-start")
    def start_import(self, form: dict) -> None:
        request = self._request(form)
        if request is None:
            return
        from patron_tui.services.permissions import store_refusal

        refused = store_refusal(self.app.store, "import_patrons")
        if refused:
            self.app.call_from_thread(self._refused, refused)
            return
        estimate = estimate_records(request.path)
        engine = self.app.engine
        if engine is None:
            self.app.call_from_thread(self._refused, "The run engine is not ready yet; try again.")
            return
        handle = engine.start(
            IMPORT_KIND, request.title,
            lambda ctx: run_import(ctx, path=str(request.path), properties_path=str(request.properties),
                                   mode=request.mode, dry_run=request.dry_run, encoding=request.encoding,
                                   summary_errors_only=request.errors_only),
            params=request.params(),
            mode=request.mode,
        )
        self.app.call_from_thread(self._started, request, handle, estimate)

    def _refused(self, problem: str) -> None:
        self.set_error(problem)
        self.notify(visible(problem.splitlines()[0]), severity="error", markup=False)

    def _started(self, request: ImportRequest, handle, estimate: int | None) -> None:
        self.set_error("")
        self.request, self.handle, self.estimate = request, handle, estimate
        self.started_at = time.monotonic()
        self.summary_opened = False
        bar = self.query_one(ProgressBar)
        bar.update(total=estimate or None, progress=0)
        self.notify(f"Run {handle.run_id}: {visible(request.title)} started.", markup=False)
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(0.1, self.poll)
        # off the inputs, so Ctrl+C reaches the screen (an Input takes it as copy)
        self.query_one(LogPane).view.focus()
        self.poll()

    def poll(self) -> None:
        handle = self.handle
        if handle is None:
            return
        done = handle.done
        elapsed = time.monotonic() - self.started_at
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = self.query_one(ProgressBar)
        status = self.query_one("#import-status", Static)
        minutes, seconds = divmod(int(elapsed), 60)
        figures = f"{done:,} records · {rate:,.0f} records/s · {minutes}:{seconds:02d} elapsed"
        if not handle.finished:
            # the engine's own estimate when it gives one, else ours from the file's size
            about = handle.total or self.estimate
            if about:
                bar.update(total=max(about, done + 1), progress=done)
            else:
                bar.update(total=None, progress=done)
            tail = f" of about {about:,}" if about and done < about else ""
            status.update(Content(f"Run {handle.run_id} {handle.status.value}: {figures}{tail}"))
            return
        self.show_finished(handle, bar, status, figures)

    def action_cancel_run(self) -> None:
        if not self.running:
            self.notify("No import is running.", markup=False)
            return
        assert self.handle is not None
        handle = self.handle
        self.app.push_screen(CancelRunScreen(handle.run_id, handle.title),
                             lambda yes: self._cancel(handle) if yes else None)

    def _cancel(self, handle) -> None:
        if not handle.finished:
            handle.cancel()
            self.notify(f"Cancelling run {handle.run_id}…", markup=False)

    def action_back(self) -> None:
        if self.running:
            self.action_cancel_run()
            return
        self.app.pop_screen()
