"""One patron utility: Selections, Options, Preview, Run and its operations report.

Both forms are derived from models (`widgets.model_form`): the Selections tab from
`services.utilities.Selections` (a saved query set, a search statement, the reference's
selection fields), the Options tab from the utility's own Options model, so a new utility
needs no screen change. F5 previews (selected, changes, sample before/after rows, every
skipped patron with its reason, the utility's notes); Ctrl+R runs what was previewed: a
run needs a preview of the form as it is now, a utility that removes data first asks for
the previewed patron count to be typed, and the run carries the preview's fingerprint so
the service refuses it when the patrons changed since. Ctrl+B (Run in background) does the
same checks, then hands the run to the scheduler service (`base.queue_utility`), fingerprint
included, and says which run to follow in the Job Manager. Progress shows under the tabs and
in the log pane; the operations report (changed, skipped with reasons, errors) opens when
the run ends: a/c/s/e filter it, x exports it as CSV (`services.utilities.report_csv`).
Errors are sentences naming the field; nothing is changed by a refused run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, ProgressBar, Static, TabbedContent, TabPane

from patron_tui.textsafe import visible
from patron_tui.ui.screens.job_summary import MessageRow, MessageView
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, AskScreen, ConfirmScreen, PathScreen
from patron_tui.ui.widgets.log_pane import LogPane
from patron_tui.ui.widgets.model_form import (DEFAULT_CHOICES, FieldSpec, ModelForm, field_specs,
                                              parse_date)

#: filter -> (what a line's (level, code) must be, label); a line is (line, barcode, level, code, text)
REPORT_FILTERS: dict[str, tuple[Any, str]] = {
    "all": (lambda level, code: True, "everything"),
    "changed": (lambda level, code: code == "changed", "changed patrons"),
    "skipped": (lambda level, code: level == "skipped", "skipped patrons"),
    "error": (lambda level, code: level == "error", "errors"),
}
HELP = "F5 preview · Ctrl+R run · tabs: F2 Selections F3 Options F4 Preview F6 Report"
#: skipped patrons listed in the preview table (the operations report lists every one)
SKIPPED_SHOWN = 1000
#: after a run of these utilities, offer the next one with the same selection
FOLLOW_UPS = {"change-patron-policy": "recompute-due-dates"}


class FormError(ValueError):
    """A value the form cannot use: `field` names the form field, str() is the sentence."""

    def __init__(self, form: str, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.form = form
        self.field = field_name


@dataclass
class Loaded:
    """What the screen reads once from the services (on a worker)."""

    name: str
    title: str
    description: str
    unavailable: str | None
    removes_data: bool
    needs_selection: bool
    selection_specs: list[FieldSpec]
    option_specs: list[FieldSpec]
    options: dict[str, list[tuple[str, str]]]
    follow_up: str | None = None
    follow_up_title: str | None = None


@dataclass
class Previewed:
    """A preview and the form it was made from: a run may use it only while the form is unchanged."""

    snapshot: str
    preview: Any
    selections: Any
    options: Any


@dataclass
class ReportData:
    run_id: int
    title: str
    changed: int
    skipped: int
    errors: int
    notes: list[str]
    rows: list[MessageRow] = field(default_factory=list)


def load_utility(conn, name: str) -> Loaded:
    """The utility's words, availability, forms and the choices its forms offer."""
    from patron_tui.services import query_sets
    from patron_tui.services.utilities import base
    from patron_tui.services.utilities.terms import Terms

    util = base.get(name)
    terms = Terms.load(conn)
    sel_specs = field_specs(base.Selections, terms.apply, default_choices=DEFAULT_CHOICES)
    opt_specs = field_specs(util.Options, terms.apply)
    choices: dict[str, list[tuple[str, str]]] = {}
    for spec in (*sel_specs, *opt_specs):
        if spec.choices and spec.choices not in choices:
            choices[spec.choices] = [(str(c), str(lbl)) for c, lbl in base.choices(conn, spec.choices)]
    sets = []
    for qs in query_sets.list_sets(conn):
        kind = f"frozen, {qs.member_count or 0:,} patrons" if qs.frozen_at else "live"
        sets.append((qs.name, f"{qs.name} ({kind}): {qs.statement or '(all patrons)'}"))
    choices["query_set"] = sets
    follow = getattr(util, "follow_up", None) or FOLLOW_UPS.get(name)
    follow_title = None
    if follow is not None:
        if follow in base.UTILITIES:
            follow_title = base.UTILITIES[follow].heading(terms)[0]
        else:
            follow = None
    title, description = util.heading(terms)
    return Loaded(
        name=name, title=title, description=description,
        unavailable=util.available(conn), removes_data=bool(util.removes_data),
        needs_selection=bool(getattr(util, "needs_selection", True)),
        selection_specs=sel_specs, option_specs=opt_specs, options=choices,
        follow_up=follow, follow_up_title=follow_title,
    )


def typed_values(specs: list[FieldSpec], values: dict[str, Any], form: str) -> dict[str, Any]:
    """Form values as the model's types: MM/DD/YYYY dates, whole numbers, amounts."""
    out: dict[str, Any] = {}
    for spec in specs:
        value = values.get(spec.name)
        if value is None or value == "" or value == []:
            continue
        if spec.kind == "date":
            try:
                value = parse_date(value)
            except ValueError:
                raise FormError(form, spec.name,
                                f"{spec.title}: {value!r} is not a date; type it as MM/DD/YYYY.") from None
        elif spec.kind == "integer":
            try:
                value = int(value)
            except ValueError:
                raise FormError(form, spec.name, f"{spec.title}: {value!r} is not a whole number.") from None
        elif spec.kind == "number":
            try:
                value = Decimal(value)
            except InvalidOperation:
                raise FormError(form, spec.name, f"{spec.title}: {value!r} is not an amount.") from None
        out[spec.name] = value
    return out


def option_texts(values: dict[str, Any]) -> dict[str, Any]:
    """Options as the service's parse_options takes them: text as typed (as from the CLI),
    booleans and picked lists as they are; a blank field is left out (the default applies)."""
    return {name: value for name, value in values.items() if value is not None}


def validation_sentences(exc, specs: list[FieldSpec]) -> dict[str, str]:
    """A pydantic ValidationError as {field: sentence naming the field by its title}."""
    titles = {s.name: s.title for s in specs}
    out: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        name = loc[0] if loc else ""
        msg = err.get("msg", "is not valid")
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        out.setdefault(name, f"{titles.get(name, name.replace('_', ' ') or 'Form')}: {msg}.")
    return out


def field_of(message: str, specs: list[FieldSpec]) -> str | None:
    """The field a service's sentence names ("Note text: ..." -> note_text), if any."""
    lower = message.lower()
    best = None
    for spec in specs:
        for word in (spec.title, spec.name, spec.name.replace("_", " ")):
            if word and lower.startswith(word.lower()) and (best is None or len(word) > best[1]):
                best = (spec.name, len(word))
    return best[0] if best else None


def make_preview(store, name: str, sel_specs, sel_values, opt_values):
    """(selections, options, preview) or raises FormError / the services' sentences."""
    from pydantic import ValidationError

    from patron_tui.services.utilities import base

    try:
        selections = base.Selections(**typed_values(sel_specs, sel_values, "selections"))
    except ValidationError as exc:
        errors = validation_sentences(exc, sel_specs)
        field_name = next(iter(errors))
        raise FormError("selections", field_name, errors[field_name]) from None
    conn = store.connect()
    try:
        options = base.parse_options(_util(name), option_texts(opt_values))
        preview = base.preview(conn, name, selections, options, store.operator)
    finally:
        conn.close()
    return selections, options, preview


def _util(name: str):
    from patron_tui.services.utilities import base

    return base.get(name)


def load_report(store, run_id: int) -> ReportData:
    """The operations report as lines: notes, every changed patron, skipped, errors."""
    from patron_tui.services.utilities import base

    conn = store.connect()
    try:
        rep = base.report(conn, run_id)
        changes = getattr(rep, "changes", None)
        if changes is None:   # the report's changed lines are the run's "changed" messages
            from patron_tui.store import runlog

            changed = [(m["barcode"] or "", m["text"] or "") for m in runlog.messages(conn, run_id, ["info"])
                       if m["code"] == "changed"]
        else:
            changed = [(c.barcode or "", f"{c.name}: {c.before or '(blank)'} -> {c.after or '(blank)'}")
                       for c in changes]
    finally:
        conn.close()
    rows: list[MessageRow] = [(None, "", "info", "note", n) for n in rep.notes]
    if rep.error:
        rows.append((None, "", "error", "run", rep.error))
    rows += [(None, barcode, "info", "changed", text) for barcode, text in changed]
    for s in rep.skipped:
        rows.append((None, s.barcode or "", "skipped", "skipped", f"{s.name}: {s.reason}"))
    for s in rep.errors:
        rows.append((None, s.barcode or "", "error", "not changed", f"{s.name}: {s.reason}"))
    return ReportData(rep.run_id, rep.title, rep.changed, len(rep.skipped), len(rep.errors),
                      list(rep.notes), rows)


class ReportView(MessageView):
    """The operations report, one line each: outcome, barcode, name and what happened."""

    OUTCOME = {"changed": "CHANGED", "note": "NOTE   ", "skipped": "SKIPPED", "error": "ERROR  "}

    def set_rows(self, rows: list[MessageRow]) -> None:
        self.barcode_width = min(max((len(r[1]) for r in rows[:5000]), default=0), 24)
        super().set_rows(rows)
        self.virtual_size = self.virtual_size.with_width(
            max((10 + self.barcode_width + len(r[4]) for r in rows[:5000]), default=0))

    def line_text(self, row: MessageRow) -> Text:
        _line, barcode, level, code, text_ = row
        style = self.get_component_rich_style(f"msgview--{level}", partial=True)
        meta = self.get_component_rich_style("msgview--meta", partial=True)
        text = Text(no_wrap=True, end="")
        text.append(self.OUTCOME.get(code, self.OUTCOME.get(level, level.upper()[:7])) + " ", style)
        text.append(f"{visible(barcode)[:self.barcode_width]:{self.barcode_width}} ", meta)
        text.append(visible(text_), style if level != "info" else "")
        return text


class ExportReportScreen(PathScreen):
    """Where the operations report's CSV goes (default: the current folder)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ExportReportScreen")

    def __init__(self, default: Path) -> None:
        super().__init__(default, title="Export the operations report", frame_id="export-report-frame",
                         input_id="export-report-path",
                         help_text="Writes the operations report (changed, skipped with reasons, errors) as CSV.")


class FollowUpScreen(AskScreen):
    """Offer the follow-up utility (Recompute Due Dates after Change Patron Policy)."""

    def __init__(self, question: str) -> None:
        super().__init__("Next step", question, "y opens it with the same selection · n or Esc: not now")


class UtilityScreen(Screen[None]):
    """A utility: its two forms, the preview, the run and the operations report."""

    BINDINGS = [
        Binding("f5", "preview", "Preview", id="utility.preview"),
        Binding("ctrl+r", "run", "Run", id="utility.run"),
        Binding("ctrl+b", "run(True)", "Run in background", id="utility.background"),
        Binding("escape", "back", "Back", id="utility.back"),
        Binding("ctrl+x", "cancel_run", "Cancel run", show=False, id="utility.cancel"),
        Binding("f2", "tab('tab-selections')", "Selections", show=False),
        Binding("f3", "tab('tab-options')", "Options", show=False),
        Binding("f4", "tab('tab-preview')", "Preview tab", show=False),
        Binding("f6", "tab('tab-report')", "Report tab", show=False),
        Binding("a", "filter('all')", "All", id="utility.report_all"),
        Binding("c", "filter('changed')", "Changed", id="utility.report_changed"),
        Binding("s", "filter('skipped')", "Skipped", id="utility.report_skipped"),
        Binding("e", "filter('error')", "Errors", id="utility.report_errors"),
        Binding("x", "export", "Export CSV", id="utility.export"),
    ]
    DEFAULT_CSS = """
    UtilityScreen #ur-title { height: 1; padding: 0 1; background: $panel; color: $foreground;
                              text-wrap: nowrap; text-overflow: ellipsis; }
    UtilityScreen #ur-problem { height: auto; max-height: 3; padding: 0 1; color: $error; display: none; }
    UtilityScreen #ur-problem.-shown { display: block; }
    UtilityScreen TabbedContent { height: 1fr; }
    UtilityScreen TabPane { padding: 0 1; height: 1fr; }
    UtilityScreen .ur-form { height: 1fr; scrollbar-size-vertical: 1; }
    UtilityScreen .ur-note { height: auto; color: $foreground-muted; }
    UtilityScreen #ur-preview-counts { height: auto; max-height: 7; color: $foreground; }
    UtilityScreen #ur-preview-table { height: 1fr; }
    UtilityScreen #ur-report-counts { height: auto; max-height: 3; }
    UtilityScreen #ur-report-filter { height: 1; color: $foreground-muted; }
    UtilityScreen MessageView { height: 1fr; }
    UtilityScreen #ur-hint { height: 1; padding: 0 1; color: $foreground-muted; }
    UtilityScreen #ur-run-line { height: 1; padding: 0 1; }
    UtilityScreen #ur-progress { width: 28; display: none; }
    UtilityScreen #ur-progress.-active { display: block; }
    UtilityScreen #ur-status { width: 1fr; }
    UtilityScreen LogPane { height: 6; }
    UtilityScreen LogPane.-hidden { display: none; }
    """

    def __init__(self, name: str, *, selections: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.utility_name = name
        self.initial_selections = dict(selections or {})
        self.info: Loaded | None = None
        self.previewed: Previewed | None = None
        self.handle = None
        self.report: ReportData | None = None
        self.filter_name = "all"
        self.started_at = 0.0
        self._timer = None
        self._last_problem = ""

    # -- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(Content(f"{self.utility_name}: loading…"), id="ur-title")
        yield Static(Content(""), id="ur-problem")
        with TabbedContent(id="ur-tabs"):
            with TabPane("Selections", id="tab-selections"):
                yield VerticalScroll(id="ur-selections", classes="ur-form")
            with TabPane("Options", id="tab-options"):
                yield VerticalScroll(id="ur-options", classes="ur-form")
            with TabPane("Preview", id="tab-preview"):
                yield Static(Content("No preview yet: F5 previews what a run would do."),
                             id="ur-preview-counts")
                yield DataTable(cursor_type="row", zebra_stripes=True, id="ur-preview-table")
            with TabPane("Report", id="tab-report"):
                yield Static(Content("No run yet: after a preview, Ctrl+R runs."), id="ur-report-counts")
                yield Static(Content(""), id="ur-report-filter")
                yield ReportView(id="ur-report")
        yield Static(Content(HELP), id="ur-hint")
        with Horizontal(id="ur-run-line"):
            yield ProgressBar(id="ur-progress", show_eta=False)
            yield Static(Content(""), id="ur-status")
        pane = LogPane(self.app.log_buffer, id="log-pane")
        pane.set_class(not self.app.log_visible, "-hidden")
        yield pane
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#ur-preview-table", DataTable)
        table.add_column("", width=6)
        table.add_column("Barcode")
        table.add_column("Name", width=22)
        table.add_column("Before -> after, or why skipped")
        self.query_one(ProgressBar).update(total=1, progress=0)
        self.load()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            pane = self.query_one(LogPane)
            pane.set_class(not self.app.log_visible, "-hidden")
            pane.view.reload()

    @property
    def running(self) -> bool:
        return self.handle is not None and not self.handle.finished

    # -- loading ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="utility-load")
    def load(self) -> None:
        conn = self.app.store.connect()
        try:
            info = load_utility(conn, self.utility_name)
        except Exception as exc:  # an unknown name or a broken module: say so, stay open
            self.app.call_from_thread(self.show_problem, f"{self.utility_name}: {exc}")
            return
        finally:
            conn.close()
        self.app.call_from_thread(self.build, info)

    def build(self, info: Loaded) -> None:
        self.info = info
        self.query_one("#ur-title", Static).update(Content(f"{visible(info.title)} — {visible(info.description)}"))
        sel_box = self.query_one("#ur-selections", VerticalScroll)
        opt_box = self.query_one("#ur-options", VerticalScroll)
        if info.needs_selection:
            sel_box.mount(ModelForm(info.selection_specs, prefix="sel", options=info.options,
                                    values=self.initial_selections, id="ur-sel-form"))
            sel_box.mount(Static(Content("Every field given narrows the selection. Enter on a list "
                                         "opens it; Space picks in a multi-pick."), classes="ur-note"))
        else:
            sel_box.mount(Static(Content("This utility acts on every patron it applies to; it takes "
                                         "no selection."), classes="ur-note"))
        opt_box.mount(ModelForm(info.option_specs, prefix="opt", options=info.options,
                                empty_text="This utility has no options.", id="ur-opt-form"))
        if info.unavailable:
            self.show_problem(f"Unavailable: {info.unavailable}")
        self.refresh_bindings()
        self.call_after_refresh(self._focus_first)

    def _focus_first(self) -> None:
        tabs = self.query_one(TabbedContent)
        form = self.form("sel") if self.info and self.info.needs_selection else self.form("opt")
        if form is None:
            return
        tabs.active = "tab-selections" if form.id == "ur-sel-form" else "tab-options"
        if form.specs:
            first = next((s for s in form.specs if s.name in self.initial_selections), form.specs[0])
            form.focus_field(first.name)

    def form(self, which: str) -> ModelForm | None:
        found = self.query(f"#ur-{which}-form")
        return found.first(ModelForm) if found else None

    def snapshot(self) -> str:
        parts = []
        for which in ("sel", "opt"):
            form = self.form(which)
            parts.append(repr(sorted(form.values().items())) if form else "")
        return "|".join(parts)

    # -- messages shown ------------------------------------------------------------------------
    def show_problem(self, message: str) -> None:
        self._last_problem = message
        problem = self.query_one("#ur-problem", Static)
        problem.update(Content("\n".join(visible(line) for line in message.splitlines())))
        problem.set_class(bool(message), "-shown")

    def set_status(self, text: str) -> None:
        self.query_one("#ur-status", Static).update(Content(text))

    def on_model_form_field_focused(self, event: ModelForm.FieldFocused) -> None:
        spec = event.spec
        text = event.form.errors.get(spec.name) or spec.description or HELP
        self.query_one("#ur-hint", Static).update(Content(visible(text)))

    def on_model_form_edited(self, event: ModelForm.Edited) -> None:
        if event.name in event.form.errors:
            event.form.show_errors({k: v for k, v in event.form.errors.items() if k != event.name})
        if self.previewed is not None and not self.running:
            self.set_status("The form changed since the preview: F5 previews again.")

    # -- preview ---------------------------------------------------------------------------------
    def _refuse_if_unavailable(self) -> bool:
        info = self.info
        if info is None:
            self.notify("The utility is still loading.", markup=False)
            return True
        if info.unavailable:
            self.show_problem(f"Unavailable: {info.unavailable}")
            self.notify(visible(f"{info.title} is unavailable: {info.unavailable}"), severity="error",
                        markup=False)
            return True
        return False

    def action_preview(self) -> None:
        if self.running:
            self.notify("A run is in progress; wait for it or cancel it (Ctrl+X).", markup=False)
            return
        if self._refuse_if_unavailable():
            return
        info = self.info
        sel = self.form("sel")
        opt = self.form("opt")
        sel_values = sel.values() if sel else {}
        opt_values = opt.values() if opt else {}
        if sel:
            sel.show_errors({})
        if opt:
            opt.show_errors({})
        self.show_problem("")
        self.set_status("Previewing…")
        self.do_preview(info.name, info.selection_specs, sel_values, opt_values, self.snapshot())

    @work(thread=True, exclusive=True, exit_on_error=False, group="utility-preview")
    def do_preview(self, name, sel_specs, sel_values, opt_values, snapshot) -> None:
        try:
            selections, options, preview = make_preview(self.app.store, name, sel_specs, sel_values, opt_values)
        except Exception as exc:
            self.app.call_from_thread(self.refused, exc, "Not previewed")
            return
        self.app.call_from_thread(self.show_preview, Previewed(snapshot, preview, selections, options))

    def refused(self, exc: Exception, what: str) -> None:
        """A refusal as a sentence naming the field (and the field marked on its tab)."""
        from pydantic import ValidationError

        info = self.info
        form_name, field_name, message = None, None, str(exc)
        if isinstance(exc, FormError):
            form_name, field_name = exc.form, exc.field
        elif isinstance(exc, ValidationError) and info is not None:
            errors = validation_sentences(exc, info.option_specs)
            field_name = next(iter(errors), None)
            form_name, message = "options", errors.get(field_name, message)
        elif info is not None:
            field_name = getattr(exc, "field", None)
            if field_name and any(s.name == field_name for s in info.option_specs):
                form_name = "options"
            elif field_name and any(s.name == field_name for s in info.selection_specs):
                form_name = "selections"
            else:
                for which, specs in (("options", info.option_specs), ("selections", info.selection_specs)):
                    field_name = field_of(message, specs)
                    if field_name:
                        form_name = which
                        break
                else:
                    from patron_tui.services.utilities.selections import SelectionError

                    if isinstance(exc.__cause__, SelectionError) and info.selection_specs:
                        # "Choose patrons: ..." names no one field: the Selections tab, first field
                        form_name, field_name = "selections", info.selection_specs[0].name
        if not isinstance(exc, (ValueError, PermissionError, LookupError)):
            message = f"{type(exc).__name__}: {message}"
        self.show_problem(f"{what}: {message}")
        self.set_status(f"{what}: nothing was changed.")
        self.notify(visible(message), severity="error", markup=False, timeout=8)
        if form_name and field_name:
            form = self.form("sel" if form_name == "selections" else "opt")
            if form is not None and form.spec(field_name) is not None:
                form.show_errors({field_name: message})
                self.query_one(TabbedContent).active = "tab-selections" if form_name == "selections" else "tab-options"
                form.focus_field(field_name)
                self.query_one("#ur-hint", Static).update(Content(visible(message)))

    def show_preview(self, previewed: Previewed) -> None:
        self.previewed = previewed
        p = previewed.preview
        lines = [f"{p.selected:,} selected · {p.changes:,} would change · {len(p.skipped):,} skipped"
                 f"{' · REMOVES DATA' if p.removes_data else ''}",
                 f"Selections: {visible(p.selections)}"]
        lines += [f"Note: {visible(n)}" for n in p.notes]
        if self.info is not None and self.info.follow_up:
            lines.append(f"After the run, {visible(self.info.follow_up_title)} is offered with the same selection.")
        if len(p.skipped) > SKIPPED_SHOWN:
            lines.append(f"The first {SKIPPED_SHOWN:,} skipped patrons are listed; the run's report lists all.")
        self.query_one("#ur-preview-counts", Static).update(Content("\n".join(lines)))
        table = self.query_one("#ur-preview-table", DataTable)
        table.clear()
        def cell(value: object, style: str = "") -> Text:
            return Text(visible(value), style=style, no_wrap=True, overflow="ellipsis")

        for c in p.samples:
            table.add_row(cell("change"), cell(c.barcode or ""), cell(c.name),
                          cell(f"{c.before or '(blank)'} -> {c.after or '(blank)'}"))
        for s in p.skipped[:SKIPPED_SHOWN]:
            table.add_row(cell("skip", "bold"), cell(s.barcode or ""), cell(s.name), cell(s.reason))
        self.query_one(TabbedContent).active = "tab-preview"
        self.query_one("#ur-hint", Static).update(Content(HELP))
        table.focus()
        more = f" ({len(p.samples)} of the {p.changes:,} changes shown)" if p.changes > len(p.samples) else ""
        self.set_status(f"Previewed{more}: Ctrl+R runs it; Ctrl+B hands it to the scheduler.")

    # -- run -----------------------------------------------------------------------------------
    def action_run(self, background: bool = False) -> None:
        """Run what was previewed; with `background` hand it to the scheduler service instead
        (the same checks and confirmation; queued with the preview's fingerprint)."""
        if self.running:
            self.notify("A run is in progress.", markup=False)
            return
        if self._refuse_if_unavailable():
            return
        previewed = self.previewed
        if previewed is None:
            self.show_problem("Preview first (F5): a run does what its preview showed.")
            self.notify("Preview first (F5).", severity="warning", markup=False)
            return
        if previewed.snapshot != self.snapshot():
            self.show_problem("The form changed since the preview: preview again (F5) before running.")
            self.notify("Preview again (F5): the form changed.", severity="warning", markup=False)
            return
        p = previewed.preview
        info = self.info
        assert info is not None
        go = self.queue_run if background else self.start_run
        if p.removes_data:
            count = str(p.changes)
            question = (f"{visible(info.title)} removes data of {p.changes:,} patrons "
                        f"({visible(p.selections)}): the count the preview showed, typed, goes ahead"
                        f"{' (handed to the scheduler service)' if background else ''}.")
            self.app.push_screen(ConfirmScreen(question, count), lambda ok: ok and go(previewed))
            return
        go(previewed)

    @work(thread=True, exclusive=True, exit_on_error=False, group="utility-run")
    def queue_run(self, previewed: Previewed) -> None:
        """Run in background: queue the previewed run for the scheduler service."""
        from patron_tui.services.utilities import base

        conn = self.app.store.connect()
        try:
            run_id = base.queue_utility(conn, self.app.store.operator, self.utility_name, previewed.selections,
                                        previewed.options, fingerprint=previewed.preview.fingerprint)
        except Exception as exc:
            self.app.call_from_thread(self.refused, exc, "Not queued")
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._queued, run_id)

    def _queued(self, run_id: int) -> None:
        from patron_tui.services.background import queued_message

        self.previewed = None      # a preview is good for one run
        self.show_problem("")
        text = queued_message(run_id)
        self.set_status(text)
        self.notify(text, markup=False, timeout=8)

    @work(thread=True, exclusive=True, exit_on_error=False, group="utility-run")
    def start_run(self, previewed: Previewed) -> None:
        from patron_tui.services.utilities import base

        engine = self.app.engine
        if engine is None:
            self.app.call_from_thread(self.refused, RuntimeError("the run engine is not ready yet"), "Not run")
            return
        try:
            handle = base.start_utility(engine, self.app.store, self.app.store.operator, self.utility_name,
                                        previewed.selections, previewed.options,
                                        fingerprint=previewed.preview.fingerprint)
        except Exception as exc:
            self.app.call_from_thread(self.refused, exc, "Not run")
            return
        self.app.call_from_thread(self._started, handle)

    def _started(self, handle) -> None:
        self.handle = handle
        self.previewed = None      # a preview is good for one run
        self.report = None
        self.show_problem("")
        self.started_at = time.monotonic()
        self.notify(f"Run {handle.run_id}: {visible(handle.title)} started.", markup=False)
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(0.1, self.poll)
        self.query_one(ProgressBar).add_class("-active")
        self.query_one(LogPane).view.focus()
        self.poll()

    def poll(self) -> None:
        handle = self.handle
        if handle is None:
            return
        bar = self.query_one(ProgressBar)
        elapsed = int(time.monotonic() - self.started_at)
        if not handle.finished:
            bar.update(total=handle.total or None, progress=handle.done)
            of = f" of {handle.total:,}" if handle.total else ""
            self.set_status(f"Run {handle.run_id} {handle.status.value}: {handle.done:,}{of} patrons · {elapsed} s")
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        done = max(handle.done or 0, 1)
        bar.update(total=done, progress=done)
        if handle.status.value == "succeeded":
            self.set_status(f"Run {handle.run_id} succeeded in {elapsed} s.")
            self.fetch_report(handle.run_id, True)
        else:
            reason = handle.error or handle.status.value
            self.show_problem(f"Run {handle.run_id} {handle.status.value}: {reason}")
            self.set_status(f"Run {handle.run_id} {handle.status.value}: nothing was changed.")
            self.notify(visible(f"Run {handle.run_id} {handle.status.value}: {reason}"), severity="error",
                        markup=False, timeout=10)
            self.fetch_report(handle.run_id, False)

    @work(thread=True, exclusive=True, exit_on_error=False, group="utility-report")
    def fetch_report(self, run_id: int, succeeded: bool) -> None:
        try:
            data = load_report(self.app.store, run_id)
        except Exception as exc:
            self.app.call_from_thread(self.notify, visible(f"Run {run_id}: no report ({exc})"),
                                      severity="warning", markup=False)
            return
        self.app.call_from_thread(self.show_report, data, succeeded)

    def show_report(self, data: ReportData, succeeded: bool) -> None:
        self.report = data
        counts = (f"Run {data.run_id}, {visible(data.title)}: changed {data.changed:,} · "
                  f"skipped {data.skipped:,} · errors {data.errors:,}")
        self.query_one("#ur-report-counts", Static).update(Content(counts))
        self.filter_name = "all"
        self.apply_filter()
        self.query_one(TabbedContent).active = "tab-report"
        self.query_one("#ur-hint", Static).update(Content(HELP))
        self.query_one(MessageView).focus()
        self.refresh_bindings()
        info = self.info
        if succeeded and info is not None and info.follow_up and data.changed:
            why = f"{visible(data.notes[0])}\n\n" if data.notes else ""
            question = f"{why}Open {visible(info.follow_up_title)} with the same selection now?"
            follow, values = info.follow_up, self.form("sel").values() if self.form("sel") else {}
            if self.app.screen is not self:   # the operator went elsewhere: say it, do not pop up there
                self.notify(f"Run {data.run_id} done; {visible(info.follow_up_title)} is the next step "
                            "(Utilities, same selection).", markup=False, timeout=10)
                return
            self.app.push_screen(FollowUpScreen(question),
                                 lambda yes: yes and self.app.push_screen(UtilityScreen(follow, selections=values)))

    # -- the report --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("preview", "run") and self.info is not None and self.info.unavailable:
            return None   # shown dimmed: the problem line says why
        if action in ("filter", "export"):
            return self.report is not None and self.query_one(TabbedContent).active == "tab-report"
        return True

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()

    def apply_filter(self) -> None:
        if self.report is None:
            return
        keep, label = REPORT_FILTERS[self.filter_name]
        rows = [r for r in self.report.rows if keep(r[2], r[3])]
        self.query_one(MessageView).set_rows(rows)
        self.query_one("#ur-report-filter", Static).update(Content(
            f"{len(rows):,} of {len(self.report.rows):,} lines: {label} (a c s e filter · x export CSV)"))

    def action_filter(self, name: str) -> None:
        self.filter_name = name
        self.apply_filter()
        self.query_one(MessageView).focus()

    def action_export(self) -> None:
        if self.report is None:
            return
        default = Path.cwd() / f"utility-run-{self.report.run_id}.csv"
        run_id = self.report.run_id
        self.app.push_screen(ExportReportScreen(default), lambda path: path and self.export(run_id, path))

    @work(thread=True, exclusive=True, exit_on_error=False, group="utility-export")
    def export(self, run_id: int, path: Path) -> None:
        from patron_tui.services.utilities import base

        conn = self.app.store.connect()
        try:
            with open(path, "w", encoding="utf-8", newline="") as f:
                n = base.report_csv(conn, run_id, f)
        except Exception as exc:
            text = f"Not exported: {path}: {getattr(exc, 'strerror', None) or exc}"
            self.app.call_from_thread(self.notify, visible(text), severity="error", markup=False)
            return
        finally:
            conn.close()
        self.app.call_from_thread(self.notify, f"{n:,} rows written to {visible(path)}.", markup=False,
                                  timeout=8)

    # -- moving around -------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = tab
        if tab == "tab-selections" and self.form("sel") and self.form("sel").specs:
            self.form("sel").focus_field(self.form("sel").specs[0].name)
        elif tab == "tab-options" and self.form("opt") and self.form("opt").specs:
            self.form("opt").focus_field(self.form("opt").specs[0].name)
        elif tab == "tab-preview":
            self.query_one("#ur-preview-table").focus()
        elif tab == "tab-report":
            self.query_one(MessageView).focus()

    def action_cancel_run(self) -> None:
        if not self.running:
            self.notify("No run is running.", markup=False)
            return
        handle = self.handle
        question = (f"Cancel run {handle.run_id}, {visible(handle.title)}? The run is one transaction: "
                    "nothing it was writing is kept.")
        self.app.push_screen(AskScreen("Cancel the run", question, "y cancels the run · n or Esc keeps it running"),
                             lambda yes: yes and not handle.finished and handle.cancel())

    def action_back(self) -> None:
        if self.running:
            self.action_cancel_run()
            return
        self.app.pop_screen()


__all__ = ["UtilityScreen", "load_utility", "typed_values"]

