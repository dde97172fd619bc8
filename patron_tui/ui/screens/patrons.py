"""Patrons: select patrons with a search statement, review them, keep the set, act on it.

The statement line compiles through `services.queries` (errors show under it
with a caret); the list is a `PatronTable` (a virtual table: it reads only the
rows around what is on screen); Enter opens `PatronDetailScreen`. Saved query
sets open live (re-evaluated) or frozen (the exact patron list kept when it
was frozen), and the set's statement stays on screen while it is acted on.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from patron_tui.config import load_history, remember_statement
from patron_tui.services import export as export_svc
from patron_tui.services import patrons as svc
from patron_tui.services import queries
from patron_tui.services import query_sets
from patron_tui.textsafe import visible
from patron_tui.ui.screens.base import SectionScreen
from patron_tui.ui.screens.query_dialogs import (
    ConfirmScreen,
    ExportRequest,
    ExportScreen,
    LanguageHelpScreen,
    SaveRequest,
    SaveSetScreen,
    SetAction,
    SetsScreen,
)
from patron_tui.ui.widgets.patron_table import PatronTable
from patron_tui.ui.widgets.statement_input import StatementInput

_SORT_ORDER = list(svc.SORTS)
_LINE_BREAK = re.compile(r"\r\n|\n")


@dataclass(frozen=True)
class Selection:
    """What the list shows: a statement, or a saved set (live or frozen)."""

    statement: str = ""
    where: str | None = None
    params: tuple = ()
    set_name: str | None = None
    frozen_at: str | None = None


class PatronsScreen(SectionScreen):
    SECTION = "patrons"
    #: set once the section has been shown: later resumes re-read the list
    _shown = False
    BINDINGS = [
        Binding("slash", "focus_statement", "Search", id="patrons.search"),
        Binding("f1", "language_help", "Statement help", id="patrons.language_help"),
        Binding("ctrl+s", "save_set", "Save set", id="patrons.save_set"),
        Binding("l", "sets", "Sets", id="patrons.sets"),
        Binding("x", "export", "Export", id="patrons.export"),
        Binding("u", "utility", "Utility on this set", id="patrons.utility"),
        Binding("b", "batch_update", "Batch update", id="patrons.batch_update"),
        Binding("s", "next_sort", "Sort", id="patrons.sort"),
        Binding("o", "reverse_order", "Reverse", show=False, id="patrons.reverse"),
        Binding("r", "reload", "Reload", show=False, id="patrons.reload"),
    ]

    DEFAULT_CSS = """
    PatronsScreen #statement { height: 1; margin: 0 0; }
    PatronsScreen #statement-error { height: auto; color: $error; padding: 0 1; display: none; }
    PatronsScreen #statement-error.-shown { display: block; }
    PatronsScreen #patrons-count { height: 1; padding: 0 1; color: $foreground; background: $surface; }
    PatronsScreen #patrons-table { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.selection = Selection()

    def compose_body(self) -> ComposeResult:
        yield StatementInput(load_history(), id="statement")
        yield Static(id="statement-error")
        yield Static(Content("Counting patrons…"), id="patrons-count")
        yield PatronTable(self.app.store.connect, id="patrons-table")

    @property
    def table(self) -> PatronTable:
        return self.query_one(PatronTable)

    @property
    def statement_input(self) -> StatementInput:
        return self.query_one(StatementInput)

    def on_mount(self) -> None:
        self.table.focus()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self.is_mounted:
            if self._shown:
                # runs may have changed patrons while another screen was on top
                self.table.reload()
                self.show_count()
            self._shown = True

    # -- the statement ------------------------------------------------------------------
    def action_focus_statement(self) -> None:
        self.statement_input.focus()

    def on_statement_input_left(self, event: StatementInput.Left) -> None:
        self.table.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input is self.statement_input:
            event.stop()
            self.run_statement(event.value)

    @work(thread=True, exclusive=True, exit_on_error=False, group="statement")
    def run_statement(self, statement: str) -> None:
        conn = self.app.store.connect()
        try:
            compiled = queries.compile_statement(statement, conn=conn)
        except queries.StatementError as exc:
            self.app.call_from_thread(self.show_error, exc.caret())
            return
        finally:
            conn.close()
        remember_statement(statement)
        self.app.call_from_thread(
            self.apply_selection, Selection(compiled.statement, compiled.where, tuple(compiled.params))
        )

    def show_error(self, message: str) -> None:
        error = self.query_one("#statement-error", Static)
        error.update(Content("\n".join(visible(line) for line in message.splitlines())))
        error.add_class("-shown")

    def apply_selection(self, selection: Selection) -> None:
        self.selection = selection
        self.query_one("#statement-error").remove_class("-shown")
        self.statement_input.remember(selection.statement)
        if self.statement_input.value != selection.statement:
            self.statement_input.value = selection.statement
        self.table.reload(where=selection.where or "1", params=selection.params, keep_cursor=False)
        self.table.focus()
        self.show_count()

    # -- the count line ---------------------------------------------------------------
    def show_count(self) -> None:
        table = self.table
        label = svc.SORTS[table.sort][0]
        order = "desc" if table.descending else "asc"
        sel = self.selection
        parts = []
        if sel.set_name:
            kind = f"frozen {sel.frozen_at[:16]}" if sel.frozen_at else "live"
            parts.append(f"set {visible(sel.set_name)} ({kind})")
        if table.total is None:
            parts.append("counting…")
        else:
            noun = "patron" if table.total == 1 else "patrons"
            parts.append(f"{table.total:,} {noun}")
        parts.append(f"by {label} {order}")
        if table.total:
            parts.append(f"row {table.cursor_row + 1:,}")
        self.query_one("#patrons-count", Static).update(Content("   ".join(parts)))

    def on_patron_table_counted(self, event: PatronTable.Counted) -> None:
        self.show_count()

    def on_patron_table_cursor_moved(self, event: PatronTable.CursorMoved) -> None:
        self.show_count()

    def on_patron_table_load_failed(self, event: PatronTable.LoadFailed) -> None:
        self.notify(f"Could not read patrons: {visible(event.error)}", severity="error", markup=False)

    def on_patron_table_patron_selected(self, event: PatronTable.PatronSelected) -> None:
        self.app.push_screen(PatronDetailScreen(event.patron_id))

    # -- query sets ------------------------------------------------------------------------
    def action_save_set(self) -> None:
        self.app.push_screen(
            SaveSetScreen(self.selection.statement, self.table.total, self.selection.set_name or ""),
            self._save_set,
        )

    def _save_set(self, request: SaveRequest | None) -> None:
        if request is None:
            return
        statement = self.selection.statement

        def save(conn: sqlite3.Connection, operator: str) -> str:
            query_sets.save_set(conn, operator, request.name, statement, replace=request.replace)
            if request.freeze:
                query_sets.freeze_set(conn, operator, request.name)
            return request.name

        self.change_set("Saved", save)

    def action_sets(self) -> None:
        self.load_sets()

    @work(thread=True, exclusive=True, exit_on_error=False, group="sets")
    def load_sets(self) -> None:
        conn = self.app.store.connect()
        try:
            sets = query_sets.list_sets(conn)
        finally:
            conn.close()
        self.app.call_from_thread(self.app.push_screen, SetsScreen(sets), self._set_action)

    def _set_action(self, action: SetAction | None) -> None:
        if action is None:
            return
        name = action.name
        if action.action == "delete":
            def delete(conn: sqlite3.Connection, operator: str) -> None:
                query_sets.delete_set(conn, operator, name)
                self.app.call_from_thread(self.notify, f"Deleted set {visible(name)}.", markup=False)

            self.app.push_screen(
                ConfirmScreen(f"Delete the query set {visible(name)}? Patrons are not touched.", name),
                lambda ok: ok and self.change_set("Deleted", delete),
            )
            return
        steps = {"freeze": query_sets.freeze_set, "unfreeze": query_sets.unfreeze_set}
        verb = {"open": "Opened", "freeze": "Froze", "unfreeze": "Opened live"}[action.action]

        def act(conn: sqlite3.Connection, operator: str) -> str:
            if action.action in steps:
                steps[action.action](conn, operator, name)
            return name

        self.change_set(verb, act, writes=action.action in steps)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sets")
    def change_set(self, verb: str, change: Callable[[sqlite3.Connection, str], str | None], *,
                   writes: bool = True) -> None:
        """Run `change` (a query-set service call) and open the set it names, if any. A change
        that `writes` (save, replace, freeze, unfreeze, delete) needs the permission "query_sets"."""
        from patron_tui.services.permissions import refusal

        conn = self.app.store.connect()
        try:
            refused = refusal(conn, self.app.store.operator, "query_sets") if writes else None
            if refused:
                self.app.call_from_thread(self.notify, visible(refused), severity="error", markup=False)
                return
            name = change(conn, self.app.store.operator)
            if name is None:
                return
            qs = query_sets.get_set(conn, name)
            where, params = query_sets.set_filter(conn, qs)
        except (query_sets.QuerySetError, queries.StatementError) as exc:
            self.app.call_from_thread(self.notify, visible(str(exc)), severity="error", markup=False)
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._opened, qs, where, params, verb)

    def _opened(self, qs: query_sets.QuerySet, where: str, params: tuple, verb: str) -> None:
        self.apply_selection(Selection(qs.statement, where, tuple(params), qs.name, qs.frozen_at))
        kind = f"frozen with {qs.member_count or 0:,} patrons" if qs.frozen_at else "live"
        self.notify(f"{verb} set {visible(qs.name)} ({kind}).", markup=False)

    # -- export -----------------------------------------------------------------------------
    def action_export(self) -> None:
        default = Path.home() / f"patrons-{date.today():%Y%m%d}.csv"
        columns = [(name, label, name in export_svc.DEFAULT_COLUMNS)
                   for name, label in export_svc.columns_available()]
        self.app.push_screen(
            ExportScreen(self.selection.statement, self.table.total, columns, default), self._export
        )

    def _export(self, request: ExportRequest | None) -> None:
        if request is not None:
            self.export(request, self.selection, self.table.sort)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def export(self, request: ExportRequest, selection: Selection, sort: str) -> None:
        conn = self.app.store.connect()
        try:
            summary = export_svc.export_csv(
                conn, request.path, where=selection.where, params=selection.params,
                columns=request.columns, encoding=request.encoding, sort=sort,
            )
        except (export_svc.ExportError, OSError) as exc:
            self.app.call_from_thread(self.notify, visible(str(exc)), severity="error", markup=False,
                                      timeout=12)
            return
        finally:
            conn.close()
        self.app.call_from_thread(self.notify, visible(summary.describe()), markup=False, timeout=10)

    def action_batch_update(self) -> None:
        from patron_tui.ui.screens.batch import open_batch

        open_batch(self.app, set_name=self.selection.set_name, statement=self.selection.statement)

    # -- utilities ---------------------------------------------------------------------------
    async def action_utility(self) -> None:
        """The Utilities section, with this set (or statement) preselected in Selections."""
        from patron_tui.ui.screens.utilities import Preselection, open_with_selection

        sel = self.selection
        if not sel.set_name and not sel.statement.strip():
            self.notify("Choose patrons first: run a statement or open a set (l); a utility never "
                        "acts on every patron by accident.", severity="warning", markup=False)
            return
        await open_with_selection(self.app, Preselection(query_set=sel.set_name,
                                                         statement=None if sel.set_name else sel.statement))

    # -- help and list actions --------------------------------------------------------------
    def action_language_help(self) -> None:
        self.app.push_screen(LanguageHelpScreen(queries.language_help()))

    def action_next_sort(self) -> None:
        table = self.table
        sort = _SORT_ORDER[(_SORT_ORDER.index(table.sort) + 1) % len(_SORT_ORDER)]
        table.reload(sort=sort, keep_cursor=False)
        self.show_count()

    def action_reverse_order(self) -> None:
        table = self.table
        table.reload(descending=not table.descending, keep_cursor=False)
        self.show_count()

    def action_reload(self) -> None:
        self.table.reload()
        self.show_count()


# -- one patron ---------------------------------------------------------------------------

def money(cents: int | None) -> str:
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def detail_text(detail: dict[str, Any]) -> Text:
    """Every field and dependant of a patron as plain text (data made visible, never markup)."""
    text = Text(end="")

    def heading(title: str) -> None:
        if text:
            text.append("\n")
        text.append(title, "bold underline")
        text.append("\n")

    def line(*parts: object, sep: str = "  ") -> None:
        text.append("  " + sep.join(visible(p) for p in parts if p not in (None, "")) + "\n")

    def lines(value: str) -> None:
        """Free text (a note, a review) line by line, each line made visible."""
        for part in _LINE_BREAK.split(value or ""):
            text.append("    " + visible(part) + "\n")

    heading("Patron")
    width = max(len(label) for _, label in svc.DETAIL_FIELDS)
    for field, label in svc.DETAIL_FIELDS:
        value = detail.get(field)
        if field in ("has_password", "protected"):
            value = "yes" if value else "no"
        text.append(f"  {label:<{width}}  ", "bold")
        text.append(visible(value) + "\n")

    notes = detail["notes"]
    heading(f"Notes ({len(notes)})")
    for n in notes:
        line(n["created_at"], n["note_type"], f"by {visible(n['created_by'])}" if n["created_by"] else "")
        lines(n["text"])
    if not notes:
        line("none")

    charges = detail["charges"]
    heading(f"Charges ({len(charges)}), balance {money(detail['balance_cents'])}")
    for c in charges:
        forgiven = f"forgiven {visible(c['forgiven_at'])}" if c["forgiven_at"] else ""
        line(c["transaction_date"], c["kind"], f"amount {money(c['amount_cents'])}",
             f"balance {money(c['balance_cents'])}", c["title"], c["item_barcode"], c["description"], forgiven)
    if not charges:
        line("none")

    checkouts = detail["checkouts"]
    heading(f"Checkouts ({len(checkouts)})")
    for c in checkouts:
        line(f"due {visible(c['due_at'])}", c["title"], c["item_barcode"], c["site"],
             f"out {visible(c['checked_out_at'])}")
    if not checkouts:
        line("none")

    holds = detail["holds"]
    heading(f"Holds ({len(holds)})")
    for h in holds:
        line(h["placed_at"], h["kind"], h["title"], h["site"],
             f"expires {visible(h['expires_at'])}" if h["expires_at"] else "")
    if not holds:
        line("none")

    history = detail["history"]
    heading(f"History ({len(history)})")
    for h in history:
        line(h["occurred_at"], h["kind"], h["title"],
             money(h["amount_cents"]) if h["amount_cents"] is not None else "",
             f"lexile {h['lexile']}" if h["lexile"] is not None else "", h["detail"])
    if not history:
        line("none")

    reviews = detail["reviews"]
    heading(f"Reviews ({len(reviews)})")
    for r in reviews:
        line(r["created_at"], r["title"], f"{r['rating']}/5" if r["rating"] is not None else "")
        if r["text"]:
            lines(r["text"])
    if not reviews:
        line("none")

    profiles = detail["profiles"]
    heading(f"Profiles ({len(profiles)})")
    for p in profiles:
        line(p["medium"], p["status_of_service"], f"max {p['max_items_out']} out",
             f"{p['items_per_shipment']} per shipment", p["service_frequency"],
             f"next {visible(p['next_service_date'])}" if p["next_service_date"] else "",
             f"queue {p['queue_count']} of {p['queue_length']}",
             "subjects " + ", ".join(visible(s) for s in p["subjects"]) if p["subjects"] else "no subjects")
    if not profiles:
        line("none")
    return text


class PatronDetailScreen(ModalScreen[None]):
    """One patron: every field and every dependant, scrollable; Escape closes."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="patron_detail.close"),
        Binding("q", "dismiss", "Close", show=False),
        Binding("p", "toggle_protected", "Protect", id="patron_detail.protect"),
        Binding("h", "toggle_history", "History", id="patron_detail.history"),
    ]

    DEFAULT_CSS = """
    PatronDetailScreen { align: center middle; }
    PatronDetailScreen > Vertical {
        width: 100%; max-width: 100; height: 100%;
        border: round $primary; background: $surface;
    }
    PatronDetailScreen #detail-scroll { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    PatronDetailScreen #detail-body { height: auto; color: $foreground; }
    PatronDetailScreen #detail-tabs, PatronDetailScreen #detail-tabs > ContentSwitcher { height: 1fr; }
    PatronDetailScreen #detail-tabs TabPane { height: 1fr; padding: 0; }
    PatronDetailScreen #history-scroll { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    PatronDetailScreen #history-body { height: auto; color: $foreground; }
    """
    #: the History tab shows this many of the patron's newest audit entries (the Audit trail pages)
    HISTORY_LIMIT = 200

    def __init__(self, patron_id: int) -> None:
        super().__init__()
        self.patron_id = patron_id
        self.detail: dict[str, Any] | None = None
        self.history_entries: list | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-frame"):
            with TabbedContent(id="detail-tabs"):
                with TabPane(Content("Patron"), id="detail-tab-patron"):
                    with VerticalScroll(id="detail-scroll"):
                        yield Static(Content("Loading…"), id="detail-body")
                with TabPane(Content("History"), id="detail-tab-history"):
                    with VerticalScroll(id="history-scroll"):
                        yield Static(Content("Loading the audit trail…"), id="history-body")
        yield Footer()

    def on_mount(self) -> None:
        frame = self.query_one("#detail-frame")
        frame.border_title = Content(f"Patron {self.patron_id}")
        frame.border_subtitle = Content("h history · Esc closes")
        self.query_one("#detail-scroll").focus()
        self.load()
        self.load_history()

    # -- the History tab: this patron's audit entries (services.audit.history) ------------------
    def action_toggle_history(self) -> None:
        tabs = self.query_one("#detail-tabs", TabbedContent)
        showing = tabs.active == "detail-tab-history"
        tabs.active = "detail-tab-patron" if showing else "detail-tab-history"
        self.query_one("#detail-scroll" if showing else "#history-scroll").focus()

    @work(thread=True, exclusive=True, exit_on_error=False, group="patron-history")
    def load_history(self) -> None:
        from patron_tui.services.audit import AuditError, history

        conn = self.app.store.connect()
        try:
            entries = history(conn, patron=f"#{self.patron_id}", limit=self.HISTORY_LIMIT + 1)
        except AuditError as exc:
            self.app.call_from_thread(self.show_history, None, str(exc))
            return
        finally:
            conn.close()
        self.app.call_from_thread(self.show_history, entries, "")

    def show_history(self, entries: list | None, problem: str) -> None:
        from patron_tui.ui.screens.audit import history_text

        body = self.query_one("#history-body", Static)
        if entries is None:
            body.update(Content(visible(problem)))
            return
        self.history_entries = entries[:self.HISTORY_LIMIT]
        body.update(history_text(self.history_entries, more=len(entries) > self.HISTORY_LIMIT))

    def history_lines(self) -> list[str]:
        """The History tab as drawn (every line of it)."""
        body = self.query_one("#history-body", Static)
        return [body.render_line(y).text for y in range(body.size.height)]

    @work(thread=True, exclusive=True, exit_on_error=False, group="patron-detail")
    def load(self) -> None:
        conn = self.app.store.connect()
        try:
            try:
                detail: dict[str, Any] | None = svc.patron_detail(conn, self.patron_id)
            except svc.PatronNotFound:
                detail = None
        finally:
            conn.close()
        self.app.call_from_thread(self.show, detail)

    def show(self, detail: dict[str, Any] | None) -> None:
        self.detail = detail
        body = self.query_one("#detail-body", Static)
        if detail is None:
            body.update(Content(f"Patron {self.patron_id} is no longer in the database."))
            return
        name = ", ".join(visible(detail[f]) for f in ("last_name", "first_name") if detail[f])
        self.query_one("#detail-frame").border_title = Content(f"Patron {self.patron_id}: {name}")
        body.update(detail_text(detail))

    def action_toggle_protected(self) -> None:
        """Protected (staff accounts...): no job's inactivation or deletion rule touches the
        patron. Setting or clearing it needs "manage patrons for the district"."""
        if self.detail is not None:
            self.toggle_protected(not bool(self.detail.get("protected")))

    @work(thread=True, exclusive=True, exit_on_error=False, group="patron-protect")
    def toggle_protected(self, protected: bool) -> None:
        from patron_tui.services.permissions import PermissionDenied
        from patron_tui.store.trouble import explain

        try:
            conn = self.app.store.connect()
            try:   # "manage patrons for the district" (the CLI's `protect` asks the same)
                svc.protect(conn, self.app.store.operator, [self.patron_id], protected)
            finally:
                conn.close()
        except (PermissionDenied, svc.PatronNotFound, ValueError) as exc:
            self.app.call_from_thread(self.notify, visible(str(exc)), severity="error", markup=False)
            return
        except Exception as exc:   # a bad day (busy, read-only, full...): its one sentence
            trouble = explain(exc, self.app.store.path)
            if trouble is None:
                raise
            self.app.call_from_thread(self.protect_failed, f"Patron {self.patron_id} was not changed: {trouble}")
            return
        text = ("Protected: no inactivation or deletion rule will touch this patron." if protected
                else "No longer protected: the jobs' inactivation and deletion rules apply again.")
        self.app.call_from_thread(self.notify, text, markup=False)
        self.load()
        self.load_history()

    def protect_failed(self, message: str) -> None:
        """Protect could not write: the sentence in a notification and the log pane."""
        self.app.log_buffer.add("error", message)
        self.notify(visible(message), severity="error", markup=False, timeout=15)

    def rendered_lines(self) -> list[str]:
        """The detail as drawn (every line of it, scrolled into view or not)."""
        body = self.query_one("#detail-body", Static)
        return [body.render_line(y).text for y in range(body.size.height)]
