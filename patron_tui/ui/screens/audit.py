"""The audit trail (Home → a, or the command palette): who changed this patron, when, in which
run, from what to what.

Filters on top (patron barcode / district ID / #id, operator, run id, since date, table); Enter
in any of them applies them. The entries below are the change journal read through
`services.audit.history`, newest first, a page at a time (n/p); Enter on an entry opens its
field-level changes (field, before, after). The headless twin is `patron-tui audit`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from patron_tui.services.audit import AuditEntry, AuditError, history
from patron_tui.textsafe import visible
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS

PAGE = 100


class FilterError(ValueError):
    """A filter that cannot be used; str(exc) names the field."""


@dataclass(frozen=True)
class AuditFilters:
    patron: str | None = None
    operator: str | None = None
    run_id: int | None = None
    since: dt.date | None = None
    table: str | None = None

    def describe(self) -> str:
        parts = []
        if self.patron:
            parts.append(f"patron {visible(self.patron)}")
        if self.operator:
            parts.append(f"by {visible(self.operator)}")
        if self.run_id is not None:
            parts.append(f"run {self.run_id}")
        if self.since:
            parts.append(f"since {self.since.isoformat()}")
        if self.table:
            parts.append(f"table {visible(self.table)}")
        return ", ".join(parts) or "every change"


def parse_since(text: str) -> dt.date | None:
    """MM/DD/YYYY or YYYY-MM-DD (the CLI's --since); blank is no date."""
    text = text.strip()
    if not text:
        return None
    for fmt in ("%m/%d/%Y", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise FilterError(f"Since: {visible(text)!r} is not a date (MM/DD/YYYY or YYYY-MM-DD)")


def parse_filters(patron: str, operator: str, run: str, since: str, table: str) -> AuditFilters:
    run = run.strip()
    if run and not run.isdigit():
        raise FilterError(f"Run: {visible(run)!r} is not a run number")
    return AuditFilters(patron=patron.strip() or None, operator=operator.strip() or None,
                        run_id=int(run) if run else None, since=parse_since(since),
                        table=table.strip() or None)


def when_text(ts: str | None, *, seconds: bool = False) -> str:
    """A journal timestamp (UTC) in local time, with the year: an audit answer needs it."""
    if not ts:
        return "-"
    try:
        stamp = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return visible(ts)[:19]
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def value_text(value: object) -> str:
    """A before/after value as text: (none) for nothing, "" for an empty string."""
    if value is None:
        return "(none)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"({len(bytes(value))} bytes)"
    if value == "":
        return '""'
    return visible(value)


def run_text(entry: AuditEntry) -> str:
    if entry.run_id is None:
        return "no run"
    return f"{entry.run_id} {visible(entry.run_title)}".strip()


def entry_line(entry: AuditEntry) -> str:
    """The entry in words (the line under the list, the dialog's head)."""
    run = (f"run {entry.run_id} ({visible(entry.run_title)})" if entry.run_id is not None
           else "outside any run")
    n = len(entry.changes)
    return (f"{when_text(entry.ts, seconds=True)} · {visible(entry.operator)} · {run} · {entry.op} "
            f"{visible(entry.table)} {visible(entry.key)} · {n} field{'s' if n != 1 else ''}")


def history_text(entries: list[AuditEntry], *, more: bool = False) -> Text:
    """Entries and their field changes as plain text (the patron detail's History tab)."""
    text = Text(end="")
    if not entries:
        text.append("No change to this patron is in the change journal.")
        return text
    for entry in entries:
        text.append(entry_line(entry) + "\n", "bold")
        for change in entry.changes:
            text.append(f"    {visible(change.field)}: {value_text(change.before)} → "
                        f"{value_text(change.after)}\n")
    if more:
        text.append("(the newest entries only: the Audit trail, Home → a, pages through every one)")
    return text


def cell(value: object, *, right: bool = False) -> Text:
    return Text(visible(value), no_wrap=True, overflow="ellipsis", justify="right" if right else "left")


class AuditEntryScreen(ModalScreen[None]):
    """One journal entry: every field it changed, before and after."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("q", "dismiss(None)", "Close", show=False)]
    DEFAULT_CSS = DIALOG_CSS.format(name="AuditEntryScreen") + """
    AuditEntryScreen > Vertical { width: 78; }
    AuditEntryScreen DataTable { height: auto; max-height: 16; }
    """

    def __init__(self, entry: AuditEntry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        with Vertical(id="audit-entry-frame"):
            yield Static(Content(entry_line(self.entry)), classes="dialog-help", id="audit-entry-head")
            yield DataTable(cursor_type="row", zebra_stripes=True, id="audit-changes")
            key = self.entry.key
            many = not self.entry.changes and (".." in key or key.startswith(("{", "rowid")))
            yield Static(Content("One entry for many rows: filter by a patron to see one row's fields. Esc closes."
                                 if many else "Esc closes."), classes="dialog-help")

    def on_mount(self) -> None:
        e = self.entry
        self.query_one("#audit-entry-frame").border_title = Content(f"Change {e.journal_id}: {e.op} {e.table}")
        table = self.query_one(DataTable)
        table.add_column("Field", width=18)
        table.add_column("Before", width=24)
        table.add_column("After", width=24)
        for c in e.changes:
            table.add_row(cell(c.field), cell(value_text(c.before)), cell(value_text(c.after)))
        if not e.changes:
            table.add_row(cell("(none listed)"), cell(""), cell(""))
        table.focus()

    def rows(self) -> list[tuple[str, str, str]]:
        table = self.query_one(DataTable)
        return [tuple(str(v) for v in table.get_row_at(i)) for i in range(table.row_count)]


class AuditScreen(Screen[None]):
    """The change journal, filtered and paged (see the module doc)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("f5", "reload", "Refresh"),
        Binding("n", "page(1)", "Next page"),
        Binding("p", "page(-1)", "Prev page"),
        Binding("slash", "focus_filters", "Filters"),
        Binding("ctrl+u", "clear_filters", "Clear filters", show=False),
    ]
    DEFAULT_CSS = """
    AuditScreen #audit-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    AuditScreen .audit-filter-row { height: 1; padding: 0 1; }
    AuditScreen .audit-filter-row Label { width: auto; margin-right: 1; }
    AuditScreen .audit-filter-row Input { width: 1fr; margin-right: 1; }
    AuditScreen #audit-run { width: 8; }
    AuditScreen #audit-since { width: 12; }
    AuditScreen #audit-problem { height: auto; padding: 0 1; color: $error; display: none; }
    AuditScreen #audit-problem.-shown { display: block; }
    AuditScreen #audit-entries { height: 1fr; }
    AuditScreen #audit-detail { height: 3; padding: 0 1; border-top: solid $primary; }
    """

    def __init__(self, patron: str | None = None) -> None:
        super().__init__()
        self.filters = AuditFilters(patron=patron)
        self.page = 0
        self.entries: list[AuditEntry] = []
        self.has_more = False
        self.problem = ""
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static(Content("Audit trail — who changed what (Enter: the fields · n/p page · / filters · Esc back)"),
                     id="audit-title")
        with Horizontal(classes="audit-filter-row"):
            yield Label(Content("Patron"))
            yield Input(self.filters.patron or "", placeholder="barcode, district ID or #id", id="audit-patron",
                        compact=True)
            yield Label(Content("Operator"))
            yield Input(placeholder="login name", id="audit-operator", compact=True)
        with Horizontal(classes="audit-filter-row"):
            yield Label(Content("Run"))
            yield Input(placeholder="id", id="audit-run", compact=True)
            yield Label(Content("Since"))
            yield Input(placeholder="MM/DD/YYYY", id="audit-since", compact=True)
            yield Label(Content("Table"))
            yield Input(placeholder="e.g. patrons, patron_notes", id="audit-table", compact=True)
        yield Static(id="audit-problem")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="audit-entries")
        yield Static(Content(""), id="audit-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#audit-entries", DataTable)
        table.add_column("When", width=16)
        table.add_column("By", width=8)
        table.add_column("Run", width=14)
        table.add_column("Table", width=12)
        table.add_column("Key", width=7)
        table.add_column("Op", width=6)
        table.focus()
        self.action_reload()

    # -- filters ------------------------------------------------------------------------------
    def _value(self, name: str) -> str:
        return self.query_one(f"#audit-{name}", Input).value

    def read_filters(self) -> AuditFilters:
        return parse_filters(*(self._value(n) for n in ("patron", "operator", "run", "since", "table")))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            filters = self.read_filters()
        except FilterError as exc:
            self.show_problem(str(exc))
            return
        self.filters = filters
        self.page = 0
        self.action_reload()
        self.query_one("#audit-entries", DataTable).focus()

    def action_focus_filters(self) -> None:
        self.query_one("#audit-patron", Input).focus()

    def action_clear_filters(self) -> None:
        for name in ("patron", "operator", "run", "since", "table"):
            self.query_one(f"#audit-{name}", Input).value = ""
        self.filters = AuditFilters()
        self.page = 0
        self.action_reload()

    def action_back(self) -> None:
        if isinstance(self.focused, Input):   # Esc in a filter goes back to the list first
            self.query_one("#audit-entries", DataTable).focus()
            return
        self.app.pop_screen()

    # -- loading ------------------------------------------------------------------------------
    def action_reload(self) -> None:
        self.load(self.filters, self.page)

    def action_page(self, step: int) -> None:
        if step > 0 and not self.has_more:
            self.notify("This is the last page.", markup=False)
            return
        if step < 0 and self.page == 0:
            self.notify("This is the first page.", markup=False)
            return
        self.page += step
        self.action_reload()

    @work(thread=True, exclusive=True, exit_on_error=False, group="audit")
    def load(self, filters: AuditFilters, page: int) -> None:
        conn = self.app.store.connect()
        try:
            entries = history(conn, patron=filters.patron, operator=filters.operator, run_id=filters.run_id,
                              since=filters.since, table=filters.table, limit=PAGE + 1, offset=page * PAGE)
        except (AuditError, ValueError) as exc:
            self.app.call_from_thread(self.show_failed, filters, str(exc))
            return
        finally:
            conn.close()
        self.app.call_from_thread(self.show, entries[:PAGE], len(entries) > PAGE, page)

    def show_problem(self, message: str) -> None:
        self.problem = message
        problem = self.query_one("#audit-problem", Static)
        problem.update(Content(visible(message)))
        problem.set_class(bool(message), "-shown")
        if message:
            self.notify(visible(message), severity="error", markup=False, timeout=8)

    def show_failed(self, filters: AuditFilters, message: str) -> None:
        """The filters cannot be answered: say why, and list nothing (not the last answer)."""
        self.entries, self.has_more, self.page = [], False, 0
        self.query_one("#audit-entries", DataTable).clear()
        self.query_one("#audit-title", Static).update(Content(f"Audit trail — {filters.describe()} · not found"))
        self.show_detail()
        self.loaded = True
        self.show_problem(message)

    def show(self, entries: list[AuditEntry], has_more: bool, page: int) -> None:
        self.entries, self.has_more, self.page = entries, has_more, page
        self.show_problem("")
        table = self.query_one("#audit-entries", DataTable)
        table.clear()
        for e in entries:
            table.add_row(cell(when_text(e.ts)), cell(e.operator), cell(run_text(e)), cell(e.table),
                          cell(e.key, right=True), cell(e.op), key=f"{e.journal_id}:{e.key}")
        first = page * PAGE
        if entries:
            span = f"entries {first + 1:,}–{first + len(entries):,}{'+' if has_more else ''}"
        else:
            span = "no changes match"
        self.query_one("#audit-title", Static).update(Content(
            f"Audit trail — {self.filters.describe()} · {span} · Enter: the fields"))
        self.loaded = True
        self.show_detail()

    def current(self) -> AuditEntry | None:
        table = self.query_one("#audit-entries", DataTable)
        if not self.entries or table.cursor_row is None or not 0 <= table.cursor_row < len(self.entries):
            return None
        return self.entries[table.cursor_row]

    def show_detail(self) -> None:
        entry = self.current()
        self.query_one("#audit-detail", Static).update(Content(entry_line(entry) if entry else ""))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        entry = self.current()
        if entry is not None:
            self.app.push_screen(AuditEntryScreen(entry))
