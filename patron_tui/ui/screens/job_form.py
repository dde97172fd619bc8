"""The job form (Jobs → a, or Enter on a job): Destiny's "Schedule Patron Update" page in four
sections, Source, Schedule, Options and Inactivation / Deletion (job_rules.py, with a live
preview of what each rule would take today), checked as you type.

Every change rebuilds the `services.jobs.Job` model from the form; its validation errors are
shown under the field they name (only for fields already touched, and all of them after a
save attempt). Ctrl+S saves, Ctrl+T tests the server with what is typed, Ctrl+G applies the
schedule Follett suggests for the district's patron count, Escape leaves (asking first when
something changed).

The SFTP password (or the key's passphrase) is typed into a masked input and kept in the
secret store beside the database (`services.jobs.secrets`), never in the database; an edited
job shows only that one is stored, never the text.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, RadioButton, RadioSet, Select, Static

from patron_tui.services.jobs import DAYS, Job, JobExists, suggested_schedule
from patron_tui.services.jobs.model import DAY_NAMES, LARGE_DISTRICT
from patron_tui.services.patrons import count_patrons
from patron_tui.textsafe import visible
from patron_tui.ui.screens.import_run import ENCODINGS, FROM_PROPERTIES, MarkedCheckbox, check_properties
from patron_tui.ui.screens.job_rules import RULES_CSS, preview_text, read_rules, rules_section
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS

MODE_CHOICES = [("none", "none"), ("Full", "full"), ("Incremental", "incremental")]
SECTIONS = ("name", "source", "path", "sftp_url", "sftp_port", "sftp_user", "sftp_auth", "password",
            "sftp_key_path", "file_name", "properties_path", "encoding", "options")


def error_key(loc: tuple | list) -> str:
    """The form field an error location belongs to: 'name', 'schedule-mon', 'options'."""
    parts = [str(p) for p in loc]
    if not parts:
        return "form"
    if parts[0] == "schedule" and len(parts) > 1:
        return f"schedule-{parts[1]}"
    return parts[0]


def form_errors(exc: Exception) -> dict[str, str]:
    """A pydantic ValidationError (or JobExists) as {field key: message}."""
    from pydantic import ValidationError

    out: dict[str, str] = {}
    if not isinstance(exc, ValidationError):
        text = str(exc)
        field, sep, msg = text.partition(": ")
        out[field if sep and field in SECTIONS else "form"] = msg if sep and field in SECTIONS else text
        return out
    for err in exc.errors():
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        loc = list(err["loc"])
        if not loc:   # a model validator's error starts with its field: "path: ..."
            field, sep, rest = msg.partition(": ")
            if sep:
                loc, msg = field.split("."), rest
        if loc and loc[-1] == "time" and msg.startswith("time "):
            msg = msg[len("time "):]
        if error_key(loc) == "inactivation" and len(loc) > 1:   # one line for the section: say which rule
            msg = f"{' › '.join(str(p).replace('_', ' ') for p in loc[1:])}: {msg}"
        out.setdefault(error_key(loc), msg)
    return out


# -- writing, on a worker thread, through the services ----------------------------------------

def save_job_definition(store, job: Job, *, password: str | None, old_name: str | None) -> Job:
    """Save the job through the changeset writer, then its secret through the secret store.
    `password`: the typed password or passphrase (None or "": keep the stored one)."""
    from patron_tui.services.jobs import require_manager, save_job
    from patron_tui.services.jobs.secrets import default_secret_store

    conn = store.connect()
    try:
        require_manager(conn, store.operator)
        with store.writer(conn, None) as w:
            saved = save_job(w, job)
    finally:
        conn.close()
    secrets = default_secret_store(store.path)
    if old_name and old_name != saved.name:
        secrets.rename(old_name, saved.name)
    if saved.source == "sftp":
        if password:
            secrets.set(saved.name, password)
    elif secrets.has(saved.name):
        secrets.delete(saved.name)
    return saved


def delete_job_definition(store, name: str) -> bool:
    from patron_tui.services.jobs import delete_job, require_manager
    from patron_tui.services.jobs.secrets import default_secret_store

    conn = store.connect()
    try:
        require_manager(conn, store.operator)
        with store.writer(conn, None) as w:
            deleted = delete_job(w, name)
    finally:
        conn.close()
    default_secret_store(store.path).delete(name)
    return deleted


class MarkedRadioButton(RadioButton):
    """A RadioButton whose dot shows only when chosen, so it reads without colour (mono theme)."""

    @property
    def _button(self):
        self.BUTTON_INNER = "\u25cf" if self.value else " "
        return super()._button


class DiscardScreen(ModalScreen[bool]):
    """Leave the form without saving? y leaves, n or Escape keeps editing."""

    BINDINGS = [
        Binding("y", "dismiss(True)", "Discard changes"),
        Binding("n", "dismiss(False)", "Keep editing"),
        Binding("escape", "dismiss(False)", "Keep editing", show=False),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="DiscardScreen")

    def compose(self) -> ComposeResult:
        with Vertical(id="discard-frame"):
            yield Static(Content("The job has changes that are not saved. Leave without saving them?"))
            yield Static(Content("y leaves (nothing is saved) · n or Esc keeps editing"), classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#discard-frame").border_title = Content("Unsaved changes")


def _row(label: str, *widgets, row_id: str | None = None) -> Horizontal:
    return Horizontal(Label(Content(label)), *widgets, classes="form-row", id=row_id)


def _error(key: str) -> Static:
    return Static(Content(""), id=f"err-{key}", classes="field-error")


class JobFormScreen(Screen["Job | None"]):
    """Add or edit a scheduled patron update job."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+t", "test_server", "Test Server"),
        Binding("ctrl+g", "suggest", "Suggested schedule"),
        Binding("escape", "leave", "Cancel"),
    ]
    DEFAULT_CSS = """
    JobFormScreen #form-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    JobFormScreen #form-scroll { height: 1fr; padding: 0 1; }
    JobFormScreen .form-section { height: 1; margin-top: 1; text-style: bold; color: $primary; }
    JobFormScreen .form-section.-first { margin-top: 0; }
    JobFormScreen .form-row { height: 1; }
    JobFormScreen .form-row > Label { width: 16; }
    JobFormScreen .form-row > Input { width: 1fr; }
    JobFormScreen .form-row > Select { width: 1fr; }
    JobFormScreen RadioSet { layout: horizontal; height: 1; width: auto; border: none; padding: 0; }
    JobFormScreen RadioSet > RadioButton { margin-right: 2; width: auto; }
    JobFormScreen .field-hint.-empty { display: none; }
    JobFormScreen .field-error { display: none; height: auto; color: $error; padding: 0 0 0 16; }
    JobFormScreen .field-error.-shown { display: block; }
    JobFormScreen .field-hint { height: auto; color: $foreground-muted; padding: 0 0 0 16; }
    JobFormScreen .day-row { height: 1; }
    JobFormScreen .day-row > Label { width: 16; }
    JobFormScreen .day-row > Select { width: 20; }
    JobFormScreen .day-row > Input { width: 8; margin-left: 1; }
    JobFormScreen .day-row > .field-error { padding: 0 0 0 1; width: 1fr; height: 1; }
    JobFormScreen #grp-sftp, JobFormScreen #grp-directory { height: auto; }
    JobFormScreen #form-buttons { height: 1; margin-top: 1; }
    JobFormScreen #form-buttons Button { margin-right: 2; min-width: 10; }
    JobFormScreen #form-status { height: auto; max-height: 3; padding: 0 1; color: $foreground-muted; }
    JobFormScreen #form-status.-error { color: $error; }
    """ + RULES_CSS

    def __init__(self, job: Job | None, *, has_secret: bool | None = None) -> None:
        super().__init__()
        self.job = job
        self.old_name = job.name if job is not None else None
        self.touched: set[str] = set()
        self.submitted = False
        self.errors: dict[str, str] = {}
        self._shown_errors: dict[str, str] = {}
        self.initial: dict | None = None
        self.patron_count: int | None = None
        self.has_secret = has_secret
        self.saving = False

    # -- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        job = self.job or Job.model_construct(name="", source="directory", path="", sftp_url="", sftp_port=22,
                                               sftp_user="", sftp_auth="password", sftp_key_path="",
                                               file_name="", properties_path="", encoding=None)
        schedule = job.schedule if self.job is not None else None
        title = f"Edit job {visible(job.name)}" if self.job is not None else "Add a scheduled patron update job"
        yield Static(Content(f"{title} (Tab moves · Ctrl+S saves · Esc cancels)"), id="form-title")
        with VerticalScroll(id="form-scroll"):
            yield Static(Content("Source"), classes="form-section -first")
            yield _row("Job name", Input(value=job.name, placeholder="a unique name", id="job-name",
                                         compact=True, max_length=60))
            yield _error("name")
            yield _row("Source", RadioSet(MarkedRadioButton(Content("Directory"), value=job.source == "directory",
                                                      id="src-directory", compact=True),
                                          MarkedRadioButton(Content("SFTP"), value=job.source == "sftp",
                                                      id="src-sftp", compact=True),
                                          id="job-source", compact=True))
            with Vertical(id="grp-directory"):
                yield _row("CSV file path", Input(value=job.path, placeholder="/full/path/of/students.csv",
                                                  id="job-path", compact=True))
                yield _error("path")
            with Vertical(id="grp-sftp"):
                yield _row("SFTP URL", Input(value=job.sftp_url, placeholder="sftp://server/folder (case-sensitive)",
                                             id="job-sftp-url", compact=True))
                yield _error("sftp_url")
                yield _row("Port", Input(value=str(job.sftp_port), id="job-sftp-port", compact=True,
                                         restrict=r"[0-9]*", max_length=5))
                yield _error("sftp_port")
                yield _row("User name", Input(value=job.sftp_user, id="job-sftp-user", compact=True))
                yield _error("sftp_user")
                yield _row("Login with", RadioSet(
                    MarkedRadioButton(Content("Password"), value=job.sftp_auth != "key", id="auth-password", compact=True),
                    MarkedRadioButton(Content("Key file"), value=job.sftp_auth == "key", id="auth-key", compact=True),
                    id="job-sftp-auth", compact=True))
                yield _row("Password", Input(password=True, id="job-password", compact=True,
                                             placeholder="typed here, kept outside the database"),
                           row_id="row-password")
                yield Static(Content(""), id="hint-password", classes="field-hint")
                yield _row("Key file", Input(value=job.sftp_key_path, placeholder="/path/of/the/private/key",
                                             id="job-key-path", compact=True), row_id="row-key-path")
                yield _error("sftp_key_path")
                yield _row("File name", Input(value=job.file_name, placeholder="students.csv (case-sensitive)",
                                              id="job-file-name", compact=True))
                yield _error("file_name")
            yield _row("Properties file", Input(value=job.properties_path, placeholder="/path/of/students.properties",
                                                id="job-properties", compact=True))
            yield _error("properties_path")
            yield Static(Content(""), id="hint-properties", classes="field-hint -empty")
            encoding = job.encoding or FROM_PROPERTIES
            choices = [("from the properties file", FROM_PROPERTIES), *[(e, e) for e in ENCODINGS]]
            if encoding not in dict((v, k) for k, v in choices):
                choices.append((visible(encoding), encoding))
            yield _row("File encoding", Select(choices, value=encoding, allow_blank=False, id="job-encoding",
                                               compact=True))
            yield _error("encoding")

            yield Static(Content("Schedule"), classes="form-section")
            yield Static(Content("Counting patrons…"), id="hint-schedule", classes="field-hint")
            for day in DAYS:
                d = schedule.day(DAYS.index(day)) if schedule is not None else None
                yield Horizontal(
                    Label(Content(DAY_NAMES[day])),
                    Select([(label, value) for label, value in MODE_CHOICES], value=d.mode if d else "none",
                           allow_blank=False, id=f"day-{day}-mode", compact=True),
                    Input(value=d.time if d else "02:00", id=f"day-{day}-time", compact=True, max_length=5,
                          restrict=r"[0-9:]*"),
                    _error(f"schedule-{day}"),
                    classes="day-row",
                )

            yield Static(Content("Options"), classes="form-section")
            o = job.options if self.job is not None else None
            yield MarkedCheckbox(Content("Allow patrons with outstanding transactions to be deleted"),
                                 value=bool(o and o.allow_delete_outstanding), id="opt-allow-delete", compact=True)
            yield MarkedCheckbox(Content("Limit the job summary to errors and warnings"),
                                 value=bool(o and o.summary_errors_only), id="opt-errors-only", compact=True)
            yield MarkedCheckbox(Content("Delete previously run jobs"),
                                 value=bool(o and o.delete_previous_runs), id="opt-delete-runs", compact=True)
            yield _row("Runs to keep", Input(value="" if not o or o.keep_runs is None else str(o.keep_runs),
                                             placeholder="blank: keep only the newest", id="opt-keep-runs",
                                             compact=True, restrict=r"[0-9]*", max_length=4))
            yield _error("options")
            yield from rules_section(job.inactivation if self.job is not None else None)
            yield _error("form")
            with Horizontal(id="form-buttons"):
                yield Button(Content("Save"), id="form-save", compact=True)
                yield Button(Content("Test Server"), id="form-test", compact=True)
        yield Static(Content("Ctrl+S saves · Ctrl+T Test Server · Ctrl+G suggested schedule · Esc cancels"),
                     id="form-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#job-name", Input).focus()
        self.show_source()
        self.initial = self.form_data()
        self.revalidate()
        self.load_context(self.job.properties_path if self.job else "")

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-form-context")
    def load_context(self, properties: str) -> None:
        conn = self.app.store.connect()
        try:
            count = count_patrons(conn)
        finally:
            conn.close()
        has_secret = self.has_secret
        if has_secret is None and self.old_name:
            from patron_tui.services.jobs.secrets import default_secret_store

            try:
                has_secret = default_secret_store(self.app.store.path).has(self.old_name)
            except RuntimeError:
                has_secret = False
        self.app.call_from_thread(self._context_loaded, count, bool(has_secret))
        if properties:
            self.check_properties_file(properties)

    def _context_loaded(self, count: int, has_secret: bool) -> None:
        self.patron_count = count
        self.has_secret = has_secret
        self.query_one("#hint-schedule", Static).update(Content(self.suggestion_text()))
        self.show_source()

    def suggestion_text(self) -> str:
        n = self.patron_count or 0
        if n > LARGE_DISTRICT:
            advice = (f"{n:,} patrons, over {LARGE_DISTRICT:,}: Follett suggests Incremental on weekdays "
                      "and Full on weekends.")
        else:
            advice = f"{n:,} patrons, under {LARGE_DISTRICT:,}: Follett suggests Full for each update."
        return advice + " Ctrl+G applies it."

    # -- reading the form -----------------------------------------------------------------
    def _value(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value

    def _select(self, wid: str) -> str:
        value = self.query_one(f"#{wid}", Select).value
        return "" if value is Select.BLANK else str(value)

    def source(self) -> str:
        return "sftp" if self.query_one("#src-sftp", RadioButton).value else "directory"

    def auth(self) -> str:
        return "key" if self.query_one("#auth-key", RadioButton).value else "password"

    def form_data(self) -> dict[str, Any]:
        source = self.source()
        port = self._value("job-sftp-port").strip()
        keep = self._value("opt-keep-runs").strip()
        encoding = self._select("job-encoding")
        data: dict[str, Any] = {
            "id": self.job.id if self.job is not None else None,
            "name": self._value("job-name"),
            "source": source,
            "path": self._value("job-path") if source == "directory" else "",
            "sftp_url": self._value("job-sftp-url") if source == "sftp" else "",
            "sftp_port": (int(port) if port.isdigit() else port) if source == "sftp" else 22,
            "sftp_user": self._value("job-sftp-user") if source == "sftp" else "",
            "sftp_auth": self.auth() if source == "sftp" else "password",
            "sftp_key_path": self._value("job-key-path") if source == "sftp" and self.auth() == "key" else "",
            "file_name": self._value("job-file-name") if source == "sftp" else "",
            "properties_path": self._value("job-properties"),
            "encoding": None if encoding in ("", FROM_PROPERTIES) else encoding,
            "schedule": {d: {"mode": self._select(f"day-{d}-mode") or "none", "time": self._value(f"day-{d}-time")}
                         for d in DAYS},
            "options": {
                "allow_delete_outstanding": self.query_one("#opt-allow-delete", Checkbox).value,
                "summary_errors_only": self.query_one("#opt-errors-only", Checkbox).value,
                "delete_previous_runs": self.query_one("#opt-delete-runs", Checkbox).value,
                "keep_runs": (int(keep) if keep.isdigit() else keep) if keep else None,
            },
            "inactivation": read_rules(self),
        }
        if self.job is not None:
            # what this form does not edit (the Inactivation / Deletion rules, ...) is kept as it is
            data.update({k: getattr(self.job, k) for k in Job.model_fields if k not in data})
        return data

    @property
    def dirty(self) -> bool:
        return (self.initial is not None and self.form_data() != self.initial) or bool(self._value("job-password"))

    def build(self) -> Job | None:
        """The job the form describes, or None (self.errors says why)."""
        try:
            job = Job.model_validate(self.form_data())
        except ValueError as exc:
            self.errors = form_errors(exc)
            return None
        self.errors = {}
        return job

    # -- validation as you type -------------------------------------------------------------
    def revalidate(self) -> Job | None:
        job = self.build()
        self._preview_soon(job)
        for widget in self.query(".field-error"):
            key = (widget.id or "").removeprefix("err-")
            message = self.errors.get(key, "")
            shown = bool(message) and (self.submitted or key in self.touched or key == "form")
            text = visible(message) if shown else ""
            if self._shown_errors.get(key) != text:   # touch only what changed: this runs per keystroke
                self._shown_errors[key] = text
                widget.update(Content(text))
                widget.set_class(shown, "-shown")
        return job

    # -- the Inactivation / Deletion preview -------------------------------------------------
    def _preview_soon(self, job: Job | None) -> None:
        """Count what the rules would take today, a moment after the typing stops."""
        timer = getattr(self, "_preview_timer", None)
        if timer is not None:
            timer.stop()
        if job is None:
            if "inactivation" in self.errors:
                self.query_one("#rule-preview", Static).update(Content("Preview: fix the rules above first."))
            return
        self._preview_timer = self.set_timer(0.25, lambda: self.count_rules(job))

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-form-preview")
    def count_rules(self, job: Job) -> None:
        from patron_tui.services.inactivation import preview

        today = dt.datetime.now().date()
        conn = self.app.store.connect()
        try:
            counts = preview(conn, job.inactivation, today, allow_outstanding=job.options.allow_delete_outstanding)
        finally:
            conn.close()
        self.app.call_from_thread(self.query_one("#rule-preview", Static).update,
                                  Content(preview_text(counts, job.inactivation, today)))

    def _touch(self, widget_id: str | None) -> None:
        wid = widget_id or ""
        key = {
            "job-name": "name", "job-path": "path", "job-sftp-url": "sftp_url", "job-sftp-port": "sftp_port",
            "job-sftp-user": "sftp_user", "job-key-path": "sftp_key_path", "job-file-name": "file_name",
            "job-properties": "properties_path", "job-encoding": "encoding", "opt-keep-runs": "options",
            "opt-delete-runs": "options",
        }.get(wid)
        if key is None and wid.startswith("day-"):
            key = f"schedule-{wid.split('-')[1]}"
        if key is None and wid.startswith("rule-"):
            key = "inactivation"
        if key:
            self.touched.add(key)

    def on_input_changed(self, event: Input.Changed) -> None:
        if not self.is_mounted or self.initial is None:
            return
        self._touch(event.input.id)
        if event.input.id == "job-properties":
            self.check_properties_file(event.value)
        self.revalidate()

    def on_select_changed(self, event: Select.Changed) -> None:
        if self.initial is None:
            return
        self._touch(event.select.id)
        self.revalidate()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if self.initial is None:
            return
        self._touch(event.checkbox.id)
        self.revalidate()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self.show_source()
        if self.initial is not None:
            self.revalidate()

    def show_source(self) -> None:
        sftp = self.source() == "sftp"
        self.query_one("#grp-sftp").display = sftp
        self.query_one("#grp-directory").display = not sftp
        key = self.auth() == "key"
        self.query_one("#row-key-path").display = key
        self.query_one("#row-password > Label", Label).update(Content("Key passphrase" if key else "Password"))
        stored = ("A password is stored for this job (not shown): leave blank to keep it, type to replace it."
                  if not key else "A passphrase is stored (not shown): leave blank to keep it.")
        hint = stored if self.has_secret else ("Kept in the secret file beside the database, never in it."
                                               if not key else "Only if the key file has a passphrase.")
        self.query_one("#hint-password", Static).update(Content(hint))

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-form-properties")
    def check_properties_file(self, value: str) -> None:
        from patron_tui.services.imports.properties import load_properties

        if not value.strip():
            self.app.call_from_thread(self._properties_hint, "")
            return
        path, problem = check_properties(value)
        if path is not None:
            try:
                label = load_properties(path).encoding_label
            except Exception:   # checked a moment ago; a file changing under us only loses the hint
                label = "?"
            text = f"Valid properties file; its encoding is {label}."
        else:
            text = problem.splitlines()[0]
        self.app.call_from_thread(self._properties_hint, text)

    def _properties_hint(self, text: str) -> None:
        hint = self.query_one("#hint-properties", Static)
        hint.update(Content(visible(text)))
        hint.set_class(not text, "-empty")

    # -- actions -------------------------------------------------------------------------
    def action_suggest(self) -> None:
        if self.patron_count is None:
            self.notify("Still counting the patrons; try again in a moment.", markup=False)
            return
        first = self.query_one("#day-mon-time", Input).value.strip()
        try:
            schedule = suggested_schedule(self.patron_count, first or "02:00")
        except ValueError:
            schedule = suggested_schedule(self.patron_count)
        for day, d in schedule.days():
            self.query_one(f"#day-{day}-mode", Select).value = d.mode
            self.query_one(f"#day-{day}-time", Input).value = d.time
        self.notify("Suggested schedule applied: " + visible(schedule.label()), markup=False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "form-save":
            self.action_save()
        elif event.button.id == "form-test":
            self.action_test_server()

    def set_status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#form-status", Static)
        status.update(Content(visible(text)))
        status.set_class(error, "-error")

    def _first_error_focus(self) -> None:
        ids = {"name": "job-name", "path": "job-path", "sftp_url": "job-sftp-url", "sftp_port": "job-sftp-port",
               "sftp_user": "job-sftp-user", "sftp_key_path": "job-key-path", "file_name": "job-file-name",
               "properties_path": "job-properties", "encoding": "job-encoding", "options": "opt-keep-runs",
               "inactivation": "rule-threshold"}
        for key in self.errors:
            wid = ids.get(key) or (f"day-{key.split('-')[1]}-time" if key.startswith("schedule-") else None)
            if wid:
                widget = self.query_one(f"#{wid}")
                widget.focus()
                widget.scroll_visible(animate=False)
                return

    def action_save(self) -> None:
        self.submitted = True
        job = self.revalidate()
        if job is None:
            n = len(self.errors)
            self.set_status(f"Not saved: {n} problem{'s' if n != 1 else ''} to fix (shown under the fields).",
                            error=True)
            self._first_error_focus()
            return
        if self.saving:
            return
        self.saving = True
        self.save(job, self._value("job-password"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-form-save")
    def save(self, job: Job, password: str) -> None:
        try:
            saved = save_job_definition(self.app.store, job, password=password or None, old_name=self.old_name)
        except (JobExists, PermissionError, LookupError, ValueError, RuntimeError, OSError) as exc:
            self.app.call_from_thread(self._not_saved, exc)
            return
        self.app.call_from_thread(self._saved, saved)

    def _not_saved(self, exc: Exception) -> None:
        self.saving = False
        if isinstance(exc, JobExists):
            self.errors = form_errors(exc)
            self.touched.add("name")
            err = self.query_one("#err-name", Static)
            err.update(Content(visible(self.errors.get("name", str(exc)))))
            err.add_class("-shown")
        text = f"Not saved: {exc}"
        self.set_status(text, error=True)
        self.notify(visible(text), severity="error", markup=False, timeout=8)

    def _saved(self, job: Job) -> None:
        self.saving = False
        self.notify(f"Job {visible(job.name)} saved.", markup=False)
        self.dismiss(job)

    def action_test_server(self) -> None:
        job = self.revalidate()
        if job is None:
            self.submitted = True
            self.revalidate()
            self.set_status("Fix the problems shown under the fields before testing.", error=True)
            self._first_error_focus()
            return
        from patron_tui.ui.screens.job_test import TestServerScreen

        self.app.push_screen(TestServerScreen(job, typed_secret=self._value("job-password") or None,
                                              stored_name=self.old_name))

    def action_leave(self) -> None:
        if self.dirty:
            self.app.push_screen(DiscardScreen(), lambda yes: self.dismiss(None) if yes else None)
        else:
            self.dismiss(None)
