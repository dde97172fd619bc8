"""The summary of a run: its counts, every per-record message, its conflicts.

Opened when an import ends, for any past import run from Jobs (4), and for a run of any kind
from the Job Manager. The header is worded for the run's kind (an import's read/added/updated,
a batch update's profiles, the queue filler's queues, a utility's changed/skipped, what an
undo put back; services/run_history.py `summary_lines`); u undoes the run (the Undo dialog),
and the undo's own summary opens when it ends. The messages list is a
line-API view (only the visible lines are rendered, so 200,000 messages scroll as fast as 20),
filtered by level with a/e/w/s/p; x exports the messages to CSV. The Conflicts tab lists the
records skipped because a barcode, district ID or username belonged to another patron; Enter
opens one side by side with its holder, to keep, move or edit (run on the run engine).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from patron_tui.services.imports.conflicts import (
    CONFLICT_KIND,
    Conflict,
    list_conflicts,
    patron_name,
    resolve_conflict,
    resolve_title,
    word,
)
from patron_tui.services.imports.summary import SummaryError, load_summary, messages_csv
from patron_tui.services.run_history import summary_lines
from patron_tui.services.undo import undone_by
from patron_tui.textsafe import visible
from patron_tui.ui.screens.conflict_dialog import ConflictChoice, ConflictScreen
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, PathScreen

# filter name -> (levels shown, label)
FILTERS: dict[str, tuple[frozenset[str], str]] = {
    "all": (frozenset({"info", "warning", "skipped", "error"}), "all messages"),
    "problems": (frozenset({"warning", "skipped", "error"}), "errors, warnings and skipped"),
    "error": (frozenset({"error"}), "errors"),
    "warning": (frozenset({"warning"}), "warnings"),
    "skipped": (frozenset({"skipped"}), "skipped records"),
}
LEVEL_LABEL = {"info": "INFO ", "warning": "WARN ", "skipped": "SKIP ", "error": "ERROR"}
# (line, barcode, level, code, text)
MessageRow = tuple[int | None, str, str, str, str]


class MessageView(ScrollView, can_focus=True):
    """The run's messages, one line each: line, level, code, barcode, text."""

    COMPONENT_CLASSES = {"msgview--info", "msgview--warning", "msgview--skipped", "msgview--error",
                         "msgview--meta"}
    DEFAULT_CSS = """
    MessageView { background: $surface; color: $foreground; scrollbar-size-vertical: 1; }
    MessageView:focus { background-tint: $foreground 4%; }
    MessageView > .msgview--info { color: $foreground; }
    MessageView > .msgview--warning { color: $warning; text-style: bold; }
    MessageView > .msgview--skipped { color: $secondary; }
    MessageView > .msgview--error { color: $error; text-style: bold; }
    MessageView > .msgview--meta { color: $foreground-muted; }
    """
    BINDINGS = [
        Binding("up", "scroll_up", "Up", show=False),
        Binding("down", "scroll_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "First", show=False),
        Binding("end", "scroll_end", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.rows: list[MessageRow] = []

    def set_rows(self, rows: list[MessageRow]) -> None:
        self.rows = rows
        width = max((44 + len(r[4]) for r in rows[:5000]), default=0)
        self.virtual_size = Size(width, len(rows))
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def line_text(self, row: MessageRow) -> Text:
        line, barcode, level, code, text_ = row
        meta = self.get_component_rich_style("msgview--meta", partial=True)
        style = self.get_component_rich_style(f"msgview--{level}", partial=True)
        text = Text(no_wrap=True, end="")
        text.append(f"{'' if line is None else line:>6} ", meta)
        text.append(LEVEL_LABEL.get(level, level.upper()[:5]), style)
        text.append(f" {visible(code)[:18]:18} ", meta)
        text.append(f"{visible(barcode)[:12]:12} ", meta)
        text.append(visible(text_), style if level != "info" else "")
        return text

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if index >= len(self.rows):
            return Strip.blank(width, base)
        strip = Strip(list(self.line_text(self.rows[index]).render(self.app.console)))
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, base).apply_style(base)


class ExportMessagesScreen(PathScreen):
    """Ask where the messages CSV goes."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ExportMessagesScreen")

    def __init__(self, default: Path, what: str) -> None:
        super().__init__(default, title="Export messages", frame_id="export-msg-frame", input_id="export-msg-path",
                         help_text=f"Exports {what} as CSV: line, barcode, level, code, text.")
        self.what = what


def _yes(value: object) -> str:
    return "yes" if value else "no"


class JobSummaryScreen(Screen[None]):
    """The summary of one run (see the module doc)."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("u", "undo", "Undo run"),
        Binding("a", "filter('all')", "All"),
        Binding("e", "filter('error')", "Errors"),
        Binding("w", "filter('warning')", "Warnings"),
        Binding("s", "filter('skipped')", "Skipped"),
        Binding("p", "filter('problems')", "Problems only"),
        Binding("x", "export", "Export CSV"),
        Binding("m", "tab('tab-messages')", "Messages"),
        Binding("c", "tab('tab-conflicts')", "Conflicts"),
        Binding("r", "reload", "Refresh", show=False),
    ]
    DEFAULT_CSS = """
    JobSummaryScreen #summary-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    JobSummaryScreen #summary-counts { height: auto; max-height: 4; padding: 0 1; }
    JobSummaryScreen TabbedContent { height: 1fr; }
    JobSummaryScreen TabPane { padding: 0; height: 1fr; }
    JobSummaryScreen #summary-filter { height: 1; padding: 0 1; color: $foreground-muted; }
    JobSummaryScreen MessageView { height: 1fr; }
    JobSummaryScreen #summary-conflicts { height: 1fr; }
    JobSummaryScreen #summary-conflicts-help { height: 1; padding: 0 1; color: $foreground-muted; }
    """

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.run: dict | None = None
        self.all_rows: list[MessageRow] = []
        self.filter_name = "all"
        self.conflicts: list[Conflict] = []

    def compose(self) -> ComposeResult:
        yield Static(Content(f"Job summary of run {self.run_id}"), id="summary-title")
        yield Static(Content("Loading…"), id="summary-counts")
        with TabbedContent(id="summary-tabs"):
            with TabPane("Messages", id="tab-messages"):
                yield Static(Content(""), id="summary-filter")
                yield MessageView(id="summary-messages")
            with TabPane("Conflicts", id="tab-conflicts"):
                yield DataTable(cursor_type="row", zebra_stripes=True, id="summary-conflicts")
                yield Static(Content("Enter opens a conflict: k keep · m move · e edit"),
                             id="summary-conflicts-help")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#summary-conflicts", DataTable).add_columns(
            "#", "Line", "Field", "Value", "Status", "Held by", "Incoming")
        self.query_one(MessageView).focus()
        self.action_reload()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-summary")
    def load(self) -> None:
        conn = self.app.store.connect()
        try:
            try:
                data = load_summary(conn, self.run_id)
            except SummaryError as exc:
                self.app.call_from_thread(self._missing, str(exc))
                return
            run = data["run"]
            rows: list[MessageRow] = [
                (m["line"], m["barcode"] or "", m["level"], m["code"] or "", m["text"] or "")
                for m in data.pop("messages")
            ]
            conflicts = list_conflicts(conn, self.run_id)
            run["undone_by"] = undone_by(conn, self.run_id)
        finally:
            conn.close()
        self.app.call_from_thread(self.show, run, rows, conflicts)

    def _missing(self, message: str) -> None:
        self.query_one("#summary-counts", Static).update(Content(visible(message)))

    def show(self, run: dict, rows: list[MessageRow], conflicts: list[Conflict]) -> None:
        self.run = run
        self.all_rows = rows
        status = run["status"] + (f": {run['error']}" if run.get("error") else "")
        self.query_one("#summary-title", Static).update(Content(
            f"{'Job summary' if run.get('kind') in ('job', 'import') else 'Summary'} of run {run['id']}: "
            f"{visible(run['title'])} — {visible(status)}"))
        lines = [visible(line) for line in summary_lines(run)]
        if run.get("undone_by"):
            lines.append(f"Undone by run {run['undone_by']} (undo that run to bring these changes back)")
        counts = "\n".join(lines)
        self.query_one("#summary-counts", Static).update(Content(counts))
        self.apply_filter()
        self.show_conflicts(conflicts)

    # -- messages ----------------------------------------------------------------------------
    def apply_filter(self) -> None:
        levels, label = FILTERS[self.filter_name]
        rows = self.all_rows if self.filter_name == "all" else [r for r in self.all_rows if r[2] in levels]
        self.query_one(MessageView).set_rows(rows)
        self.query_one("#summary-filter", Static).update(Content(
            f"{len(rows):,} of {len(self.all_rows):,} messages: {label} (a e w s p filter · x export)"))

    def action_filter(self, name: str) -> None:
        self.filter_name = name
        self.apply_filter()
        self.query_one(TabbedContent).active = "tab-messages"
        self.query_one(MessageView).focus()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "tab-conflicts":
            self.query_one("#summary-conflicts", DataTable).focus()
        else:
            self.query_one(MessageView).focus()

    def action_export(self) -> None:
        errors_only = self.filter_name != "all"
        what = "the errors, warnings and skipped records" if errors_only else "every message"
        default = Path.cwd() / f"run-{self.run_id}-messages.csv"
        self.app.push_screen(ExportMessagesScreen(default, what),
                             lambda path: path and self.export(path, errors_only))

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-summary-export")
    def export(self, path: Path, errors_only: bool) -> None:
        conn = self.app.store.connect()
        try:
            with open(path, "w", encoding="utf-8", newline="") as f:
                n = messages_csv(conn, self.run_id, f, errors_only=errors_only)
        except (OSError, SummaryError) as exc:
            text = f"Not exported: {path}: {getattr(exc, 'strerror', None) or exc}"
            self.app.call_from_thread(self.notify, visible(text), severity="error", markup=False)
            return
        finally:
            conn.close()
        self.app.call_from_thread(self.notify, f"{n:,} messages written to {visible(path)}.", markup=False,
                                  timeout=8)

    # -- conflicts ---------------------------------------------------------------------------
    def show_conflicts(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        table = self.query_one("#summary-conflicts", DataTable)
        keep = table.cursor_row
        table.clear()
        for c in conflicts:
            held = patron_name(c.holder) if c.holder else "nobody now"
            table.add_row(
                Text(str(c.id), justify="right"), Text("" if c.line is None else str(c.line), justify="right"),
                Text(word(c.field)), Text(visible(c.value), no_wrap=True),
                Text(c.status, style="bold" if c.is_open else ""),
                Text(visible(held), no_wrap=True, overflow="ellipsis"),
                Text(visible(patron_name(c.incoming)), no_wrap=True, overflow="ellipsis"),
            )
        open_count = sum(1 for c in conflicts if c.is_open)
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("tab-conflicts").label = Content(f"Conflicts ({open_count} open of {len(conflicts)})")
        if conflicts and keep is not None:
            table.move_cursor(row=min(keep, len(conflicts) - 1))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "summary-conflicts" or not 0 <= event.cursor_row < len(self.conflicts):
            return
        self.open_conflict(self.conflicts[event.cursor_row].id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="job-summary-conflict")
    def open_conflict(self, conflict_id: int) -> None:
        from patron_tui.services.imports.conflicts import ConflictError, get_conflict

        conn = self.app.store.connect()
        try:
            conflict = get_conflict(conn, conflict_id)  # read fresh: the holder may have changed
        except ConflictError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        finally:
            conn.close()
        self.app.call_from_thread(self.app.push_screen, ConflictScreen(conflict), self.resolve)

    def resolve(self, choice: ConflictChoice | None) -> None:
        if choice is not None:
            self.run_resolution(choice)

    @work(thread=True, exit_on_error=False, group="job-summary-resolve")
    def run_resolution(self, choice: ConflictChoice) -> None:
        engine = self.app.engine
        if engine is None:
            return
        from patron_tui.services.permissions import store_refusal

        refused = store_refusal(self.app.store, "import_patrons")
        if refused:
            self.app.call_from_thread(self.notify, refused, severity="error", markup=False, timeout=10)
            return
        handle = engine.start(
            CONFLICT_KIND, resolve_title(choice.conflict_id, choice.action),
            lambda ctx: resolve_conflict(ctx, choice.conflict_id, choice.action, choice.new_value),
            params={"conflict_id": choice.conflict_id, "action": choice.action, "value": choice.new_value},
        )
        handle.wait()
        if handle.status.value == "succeeded":
            text = f"Conflict {choice.conflict_id}: {handle.summary.get('status', choice.action)} (run {handle.run_id})."
            self.app.call_from_thread(self.notify, text, markup=False)
        else:
            text = f"Conflict {choice.conflict_id} not resolved: {visible(handle.error or handle.status.value)}"
            self.app.call_from_thread(self.notify, text, severity="error", markup=False, timeout=10)
        conn = self.app.store.connect()
        try:
            conflicts = list_conflicts(conn, self.run_id)
        finally:
            conn.close()
        self.app.call_from_thread(self.show_conflicts, conflicts)

    # -- undo --------------------------------------------------------------------------------
    def action_undo(self) -> None:
        from patron_tui.ui.screens.undo_dialog import UndoScreen

        self.app.push_screen(UndoScreen(self.run_id), self.undone)

    def undone(self, run_id: int | None) -> None:
        if run_id is None:
            return
        self.action_reload()
        self.app.push_screen(JobSummaryScreen(run_id))
