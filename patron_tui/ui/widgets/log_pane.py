"""The live log pane: run messages as they happen, filterable, following.

`LogView` is a line-API scroll view over the app's `LogBuffer`: it renders
only the visible lines, so 10,000 lines of scrollback cost nothing while
scrolling. Every line is plain text (control characters made visible), so a
patron name holding markup or an escape sequence shows as written.
"""

from __future__ import annotations

import time

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from patron_tui.textsafe import visible
from patron_tui.ui.logbuffer import FILTERS, LogBuffer, LogLine

LEVEL_LABEL = {"info": "INFO ", "warning": "WARN ", "skipped": "SKIP ", "error": "ERROR"}


class LogView(ScrollView, can_focus=True):
    """Renders the filtered lines of a LogBuffer, newest at the bottom."""

    COMPONENT_CLASSES = {
        "logview--info",
        "logview--warning",
        "logview--skipped",
        "logview--error",
        "logview--meta",
    }

    DEFAULT_CSS = """
    LogView {
        background: $surface;
        color: $foreground;
        scrollbar-size-vertical: 1;
    }
    LogView:focus { background-tint: $foreground 4%; }
    LogView > .logview--info { color: $foreground; }
    LogView > .logview--warning { color: $warning; text-style: bold; }
    LogView > .logview--skipped { color: $secondary; }
    LogView > .logview--error { color: $error; text-style: bold; }
    LogView > .logview--meta { color: $foreground-muted; }
    """

    BINDINGS = [
        Binding("end", "scroll_end", "Newest", show=False),
        Binding("home", "scroll_home", "Oldest", show=False),
    ]

    def __init__(self, buffer: LogBuffer, **kw) -> None:
        super().__init__(**kw)
        self.buffer = buffer
        self.filter_name = "all"
        self.rows: list[LogLine] = []
        self._width = 0

    # data ------------------------------------------------------------------
    def reload(self) -> None:
        self.rows = self.buffer.filtered(self.filter_name)
        self._width = max((self._line_width(r) for r in self.rows[-2000:]), default=0)
        self._resize(follow=True)

    def extend(self, new: list[LogLine]) -> None:
        levels = FILTERS[self.filter_name]
        follow = self.is_following
        added = [ln for ln in new if ln.level in levels]
        if not added:
            return
        self.rows.extend(added)
        cap = self.buffer.capacity
        if len(self.rows) > cap + 1000:
            del self.rows[: len(self.rows) - cap]
        self._width = max(self._width, *(self._line_width(r) for r in added))
        self._resize(follow=follow)

    @property
    def is_following(self) -> bool:
        return self.scroll_y >= self.max_scroll_y - 1

    def _resize(self, *, follow: bool) -> None:
        self.virtual_size = Size(self._width, len(self.rows))
        if follow:
            # after the next layout, when max_scroll_y knows the new size
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)
        self.refresh()

    @staticmethod
    def _line_width(ln: LogLine) -> int:
        return 24 + len(ln.code) + len(ln.text)

    def line_text(self, ln: LogLine) -> Text:
        stamp = time.strftime("%H:%M:%S", time.localtime(ln.ts))
        meta = self.get_component_rich_style("logview--meta", partial=True)
        style = self.get_component_rich_style(f"logview--{ln.level}", partial=True)
        text = Text(no_wrap=True, end="")
        text.append(f"{stamp} ", meta)
        text.append(LEVEL_LABEL.get(ln.level, ln.level.upper()[:5]), style)
        text.append(f" r{ln.run_id} ", meta)
        where = []
        if ln.line is not None:
            where.append(f"line {ln.line}")
        if ln.barcode:
            where.append(visible(ln.barcode))
        if where:
            text.append("[" + ", ".join(where) + "] ", meta)
        text.append(visible(ln.text), style if ln.level != "info" else Style())
        return text

    # rendering -----------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if index >= len(self.rows):
            return Strip.blank(width, base)
        segments = list(self.line_text(self.rows[index]).render(self.app.console))
        strip = Strip(segments).crop(scroll_x, scroll_x + width)
        strip = strip.extend_cell_length(width, base)
        return strip.apply_style(base)


class LogPane(Vertical):
    """The log pane under the body of every section (full height in the Log section)."""

    DEFAULT_CSS = """
    LogPane {
        height: 8;
        border-top: solid $primary;
        background: $surface;
    }
    LogPane.-hidden { display: none; }
    LogPane.-full { height: 1fr; }
    LogPane #log-title { height: 1; color: $foreground; background: $panel; }
    LogPane LogView { height: 1fr; }
    """

    BINDINGS = [
        Binding("a", "set_filter('all')", "All"),
        Binding("e", "set_filter('errors')", "Errors"),
        Binding("w", "set_filter('warnings')", "Warnings"),
        Binding("s", "set_filter('skipped')", "Skipped"),
    ]

    filter_name: reactive[str] = reactive("all")

    class FilterChanged(Message):
        def __init__(self, filter_name: str) -> None:
            super().__init__()
            self.filter_name = filter_name

    def __init__(self, buffer: LogBuffer, *, full: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.buffer = buffer
        if full:
            self.add_class("-full")

    def compose(self) -> ComposeResult:
        yield Static(id="log-title")
        yield LogView(self.buffer, id="log-view")

    def on_mount(self) -> None:
        self.view.reload()
        self._show_title()

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def _show_title(self) -> None:
        parts = []
        for name in FILTERS:
            mark = "●" if name == self.filter_name else "○"
            parts.append(f"{mark} {name} ({name[0]})")
        self.query_one("#log-title", Static).update(
            Content(f" Log: {len(self.view.rows)} lines   " + "  ".join(parts))
        )

    def watch_filter_name(self, name: str) -> None:
        if not self.is_mounted:
            return
        self.view.filter_name = name
        self.view.reload()
        self._show_title()
        self.post_message(self.FilterChanged(name))

    def action_set_filter(self, name: str) -> None:
        self.filter_name = name

    def extend(self, new: list[LogLine]) -> None:
        self.view.extend(new)
        self._show_title()
