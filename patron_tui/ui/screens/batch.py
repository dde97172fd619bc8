"""The Batch update section (3): Batch Update Patron Profile on a query set.

The top lines name the patrons the batch acts on: the query set (or the statement) with its
**search statement** and patron count, so the operator can check they are in the right set.
It comes from the Patrons screen (b there opens this screen with the current set), from the
saved sets (F2 picks one), or from a statement typed on the Statement line (Enter).

The form, in tab order: Medium (required), Status of service, Maximum items out, Items per
shipment, Service frequency, Next Service Date (unchanged / one date / spaced out), Duplication
circulation, Auto-select, Nightly Debug (always applied, as the note next to it says),
Subjects to add, Fill service queues (+ queue length). Blank or "unchanged" changes nothing.

F5 previews (`services.batch.preview`): per field how many profiles change, from what to
what, how many profiles are created. Ctrl+R is PROCESS: it refuses without a preview of exactly
this form and set, asks for the patron count typed, then starts `batch.start_batch_update`
and follows it; when it ends the result (counts and the error report) opens, and the batch
hands its service queues to a queue filler (`queue_fill.hand_off`: the one already at work, or
one started now), which the result and the line under the form name; a filler of this console
is followed there (its progress; its messages in the log pane). Ctrl+B (PROCESS in background, also
from the preview) does the same checks and asks the same, then hands the batch to the scheduler
service (`batch.queue_batch_update`; the filler follows it there) and says which run to follow
in the Job Manager. The screen writes nothing itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, ProgressBar, Select, Static
from textual.widgets.option_list import Option

from patron_tui.services import batch as svc
from patron_tui.services import query_sets, queue_fill
from patron_tui.services.permissions import PermissionDenied, may_use_batch_tools
from patron_tui.textsafe import visible
from patron_tui.ui.screens.base import SectionScreen
from patron_tui.ui.screens.import_run import MarkedCheckbox
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, ConfirmScreen

__all__ = ["BatchScreen", "BatchPreviewScreen", "BatchReportScreen", "PickSetScreen", "FormError",
           "build_update", "open_batch", "preview_text"]

TRI = [("unchanged", "unchanged"), ("on", "on"), ("off", "off")]
NSD_MODES = [("unchanged", "unchanged"), ("one date for everyone", "fixed"),
             ("spaced out in groups", "spaced")]
NIGHTLY_NOTE = "always applied: unchecked turns Nightly Debug off for every patron in the set"
# the form's input ids -> the label a message names
LABELS = {
    "medium": "Medium", "status_of_service": "Status of service", "max_items_out": "Maximum items out",
    "items_per_shipment": "Items per shipment", "service_frequency": "Service frequency",
    "next_service_date": "Next Service Date", "spacing": "Next Service Date (spaced)",
    "start": "Next Service Date start", "every_days": "Next Service Date every K days",
    "group_size": "Next Service Date group of M patrons", "order_by": "Next Service Date order",
    "duplication_circulation": "Duplication circulation", "auto_select": "Auto-select",
    "nightly_debug": "Nightly Debug", "add_subjects": "Subjects to add",
    "fill_service_queues": "Fill service queues", "queue_length": "Queue length",
}


class FormError(ValueError):
    """A form value that cannot be used; the message names the field."""


def open_batch(app, *, set_name: str | None, statement: str | None) -> None:
    """Switch to the Batch update section with these patrons chosen (Patrons → b)."""
    app.switch_mode("batch")
    screen = app.screen
    if not isinstance(screen, BatchScreen):
        return
    if set_name is None and not (statement or "").strip():
        # no set and no statement on the Patrons screen: pick a saved set (never all patrons by accident)
        screen.action_pick_set()
    else:
        screen.choose(set_name=set_name, statement=statement)


# -- reading the form ---------------------------------------------------------------------------


def _date(text: str, label: str) -> date:
    try:
        return datetime.strptime(text.strip(), "%m/%d/%Y").date()
    except ValueError:
        raise FormError(f"{label}: type the date as MM/DD/YYYY, not {visible(text.strip())!r}.") from None


def _number(text: str, label: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise FormError(f"{label}: type a whole number, not {visible(text)!r}.")
    return int(text)


def build_update(form: dict[str, Any]) -> svc.BatchUpdate:
    """The BatchUpdate of the form's raw values; FormError naming the field."""
    if not form.get("medium"):
        raise FormError("Medium: choose a medium; the batch changes that medium's profile of every patron.")
    values: dict[str, Any] = {
        "medium": form["medium"],
        "status_of_service": form.get("status_of_service") or None,
        "service_frequency": form.get("service_frequency") or None,
        "nightly_debug": bool(form.get("nightly_debug")),
        "add_subjects": form.get("add_subjects") or "",
        "fill_service_queues": bool(form.get("fill_service_queues")),
    }
    for key in ("max_items_out", "items_per_shipment", "queue_length"):
        values[key] = _number(form.get(key, ""), LABELS[key])
    for key in ("duplication_circulation", "auto_select"):
        choice = form.get(key, "unchanged")
        values[key] = None if choice in ("unchanged", None) else choice == "on"
    mode = form.get("nsd_mode", "unchanged")
    if mode == "fixed":
        values["next_service_date"] = _date(form.get("nsd_date", ""), "Next Service Date")
    elif mode == "spaced":
        every = _number(form.get("nsd_every", ""), LABELS["every_days"])
        group = _number(form.get("nsd_group", ""), LABELS["group_size"])
        if every is None or group is None:
            raise FormError("Next Service Date (spaced): give every K days and the group of M patrons.")
        values["spacing"] = {"start": _date(form.get("nsd_start", ""), LABELS["start"]), "every_days": every,
                             "group_size": group, "order_by": form.get("nsd_order") or "last_name"}
    try:
        return svc.BatchUpdate(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if isinstance(p, str)]
        label = LABELS.get(loc[-1] if loc else "", "The form")
        message = str(err.get("msg", "not valid")).removeprefix("Value error, ")
        raise FormError(f"{label}: {message}.") from None


def form_key(target: svc.Target | None, update: svc.BatchUpdate) -> str:
    """What a preview was made of: the set and the form (a later PROCESS must match it)."""
    return json.dumps([target.model_dump() if target else None, json.loads(update.model_dump_json())],
                      sort_keys=True)


# -- the preview as text -------------------------------------------------------------------------


def target_line(t: svc.Target) -> str:
    noun = "patron" if t.count == 1 else "patrons"
    where = f"Query set {visible(t.set_name)}" if t.set_name else "Statement"
    return f"{where} · {t.count:,} {noun} · search statement: {visible(t.statement) or '(all patrons)'}"


def preview_text(p: svc.Preview, medium: str) -> Text:
    text = Text(end="")
    text.append(target_line(p.target) + "\n")
    text.append(f"{p.patrons:,} patrons · {p.profiles_created:,} {visible(medium)} profiles to be created"
                f" · {p.queues_to_fill:,} service queues to fill\n", "bold")
    changing = [f for f in p.fields if f.changes]
    for f in p.fields:
        text.append("\n")
        text.append(f"{visible(f.label)}: {f.changes:,} change", "bold")
        text.append("\n")
        for barcode, name, before, after in f.samples:
            text.append(f"  {visible(barcode)} {visible(name)[:24]}: {visible(before)} → {visible(after)}\n")
        if f.changes > len(f.samples) and f.samples:
            text.append(f"  … and {f.changes - len(f.samples):,} more\n")
    if not changing and not p.profiles_created:
        text.append("\nNo profile changes: every patron of the set is already as asked.\n")
    for note in p.notes:
        text.append("\n" + visible(note))
    return text


# -- dialogs -------------------------------------------------------------------------------------


class PickSetScreen(ModalScreen["str | None"]):
    """The saved query sets: Enter picks one for the batch, Esc closes."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]
    DEFAULT_CSS = DIALOG_CSS.format(name="PickSetScreen") + """
    PickSetScreen OptionList { height: auto; max-height: 16; }
    """

    def __init__(self, sets: list[query_sets.QuerySet]) -> None:
        super().__init__()
        self.sets = sets

    def compose(self) -> ComposeResult:
        with Vertical(id="pick-frame"):
            if not self.sets:
                yield Static(Content("No saved sets yet: save one in Patrons (2, Ctrl+S), or type a "
                                     "statement on the Statement line."), classes="dialog-help")
            options = []
            for qs in self.sets:
                text = Text(no_wrap=True, overflow="ellipsis")
                text.append(visible(qs.name), "bold")
                text.append(f"  frozen, {qs.member_count or 0:,} patrons" if qs.frozen_at else "  live")
                text.append("\n  " + (visible(qs.statement) or "(all patrons)"))
                options.append(Option(text, id=qs.name))
            if options:
                yield OptionList(*options, id="pick-list")
            yield Static(Content("Enter picks the set for the batch · Esc closes"), classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#pick-frame").border_title = Content("Batch update: choose a query set")
        for option_list in self.query(OptionList):
            option_list.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class BatchPreviewScreen(ModalScreen["str | None"]):
    """The preview: per field how many change, from → to samples; Ctrl+R goes on to PROCESS."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("ctrl+r", "dismiss('process')", "PROCESS"),
        Binding("ctrl+b", "dismiss('background')", "PROCESS in background"),
    ]
    DEFAULT_CSS = """
    BatchPreviewScreen { align: center middle; }
    BatchPreviewScreen > Vertical {
        width: 100%; max-width: 100; height: 100%; border: round $primary; background: $surface;
    }
    BatchPreviewScreen #preview-scroll { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    BatchPreviewScreen #preview-body { height: auto; color: $foreground; }
    BatchPreviewScreen #preview-help { height: 1; padding: 0 1; color: $foreground-muted; }
    """

    def __init__(self, preview: svc.Preview, medium: str) -> None:
        super().__init__()
        self.preview = preview
        self.medium = medium

    def compose(self) -> ComposeResult:
        with Vertical(id="preview-frame"):
            with VerticalScroll(id="preview-scroll"):
                yield Static(preview_text(self.preview, self.medium), id="preview-body")
            yield Static(Content("Ctrl+R PROCESS (asks for the patron count) · Ctrl+B in background · Esc back"),
                         id="preview-help")

    def on_mount(self) -> None:
        self.query_one("#preview-frame").border_title = Content(
            f"Preview: {self.preview.patrons:,} patrons, {visible(self.medium)} profiles")
        self.query_one("#preview-scroll").focus()

    def body_text(self) -> str:
        return preview_text(self.preview, self.medium).plain


@dataclass(frozen=True)
class BatchResult:
    run_id: int
    status: str
    error: str | None
    summary: dict
    errors: list[tuple[str, str]]


def result_counts(r: BatchResult) -> str:
    s = r.summary
    head = f"Run {r.run_id} {r.status}" + (f": {visible(r.error)}" if r.error else "")
    if not s:
        return head + ". Nothing was changed."
    by = f" (queue filler run {s['filler_run_id']})" if s.get("filler_run_id") is not None else ""
    return (f"{head}. {s.get('patrons', 0):,} patrons: {s.get('profiles_updated', 0):,} profiles updated, "
            f"{s.get('profiles_created', 0):,} created, {s.get('unchanged', 0):,} unchanged, "
            f"{s.get('errors', 0):,} errors; {s.get('subjects_added', 0):,} subjects added; "
            f"{s.get('queues_queued', 0):,} service queues to fill{by}.")


def result_line(r: BatchResult) -> str:
    """The result in one line under the form."""
    s = r.summary
    if not s:
        return f"Run {r.run_id} {r.status}: nothing was changed. F7 report."
    return (f"Run {r.run_id} {r.status}: {s.get('profiles_updated', 0):,} updated, "
            f"{s.get('profiles_created', 0):,} created, {s.get('errors', 0):,} errors. F7 report.")


class BatchReportScreen(ModalScreen[None]):
    """A batch run's result: its counts and the error report (barcode, text)."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("j", "job_summary", "Run summary"),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="BatchReportScreen") + """
    BatchReportScreen > Vertical { width: 100%; max-width: 100; }
    BatchReportScreen #report-counts { height: auto; color: $foreground; }
    BatchReportScreen #report-errors { height: auto; max-height: 16; scrollbar-size-vertical: 1; }
    BatchReportScreen #report-list { height: auto; }
    """

    def __init__(self, result: BatchResult) -> None:
        super().__init__()
        self.result = result

    def compose(self) -> ComposeResult:
        with Vertical(id="report-frame"):
            yield Static(Content(result_counts(self.result)), id="report-counts")
            n = len(self.result.errors)
            head = (f"Error report: {n:,} patron{'s' if n != 1 else ''} not changed" if n
                    else "Error report: no errors, no patron was refused.")
            yield Static(Content(head), classes="dialog-help", id="report-head")
            with VerticalScroll(id="report-errors"):
                yield Static(self.report_text(), id="report-list")
            yield Static(Content("j the run's summary (its messages) · Esc closes (F7 reopens)"),
                         classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#report-frame").border_title = Content(f"Batch update run {self.result.run_id}")
        self.query_one("#report-errors").focus()

    def report_text(self) -> Text:
        text = Text(end="")
        for barcode, message in self.result.errors:
            text.append(visible(barcode) or "(no barcode)", "bold")
            text.append("  " + visible(message) + "\n")
        return text

    def action_job_summary(self) -> None:
        from patron_tui.ui.screens.job_summary import JobSummaryScreen

        self.app.push_screen(JobSummaryScreen(self.result.run_id))

    def rows(self) -> list[tuple[str, str]]:
        """The report as shown: (barcode, text) per line of the list."""
        lines = self.query_one("#report-list", Static).render()
        return [tuple(line.split("  ", 1)) for line in str(lines).splitlines() if line]


# -- the section ---------------------------------------------------------------------------------


def _row(label: str, *widgets, id: str | None = None) -> Horizontal:
    return Horizontal(Label(Content(label)), *widgets, classes="batch-row", id=id)


def _unit(text: str, id: str | None = None) -> Label:
    return Label(Content(text), classes="batch-unit", id=id)


def _filling(filler, waiting: int | None) -> str:
    """The line under the form while a filler of this console fills the batch's queues: one
    text from the hand-off to its end (its total once it has counted, else the queues handed)."""
    total = filler.total if filler.total is not None else waiting
    of = f" of {total:,}" if total is not None else ""
    return f"Filling service queues: {filler.done:,}{of} (run {filler.run_id}, messages in the log pane)"


class BatchScreen(SectionScreen):
    SECTION = "batch"
    BINDINGS = [
        Binding("f5", "preview", "Preview", id="batch.preview"),
        Binding("ctrl+r", "process", "PROCESS", id="batch.process"),
        Binding("ctrl+b", "process(True)", "PROCESS in background", id="batch.background"),
        Binding("f2", "pick_set", "Sets", id="batch.sets"),
        Binding("slash", "focus_statement", "Statement", id="batch.statement"),
        Binding("f7", "report", "Report", id="batch.report"),
    ]
    DEFAULT_CSS = """
    BatchScreen #batch-target { height: auto; max-height: 2; padding: 0 1; background: $panel; color: $foreground; }
    BatchScreen #batch-form { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    BatchScreen .batch-row { height: 1; }
    BatchScreen .batch-row > Label { width: 21; }
    BatchScreen .batch-row > Input { width: 1fr; }
    BatchScreen .batch-row > Input.-short { width: 12; }
    BatchScreen .batch-row > Select { width: 1fr; }
    BatchScreen .batch-row > Checkbox { width: auto; }
    BatchScreen .batch-row > .batch-unit { width: auto; padding: 0 1; color: $foreground-muted; }
    BatchScreen #batch-nightly-row { height: auto; }
    BatchScreen #batch-nightly-note { width: 1fr; height: auto; color: $warning; }
    BatchScreen .-off { display: none; }
    BatchScreen #batch-error { height: auto; max-height: 3; padding: 0 1; color: $error; display: none; }
    BatchScreen #batch-error.-shown { display: block; }
    BatchScreen #batch-status { height: auto; max-height: 2; padding: 0 1; }
    BatchScreen #batch-progress { height: 1; padding: 0 1; display: none; }
    BatchScreen #batch-progress.-shown { display: block; }
    BatchScreen #batch-filler { height: 1; padding: 0 1; display: none; }
    BatchScreen #batch-filler.-shown { display: block; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.target: svc.Target | None = None
        self.choices: svc.Choices | None = None
        self.preview: svc.Preview | None = None
        self.preview_key: str | None = None
        self.handle = None
        self.filler = None
        self.filler_waiting: int | None = None   # queues the batch handed to self.filler
        self.result: BatchResult | None = None
        self.may_process: bool | None = None
        self._pending: tuple[str | None, str | None] | None = None
        self._timer = None

    # -- layout ---------------------------------------------------------------------------------
    def compose_body(self) -> ComposeResult:
        yield Static(Content("No patrons chosen yet: F2 picks a saved query set, / types a statement."),
                     id="batch-target")
        with VerticalScroll(id="batch-form", can_focus=False):
            yield _row("Statement", Input(placeholder="a search statement; Enter chooses its patrons",
                                          id="batch-statement", compact=True))
            yield _row("Medium (required)", Select([], prompt="choose a medium", id="batch-medium",
                                                   compact=True))
            yield _row("Status of service", Select([], prompt="unchanged", id="batch-status-of-service",
                                                   compact=True))
            yield _row("Maximum items out", Input(placeholder="unchanged", id="batch-max-items",
                                                  restrict=r"[0-9]*", max_length=2, compact=True,
                                                  classes="-short"), _unit("0-99"))
            yield _row("Items per shipment", Input(placeholder="unchanged", id="batch-per-shipment",
                                                   restrict=r"[0-9]*", max_length=2, compact=True,
                                                   classes="-short"), _unit("1-99"))
            yield _row("Service frequency", Select([], prompt="unchanged", id="batch-frequency", compact=True))
            yield _row("Next Service Date", Select(NSD_MODES, value="unchanged", allow_blank=False,
                                                   id="batch-nsd-mode", compact=True))
            yield _row("  date", Input(placeholder="MM/DD/YYYY", id="batch-nsd-date", max_length=10,
                                       compact=True, classes="-short"), id="batch-nsd-fixed-row")
            yield _row("  start", Input(placeholder="MM/DD/YYYY", id="batch-nsd-start", max_length=10,
                                        compact=True, classes="-short"),
                       _unit("every"), Input(id="batch-nsd-every", restrict=r"[0-9]*", max_length=4,
                                             compact=True, classes="-short"), _unit("days"),
                       id="batch-nsd-spaced-row")
            yield _row("  group of", Input(id="batch-nsd-group", restrict=r"[0-9]*", max_length=6,
                                           compact=True, classes="-short"), _unit("patrons, by"),
                       Select([(label, key) for key, label in svc.ORDER_FIELDS.items()], value="last_name",
                              allow_blank=False, id="batch-nsd-order", compact=True),
                       id="batch-nsd-group-row")
            yield _row("Duplication circ.", Select(TRI, value="unchanged", allow_blank=False,
                                                   id="batch-duplication", compact=True))
            yield _row("Auto-select", Select(TRI, value="unchanged", allow_blank=False, id="batch-auto-select",
                                             compact=True))
            yield _row("Nightly Debug", MarkedCheckbox(Content("on"), id="batch-nightly", compact=True),
                       Label(Content(NIGHTLY_NOTE), id="batch-nightly-note"), id="batch-nightly-row")
            yield _row("Subjects to add", Input(placeholder="none (subject codes, e.g. MYS BIO)",
                                                id="batch-subjects", compact=True))
            yield _row("Service queues", MarkedCheckbox(Content("fill"), id="batch-fill", compact=True),
                       _unit("queue length"), Input(placeholder="unchanged", id="batch-queue-length",
                                                    restrict=r"[0-9]*", max_length=3, compact=True,
                                                    classes="-short"), _unit("1-200"))
        yield Static(Content(""), id="batch-error")
        yield ProgressBar(id="batch-progress", show_eta=False)
        yield Static(Content("Fill the form · F5 preview · Ctrl+R PROCESS"), id="batch-status")
        yield Static(Content(""), id="batch-filler")

    def on_mount(self) -> None:
        self._show_nsd("unchanged")
        self.load_choices()
        # not an input: the section keys (1-6) work until the operator types somewhere
        self.query_one("#batch-medium", Select).focus()
        if self._pending is not None:
            self._apply_pending()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self.is_mounted and self._pending is not None:
            self._apply_pending()

    # -- which patrons --------------------------------------------------------------------------
    def choose(self, *, set_name: str | None, statement: str | None) -> None:
        """Choose the patrons (a set by name, else the statement); applied once mounted."""
        self._pending = (set_name, statement if set_name is None else None)
        if self.is_mounted:
            self._apply_pending()

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            set_name, statement = pending
            self.load_target(set_name, statement if set_name is None else None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="batch-target")
    def load_target(self, set_name: str | None, statement: str | None) -> None:
        conn = self.app.store.connect()
        try:
            t = svc.target(conn, set_name=set_name, statement=statement if set_name is None else None)
        except svc.BatchError as exc:
            self.app.call_from_thread(self.set_error, str(exc))
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._target_chosen, t)

    def _target_chosen(self, t: svc.Target) -> None:
        self.target = t
        self.set_error("")
        self.query_one("#batch-target", Static).update(Content(target_line(t)))
        statement = self.query_one("#batch-statement", Input)
        with self.prevent(Input.Changed):
            statement.value = t.statement
        self.query_one("#batch-medium", Select).focus()
        self.show_status()

    def action_focus_statement(self) -> None:
        self.query_one("#batch-statement", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "batch-statement":
            event.stop()
            self.load_target(None, event.value)

    def action_pick_set(self) -> None:
        self.load_sets()

    @work(thread=True, exclusive=True, exit_on_error=False, group="batch-sets")
    def load_sets(self) -> None:
        conn = self.app.store.connect()
        try:
            sets = query_sets.list_sets(conn)
        finally:
            conn.close()
        self.app.call_from_thread(self.app.push_screen, PickSetScreen(sets), self._set_picked)

    def _set_picked(self, name: str | None) -> None:
        if name is not None:
            self.load_target(name, None)

    # -- the form -------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="batch-choices")
    def load_choices(self) -> None:
        conn = self.app.store.connect()
        try:
            choices = svc.choices(conn)
            may = may_use_batch_tools(conn, self.app.store.operator)
        finally:
            conn.close()
        self.app.call_from_thread(self._choices_loaded, choices, may)

    def _choices_loaded(self, choices: svc.Choices, may: bool) -> None:
        self.choices = choices
        self.may_process = may
        self.query_one("#batch-medium", Select).set_options(
            [(Content(f"{visible(code)}  {visible(name)}"), code) for code, name in choices.media])
        # data as text: a plain str option label would be read as markup
        self.query_one("#batch-status-of-service", Select).set_options(
            [(Content(visible(s)), s) for s in choices.statuses_of_service])
        self.query_one("#batch-frequency", Select).set_options(
            [(Content(visible(s)), s) for s in choices.frequencies])
        codes = " ".join(visible(code) for code, _ in choices.subjects[:8])
        if codes:
            self.query_one("#batch-subjects", Input).placeholder = f"none (codes: {codes})"
        self.show_status()

    def _show_nsd(self, mode: str) -> None:
        self.query_one("#batch-nsd-fixed-row").set_class(mode != "fixed", "-off")
        self.query_one("#batch-nsd-spaced-row").set_class(mode != "spaced", "-off")
        self.query_one("#batch-nsd-group-row").set_class(mode != "spaced", "-off")

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "batch-nsd-mode":
            self._show_nsd(str(event.value))
        self.show_status()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "batch-statement":
            self.show_status()

    def on_checkbox_changed(self, event) -> None:
        self.show_status()

    def read_form(self) -> dict[str, Any]:
        def text(wid: str) -> str:
            return self.query_one(f"#{wid}", Input).value

        def chosen(wid: str) -> str | None:
            select = self.query_one(f"#{wid}", Select)
            return None if select.is_blank() else str(select.value)

        return {
            "medium": chosen("batch-medium"),
            "status_of_service": chosen("batch-status-of-service"),
            "max_items_out": text("batch-max-items"),
            "items_per_shipment": text("batch-per-shipment"),
            "service_frequency": chosen("batch-frequency"),
            "nsd_mode": chosen("batch-nsd-mode"),
            "nsd_date": text("batch-nsd-date"),
            "nsd_start": text("batch-nsd-start"),
            "nsd_every": text("batch-nsd-every"),
            "nsd_group": text("batch-nsd-group"),
            "nsd_order": chosen("batch-nsd-order"),
            "duplication_circulation": chosen("batch-duplication"),
            "auto_select": chosen("batch-auto-select"),
            "nightly_debug": self.query_one("#batch-nightly", MarkedCheckbox).value,
            "add_subjects": text("batch-subjects"),
            "fill_service_queues": self.query_one("#batch-fill", MarkedCheckbox).value,
            "queue_length": text("batch-queue-length"),
        }

    def current_update(self) -> svc.BatchUpdate | None:
        """The form as a BatchUpdate, or None after showing the message naming the field."""
        try:
            return build_update(self.read_form())
        except FormError as exc:
            self.set_error(str(exc))
            self.notify(visible(str(exc)), severity="error", markup=False)
            return None

    def set_error(self, message: str) -> None:
        error = self.query_one("#batch-error", Static)
        error.update(Content("\n".join(visible(line) for line in message.splitlines())))
        error.set_class(bool(message), "-shown")

    @property
    def running(self) -> bool:
        return self.handle is not None and not self.handle.finished

    def show_status(self) -> None:
        if not self.is_mounted or self.running:
            return
        status = self.query_one("#batch-status", Static)
        if self.target is None:
            status.update(Content("Choose the patrons first: F2 picks a query set, / types a statement."))
            return
        try:
            update = build_update(self.read_form())
        except FormError:
            update = None
        fresh = update is not None and self.preview_key == form_key(self.target, update)
        if self.preview is not None and fresh:
            text = (f"Preview is current: {self.preview.patrons:,} patrons. Ctrl+R PROCESS, Ctrl+B in "
                    f"background (type the count to confirm).")
        elif self.preview is not None:
            text = "Form or set changed since the preview: F5 previews again before PROCESS."
        else:
            text = "F5 previews the changes; PROCESS (Ctrl+R) needs a current preview."
        if self.may_process is False:
            text += f" Operator {visible(self.app.store.operator)} may not use batch tools: PROCESS is refused."
        status.update(Content(text))

    # -- preview ---------------------------------------------------------------------------------
    def action_preview(self) -> None:
        if self.target is None:
            self.set_error("Choose the patrons first: F2 picks a query set, or / types a statement (Enter chooses it).")
            return
        update = self.current_update()
        if update is None:
            return
        self.set_error("")
        self.query_one("#batch-status", Static).update(Content("Previewing…"))
        self.make_preview(self.target, update)

    @work(thread=True, exclusive=True, exit_on_error=False, group="batch-preview")
    def make_preview(self, target: svc.Target, update: svc.BatchUpdate) -> None:
        conn = self.app.store.connect()
        try:
            p = svc.preview(conn, target, update)
        except svc.BatchError as exc:
            self.app.call_from_thread(self._refused, str(exc))
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._previewed, target, update, p)

    def _previewed(self, target: svc.Target, update: svc.BatchUpdate, p: svc.Preview) -> None:
        self.preview = p
        self.preview_key = form_key(target, update)
        self.show_status()
        self.app.push_screen(BatchPreviewScreen(p, update.medium),
                             lambda then: self.action_process(then == "background") if then else None)

    def _refused(self, message: str) -> None:
        self.set_error(message)
        self.notify(visible(message.splitlines()[0]), severity="error", markup=False, timeout=10)
        self.show_status()

    # -- process ---------------------------------------------------------------------------------
    def action_process(self, background: bool = False) -> None:
        """PROCESS; with `background` the run is handed to the scheduler service (after the same
        checks and the same typed confirmation) instead of started here."""
        if self.running:
            self.notify("A batch update is running; wait for it to finish.", severity="warning", markup=False)
            return
        if self.target is None:
            self.set_error("Choose the patrons first: F2 picks a query set, or / types a statement (Enter chooses it).")
            return
        update = self.current_update()
        if update is None:
            return
        if self.preview is None:
            self._refused("PROCESS refused: preview first (F5), then PROCESS.")
            return
        if self.preview_key != form_key(self.target, update):
            self._refused("PROCESS refused: the preview is stale (the form or the set changed since it was "
                          "made). Preview again (F5).")
            return
        self.check_fresh(self.target, update, self.preview, background)

    @work(thread=True, exclusive=True, exit_on_error=False, group="batch-process")
    def check_fresh(self, target: svc.Target, update: svc.BatchUpdate, p: svc.Preview,
                    background: bool = False) -> None:
        """The set still holds the patrons the preview counted? Then ask for the count."""
        conn = self.app.store.connect()
        try:
            now = svc.target(conn, set_name=target.set_name,
                             statement=None if target.set_name else target.statement)
        except svc.BatchError as exc:
            self.app.call_from_thread(self._refused, str(exc))
            return
        finally:
            conn.close()
        if now.count != p.patrons:
            self.app.call_from_thread(
                self._refused, f"PROCESS refused: the preview is stale: the set holds {now.count:,} patrons now, "
                f"the preview counted {p.patrons:,}. Preview again (F5).")
            return
        self.app.call_from_thread(self._confirm, target, update, p, background)

    def _confirm(self, target: svc.Target, update: svc.BatchUpdate, p: svc.Preview,
                 background: bool = False) -> None:
        where = f"query set {visible(target.set_name)}" if target.set_name else "the statement"
        question = (f"PROCESS: change the {visible(update.medium)} profile of the {p.patrons:,} patrons of "
                    f"{where} ({visible(target.statement) or 'all patrons'}), creating "
                    f"{p.profiles_created:,} profiles. Nightly Debug will be "
                    f"{'on' if update.nightly_debug else 'off'} for all of them.")
        if background:
            question += (" It is handed to the scheduler service, which runs it (and then fills the service "
                         "queues) even after this console is closed.")
            self.app.push_screen(ConfirmScreen(question, str(p.patrons)),
                                 lambda ok: self.queue_run(target, update) if ok else None)
            return
        self.app.push_screen(ConfirmScreen(question, str(p.patrons)),
                             lambda ok: self.start_run(target, update) if ok else None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="batch-process")
    def queue_run(self, target: svc.Target, update: svc.BatchUpdate) -> None:
        """PROCESS in background: queue the batch for the scheduler service."""
        conn = self.app.store.connect()
        try:
            run_id = svc.queue_batch_update(conn, self.app.store.operator, target, update)
        except PermissionDenied as exc:
            self.app.call_from_thread(self._refused, f"PROCESS refused, nothing was queued: {exc}")
            return
        except svc.BatchError as exc:
            self.app.call_from_thread(self._refused, str(exc))
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._queued, run_id)

    def _queued(self, run_id: int) -> None:
        from patron_tui.services.background import queued_message

        self.preview = None  # a preview is used once
        self.preview_key = None
        self.set_error("")
        text = queued_message(run_id)
        self.query_one("#batch-status", Static).update(Content(text))
        self.notify(text, markup=False, timeout=8)

    @work(thread=True, exclusive=True, exit_on_error=False, group="batch-process")
    def start_run(self, target: svc.Target, update: svc.BatchUpdate) -> None:
        engine = self.app.engine
        if engine is None:
            self.app.call_from_thread(self._refused, "The run engine is not ready yet; try again.")
            return
        try:
            handle = svc.start_batch_update(engine, self.app.store, self.app.store.operator, target, update)
        except PermissionDenied as exc:
            self.app.call_from_thread(self._refused, f"PROCESS refused, nothing was changed: {exc}")
            return
        except svc.BatchError as exc:
            self.app.call_from_thread(self._refused, str(exc))
            return
        self.app.call_from_thread(self._started, handle)

    def _started(self, handle) -> None:
        self.handle = handle
        self.preview = None  # a preview is used once: the next PROCESS previews again
        self.preview_key = None
        self.set_error("")
        bar = self.query_one(ProgressBar)
        bar.add_class("-shown")
        bar.update(total=None, progress=0)
        self.notify(f"Run {handle.run_id}: {visible(handle.title)} started.", markup=False)
        self._ensure_timer()
        self.poll()

    def _ensure_timer(self) -> None:
        if self._timer is None:
            self._timer = self.set_interval(0.1, self.poll)

    def poll(self) -> None:
        handle, filler = self.handle, self.filler
        if handle is not None:
            if not handle.finished:
                total = handle.total
                bar = self.query_one(ProgressBar)
                bar.update(total=total or None, progress=handle.done)
                of = f" of {total:,}" if total else ""
                self.query_one("#batch-status", Static).update(
                    Content(f"Run {handle.run_id} {handle.status.value}: {handle.done:,}{of} patrons"))
            else:
                self.handle = None
                self.query_one(ProgressBar).update(total=max(handle.done, 1), progress=max(handle.done, 1))
                self.finish(handle)
        if filler is not None:
            line = self.query_one("#batch-filler", Static)
            if not filler.finished:
                line.update(Content(_filling(filler, self.filler_waiting)))
            else:
                self.filler = None
                s = filler.summary or {}
                if filler.status.value == "succeeded":
                    text = (f"Service queues filled: {s.get('queues_filled', 0):,} queues, "
                            f"{s.get('titles_added', 0):,} titles added (run {filler.run_id}).")
                else:
                    text = (f"Queue filler run {filler.run_id} {filler.status.value}"
                            f"{': ' + visible(filler.error) if filler.error else ''}; the scheduler picks up "
                            f"the queues still waiting.")
                line.update(Content(text))
        if self.handle is None and self.filler is None and self._timer is not None:
            self._timer.stop()
            self._timer = None

    @work(thread=True, exit_on_error=False, group="batch-finish")
    def finish(self, handle) -> None:
        conn = self.app.store.connect()
        try:
            report = svc.errors(conn, handle.run_id)
            waiting = queue_fill.pending(conn)
        finally:
            conn.close()
        result = BatchResult(handle.run_id, handle.status.value, handle.error, dict(handle.summary or {}), report)
        filler = None
        engine = self.app.engine
        if handle.status.value == "succeeded" and waiting and engine is not None:
            # the filler that fills the queues: one it starts, or the one already at work, which
            # takes them (followed here when this console runs it); the summary names it
            filler_id, filler = queue_fill.hand_off(engine, self.app.store, self.app.store.operator)
            if filler_id is not None:
                result.summary["filler_run_id"] = filler_id
                if filler is None:
                    filler = engine.handle(filler_id)
        self.app.call_from_thread(self._finished, result, filler, waiting)

    def _finished(self, result: BatchResult, filler, waiting: int) -> None:
        self.result = result
        self.query_one("#batch-status", Static).update(Content(result_line(result)))
        line = self.query_one("#batch-filler", Static)
        filler_id = result.summary.get("filler_run_id")
        if filler is not None:
            self.filler = filler
            line.add_class("-shown")
            self.filler_waiting = waiting
            line.update(Content(_filling(filler, waiting)))
            self._ensure_timer()
        elif filler_id is not None:
            line.add_class("-shown")
            line.update(Content(f"{waiting:,} service queues wait for queue filler run {filler_id}, already at "
                                f"work in another process (the Job Manager follows it)."))
        if self.app.screen is self:
            self.app.push_screen(BatchReportScreen(result))
        else:
            self.notify(f"Batch update run {result.run_id} finished: F7 in Batch update (3) shows its report.",
                        markup=False)

    def action_report(self) -> None:
        if self.result is None:
            self.notify("No batch update has run from this screen yet.", markup=False)
            return
        self.app.push_screen(BatchReportScreen(self.result))
