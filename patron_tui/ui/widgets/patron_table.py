"""The patron list: a virtual table over however many patrons the district has.

`PatronTable` is a line-API scroll view. It holds only a few blocks of rows
around the visible region; a thread worker with its own connection fetches
missing blocks through `services.patrons` — keyset paging from a neighbouring
block while scrolling, an offset jump (End, a scrollbar drag) otherwise — so a
million patrons open as fast as a hundred. One worker at a time: it asks the
widget (on the UI thread) what is needed next until nothing is, so a fast drag
coalesces into the fetch of wherever the view ends up.

Every cell is data shown as text: control characters made visible, truncated
to its column, never markup.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from textual import events, work
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import get_current_worker

from patron_tui.services import patrons as svc
from patron_tui.textsafe import visible

#: rows per fetched block
BLOCK = 100
#: blocks kept in memory (the window around the visible rows)
KEEP_BLOCKS = 8
#: columns that give up their room first when the table is too narrow for every minimum
_DROP_ORDER = ("nickname", "district_id", "email", "patron_type", "homeroom", "grade", "site", "barcode")
#: who gets spare room first, one cell at a time, up to its preferred width
_GROW_ORDER = ("last_name", "first_name", "barcode", "email", "district_id", "status", "homeroom",
               "site", "patron_type", "nickname", "id", "grade")
#: who takes what is left when every column has its preferred width
_WIDE = ("last_name", "email", "first_name")


def layout_columns(
    width: int, columns: Sequence[svc.Column] = svc.COLUMNS, *, id_width: int | None = None
) -> list[tuple[svc.Column, int]]:
    """Widths for the columns in `width` cells (a leading space, one space between columns).

    Every column keeps at least its minimum (the least useful give way first
    when even that does not fit); spare room goes to the most useful columns
    up to their preferred widths, then to names and email. `id_width` sizes
    the ID column to the largest id.
    """
    shown = [
        replace(c, min_width=id_width, width=id_width) if c.name == "id" and id_width else c
        for c in columns
    ]

    def needed(cols: list[svc.Column]) -> int:
        return 1 + sum(c.min_width for c in cols) + max(0, len(cols) - 1)

    for name in _DROP_ORDER:
        if needed(shown) <= width:
            break
        shown = [c for c in shown if c.name != name]
    widths = {c.name: c.min_width for c in shown}
    spare = width - needed(shown)
    growers = [c for name in _GROW_ORDER for c in shown if c.name == name]
    while spare > 0:
        grew = False
        for c in growers:
            if spare > 0 and widths[c.name] < c.width:
                widths[c.name] += 1
                spare -= 1
                grew = True
        if not grew:
            break
    wide = [name for name in _WIDE if name in widths]
    if spare > 0 and wide:
        share, rest = divmod(spare, len(wide))
        for i, name in enumerate(wide):
            widths[name] += share + (1 if i < rest else 0)
    return [(c, widths[c.name]) for c in shown]


def fit(text: str, width: int, *, right: bool = False, keep_end: bool = False) -> str:
    """`text` in exactly `width` cells: cut with an ellipsis (at the start with `keep_end`), or padded."""
    size = cell_len(text)
    if size > width:
        if width <= 0:
            return ""
        if keep_end:
            tail, room = [], width - 1
            for ch in reversed(text):
                room -= cell_len(ch)
                if room < 0:
                    break
                tail.append(ch)
            return set_cell_size("…" + "".join(reversed(tail)), width)
        return set_cell_size(text, width - 1) + "…"
    pad = " " * (width - size)
    return pad + text if right else text + pad


@dataclass(frozen=True)
class _Task:
    generation: int
    kind: str  # "count" | "block"
    block: int = 0
    anchor: str = "offset"  # "after" | "before" | "offset"
    key: tuple[Any, ...] | None = None
    total: int | None = None
    #: the read's sort and filter, as the widget held them when it planned the read
    query: tuple[tuple[str, Any], ...] = ()


class PatronTable(ScrollView, can_focus=True, inherit_bindings=False):
    """Patrons, one per line, under a fixed header line; a row cursor; Enter opens one."""

    COMPONENT_CLASSES = {
        "patron-table--header",
        "patron-table--cursor",
        "patron-table--pending",
    }

    DEFAULT_CSS = """
    PatronTable {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
    }
    PatronTable > .patron-table--header { background: $panel; color: $foreground; text-style: bold; }
    PatronTable > .patron-table--cursor {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
        text-style: $block-cursor-blurred-text-style;
    }
    PatronTable:focus > .patron-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: $block-cursor-text-style;
    }
    PatronTable > .patron-table--pending { color: $foreground-muted; }
    """

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First patron", show=False),
        Binding("end", "last", "Last patron", show=False),
        Binding("enter", "select", "Details", id="patrons.details"),
    ]

    class PatronSelected(Message):
        """Enter (or a double click) on a loaded row."""

        def __init__(self, table: "PatronTable", patron_id: int, row: int) -> None:
            super().__init__()
            self.table = table
            self.patron_id = patron_id
            self.row = row

    class Counted(Message):
        """The list was (re)counted: `total` patrons."""

        def __init__(self, table: "PatronTable", total: int) -> None:
            super().__init__()
            self.table = table
            self.total = total

    class CursorMoved(Message):
        """The cursor is on row `row` (0-based) now."""

        def __init__(self, table: "PatronTable", row: int) -> None:
            super().__init__()
            self.table = table
            self.row = row

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, PatronTable.CursorMoved) and message.table is self.table

    class LoadFailed(Message):
        """A fetch failed; `error` says why (no data in it)."""

        def __init__(self, table: "PatronTable", error: str) -> None:
            super().__init__()
            self.table = table
            self.error = error

    def __init__(self, connect: Callable[[], sqlite3.Connection], **kw) -> None:
        super().__init__(**kw)
        self._connect = connect
        self.sort = svc.DEFAULT_SORT
        self.descending = False
        self.where: str | None = None
        self.params: tuple[Any, ...] = ()
        #: how many patrons the list holds (None until counted)
        self.total: int | None = None
        self.cursor_row = 0
        self._blocks: dict[int, list[dict[str, Any]]] = {}
        #: blocks still shown but due to be read again (after a reload that kept the order)
        self._stale: set[int] = set()
        self._generation = 0
        self._need_count = True
        self._fetching = False
        self._end_pending = False
        self._columns: list[tuple[svc.Column, int]] = []
        self._columns_width = -1
        self._id_width: int | None = None

    # -- loading ------------------------------------------------------------------------
    def on_mount(self) -> None:
        super().on_mount()
        self._update_virtual_size()
        self._request()

    def reload(
        self,
        *,
        sort: str | None = None,
        descending: bool | None = None,
        where: str | None = None,
        params: Sequence[Any] = (),
        keep_cursor: bool = True,
    ) -> None:
        """Read the rows again (with a new sort or filter, if given).

        A plain reload keeps showing the rows held until their fresh copies
        arrive; a new sort or filter forgets them at once.
        """
        reordered = False
        if sort is not None and sort != self.sort:
            svc.sort_columns(sort)  # refuse a bad sort here, not in the worker
            self.sort, reordered = sort, True
        if descending is not None and descending != self.descending:
            self.descending, reordered = descending, True
        if where is not None:
            self.where, self.params, reordered = where, tuple(params), True
        self._generation += 1
        if reordered:
            self._blocks.clear()
            self._stale.clear()
        else:
            self._stale = set(self._blocks)
        self._need_count = True
        if not keep_cursor:
            self.cursor_row = 0
            self.scroll_to(y=0, animate=False)
            self.post_message(self.CursorMoved(self, 0))
        self.refresh()
        self._request()

    def _request(self) -> None:
        """Start the fetch worker unless one is running (it will see what is needed)."""
        if self._fetching or not self.is_attached:
            return
        if self._next_task(peek=True) is None:
            return
        self._fetching = True
        self._fetch()

    @work(thread=True, exit_on_error=False, group="patron-table")
    def _fetch(self) -> None:
        worker = get_current_worker()
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            while not worker.is_cancelled:
                task = self.app.call_from_thread(self._next_task)
                if task is None:
                    return
                result = self._run(conn, task)
                self.app.call_from_thread(self._deliver, task, result)
        except Exception as exc:
            try:
                self.app.call_from_thread(self._failed, f"{type(exc).__name__}: {exc}")
            except RuntimeError:  # the app is gone
                pass
            raise
        finally:
            if conn is not None:
                conn.close()

    def _run(self, conn: sqlite3.Connection, task: _Task) -> Any:
        """In the worker thread: one read through the service."""
        query = dict(task.query)
        if task.kind == "count":
            return svc.count_patrons(conn, where=query["where"], params=query["params"]), svc.max_patron_id(conn)
        if task.anchor == "after":
            return svc.page(conn, after=task.key, limit=BLOCK, **query)
        if task.anchor == "before":
            query["descending"] = not query["descending"]
            rows = svc.page(conn, after=task.key, limit=BLOCK, **query)
            rows.reverse()
            return rows
        return svc.page_at(conn, task.block * BLOCK, BLOCK, total=task.total, **query)

    def _next_task(self, peek: bool = False) -> _Task | None:
        """On the UI thread: the next read the view needs, or None (the worker then stops)."""
        task = self._plan() if self.is_attached else None
        if task is not None:
            query = {"sort": self.sort, "descending": self.descending, "where": self.where, "params": self.params}
            task = replace(task, query=tuple(query.items()))
        if task is None and not peek:
            self._fetching = False
        return task

    def _plan(self) -> _Task | None:
        gen = self._generation
        wanted = self._wanted_blocks()
        visible_blocks = [b for b in wanted[0] if not self._fresh(b)]
        if self._need_count and (self.total is None and self._fresh(0) or visible_blocks != [0]):
            return _Task(gen, "count")
        for b in [*visible_blocks, *wanted[1]]:
            if not self._fresh(b):
                return self._block_task(gen, b)
        return None

    def _fresh(self, b: int) -> bool:
        return b in self._blocks and b not in self._stale

    def _block_task(self, gen: int, b: int) -> _Task:
        before = self._blocks.get(b - 1) if self._fresh(b - 1) else None
        after = self._blocks.get(b + 1) if self._fresh(b + 1) else None
        if before is not None and len(before) == BLOCK:
            return _Task(gen, "block", b, "after", svc.sort_key(before[-1], self.sort))
        if after:
            return _Task(gen, "block", b, "before", svc.sort_key(after[0], self.sort))
        return _Task(gen, "block", b, "offset", total=self.total)

    def _wanted_blocks(self) -> tuple[list[int], list[int]]:
        """(blocks with visible rows or the cursor, nearest first; neighbouring blocks to prefetch)."""
        first = int(self.scroll_y)
        last = first + max(1, self._page_rows()) - 1
        if self.total is not None:
            if self.total == 0:
                return [], []
            last_block = (self.total - 1) // BLOCK
        else:
            last_block = max(0, first // BLOCK)
        lo, hi = min(first // BLOCK, last_block), min(last // BLOCK, last_block)
        shown = sorted({*range(lo, hi + 1), min(self.cursor_row // BLOCK, last_block)},
                       key=lambda b: abs(b - self.cursor_row // BLOCK))
        around = [b for b in (hi + 1, lo - 1) if 0 <= b <= last_block and b not in shown]
        if self.total is None:
            around = []
        return shown, around

    def _deliver(self, task: _Task, result: Any) -> None:
        if task.generation != self._generation:
            return
        if task.kind == "count":
            self._need_count = False
            total, max_id = result
            id_width = max(2, len(str(max_id)))
            if id_width != self._id_width:
                self._id_width = id_width
                self._columns_width = -1  # lay the columns out again
            self._set_total(total)
        else:
            self._blocks[task.block] = result
            self._stale.discard(task.block)
            if task.block == 0 and len(result) < BLOCK and self.total is None:
                self._set_total(len(result))
            self._evict()
            self._update_virtual_size()
            self.refresh()

    def _failed(self, error: str) -> None:
        self._fetching = False
        self.post_message(self.LoadFailed(self, error))

    def _set_total(self, total: int) -> None:
        self.total = total
        self._blocks = {b: rows for b, rows in self._blocks.items() if b * BLOCK < max(total, 1)}
        self._stale &= set(self._blocks)
        self._update_virtual_size()
        self.post_message(self.Counted(self, total))
        if self._end_pending:
            self._end_pending = False
            self.move_cursor(total - 1)
        elif self.cursor_row >= total:
            self.move_cursor(total - 1)
        self.refresh()

    def _evict(self) -> None:
        """Drop the blocks farthest from the view, never one the view needs."""
        if len(self._blocks) <= KEEP_BLOCKS:
            return
        shown, around = self._wanted_blocks()
        keep = {*shown, *around}
        centre = int(self.scroll_y) // BLOCK
        spare = sorted((b for b in self._blocks if b not in keep), key=lambda b: abs(b - centre), reverse=True)
        for b in spare[: len(self._blocks) - KEEP_BLOCKS]:
            del self._blocks[b]
            self._stale.discard(b)

    # -- geometry -------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        """Rows the view can scroll through now (the count, or what is loaded before it)."""
        if self.total is not None:
            return self.total
        return len(self._blocks.get(0, ()))

    def _page_rows(self) -> int:
        """Patron rows visible at once (the header takes a line)."""
        return max(1, self.scrollable_content_region.height - 1)

    def _update_virtual_size(self) -> None:
        width = self.scrollable_content_region.width
        self.virtual_size = Size(width, self.row_count + 1)

    def on_resize(self, event: events.Resize) -> None:
        self._update_virtual_size()
        self._scroll_cursor_into_view()
        self._request()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if int(old_value) != int(new_value):
            self._request()

    # -- the cursor ---------------------------------------------------------------------------
    def move_cursor(self, row: int) -> None:
        """Put the cursor on `row` (clamped) and scroll it into view."""
        row = max(0, min(row, self.row_count - 1))
        if row != self.cursor_row:
            self.cursor_row = row
            self.post_message(self.CursorMoved(self, row))
        self._scroll_cursor_into_view()
        self.refresh()
        self._request()

    def _scroll_cursor_into_view(self) -> None:
        top, page = int(self.scroll_y), self._page_rows()
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row > top + page - 1:
            self.scroll_to(y=self.cursor_row - page + 1, animate=False)

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor_row + 1)

    def action_page_down(self) -> None:
        page = self._page_rows()
        self.scroll_to(y=min(self.max_scroll_y, int(self.scroll_y) + page), animate=False)
        self.move_cursor(self.cursor_row + page)

    def action_page_up(self) -> None:
        page = self._page_rows()
        self.scroll_to(y=max(0, int(self.scroll_y) - page), animate=False)
        self.move_cursor(self.cursor_row - page)

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        if self.total is None:
            self._end_pending = True
            self._request()
            return
        self.move_cursor(self.total - 1)

    def action_select(self) -> None:
        row = self.row_at(self.cursor_row)
        if row is not None:
            self.post_message(self.PatronSelected(self, row["id"], self.cursor_row))

    def row_at(self, index: int) -> dict[str, Any] | None:
        """The loaded row at list position `index`, or None while it is not loaded."""
        block = self._blocks.get(index // BLOCK)
        if block is None:
            return None
        offset = index % BLOCK
        return block[offset] if offset < len(block) else None

    @property
    def cursor_patron(self) -> dict[str, Any] | None:
        return self.row_at(self.cursor_row)

    def on_click(self, event: events.Click) -> None:
        y = event.y
        if y < 1:
            return
        index = int(self.scroll_y) + y - 1
        if index < self.row_count:
            self.move_cursor(index)
            if event.chain >= 2:
                self.action_select()

    # -- rendering --------------------------------------------------------------------------
    def _layout(self, width: int) -> list[tuple[svc.Column, int]]:
        if width != self._columns_width:
            self._columns = layout_columns(width, id_width=self._id_width)
            self._columns_width = width
        return self._columns

    def header_text(self, width: int) -> str:
        arrow = " ▼" if self.descending else " ▲"
        sorted_by = svc.sort_columns(self.sort)[0]
        cells = [fit(c.label + (arrow if c.name == sorted_by else ""), w) for c, w in self._layout(width)]
        return " " + " ".join(cells)

    def row_text(self, row: dict[str, Any] | None, width: int) -> str:
        if row is None:
            cells = [fit("…" if i == 0 else "", w, right=c.right) for i, (c, w) in enumerate(self._layout(width))]
        else:
            cells = [fit(visible(row.get(c.name)), w, right=c.right, keep_end=c.keep_end)
                     for c, w in self._layout(width)]
        return " " + " ".join(cells)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            style = self.get_component_rich_style("patron-table--header")
            text = self.header_text(width)
        else:
            index = int(self.scroll_y) + y - 1
            if index >= self.row_count:
                return Strip.blank(width, base)
            row = self.row_at(index)
            text = self.row_text(row, width)
            if index == self.cursor_row:
                style = self.get_component_rich_style("patron-table--cursor")
            elif row is None:
                style = base + self.get_component_rich_style("patron-table--pending", partial=True)
            else:
                style = base
        strip = Strip([Segment(set_cell_size(text, width), style)], width)
        return strip.apply_style(base) if style is not base else strip

    def rendered_lines(self) -> list[str]:
        """The text of every line as drawn now."""
        return [self.render_line(y).text for y in range(self.scrollable_content_region.height)]

