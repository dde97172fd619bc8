"""Patrons: every patron of the district in one scrollable list, and one patron's details.

The list is a `PatronTable` (a virtual table: it reads only the rows around
what is on screen). Enter opens `PatronDetailScreen` with every field and the
patron's notes, charges, checkouts, holds, history, reviews and profiles.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from patron_tui.services import patrons as svc
from patron_tui.textsafe import visible
from patron_tui.ui.screens.base import SectionScreen
from patron_tui.ui.widgets.patron_table import PatronTable

_SORT_ORDER = list(svc.SORTS)
_LINE_BREAK = re.compile(r"\r\n|\n")


class PatronsScreen(SectionScreen):
    SECTION = "patrons"
    #: set once the section has been shown: later resumes re-read the list
    _shown = False
    BINDINGS = [
        Binding("s", "next_sort", "Sort", id="patrons.sort"),
        Binding("o", "reverse_order", "Reverse", id="patrons.reverse"),
        Binding("r", "reload", "Reload", show=False, id="patrons.reload"),
    ]

    DEFAULT_CSS = """
    PatronsScreen #patrons-count { height: 1; padding: 0 1; color: $foreground; background: $surface; }
    PatronsScreen #patrons-table { height: 1fr; }
    """

    def compose_body(self) -> ComposeResult:
        yield Static(Content("Counting patrons…"), id="patrons-count")
        yield PatronTable(self.app.store.connect, id="patrons-table")

    @property
    def table(self) -> PatronTable:
        return self.query_one(PatronTable)

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

    # -- the count line ---------------------------------------------------------------
    def show_count(self) -> None:
        table = self.table
        label = svc.SORTS[table.sort][0]
        order = "descending" if table.descending else "ascending"
        if table.total is None:
            line = f"Counting patrons…   sorted by {label}, {order}"
        else:
            noun = "patron" if table.total == 1 else "patrons"
            line = f"{table.total:,} {noun}   sorted by {label}, {order}"
            if table.total:
                line += f"   row {table.cursor_row + 1:,}"
        self.query_one("#patrons-count", Static).update(Content(line))

    def on_patron_table_counted(self, event: PatronTable.Counted) -> None:
        self.show_count()

    def on_patron_table_cursor_moved(self, event: PatronTable.CursorMoved) -> None:
        self.show_count()

    def on_patron_table_load_failed(self, event: PatronTable.LoadFailed) -> None:
        self.notify(f"Could not read patrons: {visible(event.error)}", severity="error", markup=False)

    def on_patron_table_patron_selected(self, event: PatronTable.PatronSelected) -> None:
        self.app.push_screen(PatronDetailScreen(event.patron_id))

    # -- actions ------------------------------------------------------------------------
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
    ]

    DEFAULT_CSS = """
    PatronDetailScreen { align: center middle; }
    PatronDetailScreen > Vertical {
        width: 100%; max-width: 100; height: 100%;
        border: round $primary; background: $surface;
    }
    PatronDetailScreen #detail-scroll { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    PatronDetailScreen #detail-body { height: auto; color: $foreground; }
    """

    def __init__(self, patron_id: int) -> None:
        super().__init__()
        self.patron_id = patron_id
        self.detail: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-frame"):
            with VerticalScroll(id="detail-scroll"):
                yield Static(Content("Loading…"), id="detail-body")
        yield Footer()

    def on_mount(self) -> None:
        frame = self.query_one("#detail-frame")
        frame.border_title = Content(f"Patron {self.patron_id}")
        frame.border_subtitle = Content("Esc closes")
        self.query_one("#detail-scroll").focus()
        self.load()

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

    def rendered_lines(self) -> list[str]:
        """The detail as drawn (every line of it, scrolled into view or not)."""
        body = self.query_one("#detail-body", Static)
        return [body.render_line(y).text for y in range(body.size.height)]
