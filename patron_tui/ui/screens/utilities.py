"""Utilities (5): the patron utilities and the troubleshooting run, in one filterable list.

The list comes from `services.utilities.listing` (titles and one-line descriptions in the
district's terms: a talking-book library reads "Change Patron Level"); Check database is
its first entry. Typing filters the list (the letters go to the filter line; Down or Enter
goes back to the list); Enter opens a utility (`utility_run.UtilityScreen`: Selections,
Options, Preview, Run, the operations report) or starts Check database. From the Patrons
screen, u opens this section with the set (or statement) on screen preselected.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events, work
from textual.message import Message
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Input, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from patron_tui.textsafe import visible
from patron_tui.ui.screens.base import SectionScreen

CHECK = "check"
CHECK_ENTRY_TITLE = "Check database"
CHECK_ENTRY_TEXT = ("Integrity check, orphan rows, duplicate barcodes and district IDs, patrons at the "
                    "Union Site, grades/sites/policies not in the reference tables.")


@dataclass(frozen=True)
class Entry:
    """One line of the list."""

    name: str
    title: str
    description: str
    unavailable: str | None = None

    def rank(self, text: str) -> int | None:
        """0: the title has every typed word, 1: the description does too, None: no match."""
        words = text.lower().split()
        if all(w in self.title.lower() for w in words):
            return 0
        hay = f"{self.title} {self.description} {self.name}".lower()
        return 1 if all(w in hay for w in words) else None


@dataclass(frozen=True)
class Preselection:
    """The patrons chosen on the Patrons screen: a saved set, or a statement."""

    query_set: str | None = None
    statement: str | None = None

    def describe(self) -> str:
        if self.query_set:
            return f"set {visible(self.query_set)}"
        return f"statement {visible(self.statement)}"

    def values(self) -> dict[str, str]:
        """The Selections fields this preselects."""
        if self.query_set:
            return {"query_set": self.query_set}
        return {"statement": self.statement or ""}


def load_entries(conn) -> list[Entry]:
    """Check database, then every registered utility (terminology applied), with availability."""
    from patron_tui.services import utilities as svc

    entries = [Entry(CHECK, CHECK_ENTRY_TITLE, CHECK_ENTRY_TEXT)]
    for name, title, description in svc.listing(conn):
        entries.append(Entry(name, title, description, svc.get(name).available(conn)))
    return entries


async def open_with_selection(app, preselection: Preselection) -> None:
    """Show the Utilities section with `preselection` in every utility opened from it."""
    from patron_tui.ui.screens.utility_run import UtilityScreen

    await app.switch_mode("utilities")
    stack = app.screen_stack
    base = stack[0]
    if not isinstance(base, UtilitiesScreen):  # pragma: no cover - the mode's base is this screen
        return
    top = stack[-1]
    if isinstance(top, UtilityScreen) and top.running:
        app.notify("A utility is running; its screen stays open. Esc leaves it when it ends.",
                   severity="warning", markup=False)
        return
    while len(app.screen_stack) > 1:
        app.pop_screen()
    base.preselect(preselection)


class UtilityList(OptionList):
    """The utilities; letters typed here go to the filter line above."""

    class TypedAhead(Message):
        """A letter was typed on the list: it belongs to the filter."""

        def __init__(self, character: str) -> None:
            super().__init__()
            self.character = character

    def on_key(self, event: events.Key) -> None:
        # digits stay section keys; letters and spaces start (or continue) the filter
        char = event.character
        if event.is_printable and char and (char.isalpha() or char in " -'"):
            event.stop()
            event.prevent_default()
            self.post_message(self.TypedAhead(char))


class UtilitiesScreen(SectionScreen):
    SECTION = "utilities"
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", id="utilities.filter"),
        Binding("down", "to_list", "List", show=False),
        Binding("escape", "clear", "Clear filter", id="utilities.clear"),
        Binding("ctrl+x", "cancel_run", "Cancel check", id="utilities.cancel"),
    ]

    DEFAULT_CSS = """
    UtilitiesScreen #util-body { height: 1fr; padding: 0 1; }
    UtilitiesScreen #util-for { height: auto; color: $foreground; background: $boost; display: none; }
    UtilitiesScreen #util-for.-shown { display: block; }
    UtilitiesScreen #util-filter { height: 1; }
    UtilitiesScreen #util-list { height: 1fr; min-height: 3; text-wrap: nowrap; text-overflow: ellipsis; }
    UtilitiesScreen #util-desc { height: 2; color: $foreground-muted; }
    UtilitiesScreen #util-status { height: 1; }
    UtilitiesScreen ProgressBar { height: 1; display: none; }
    UtilitiesScreen ProgressBar.-active { display: block; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Entry] = []
        self.shown: list[Entry] = []
        self.preselection: Preselection | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="util-body"):
            yield Static(Content(""), id="util-for")
            yield Input(placeholder="type to filter the utilities · Down or Enter: the list",
                        id="util-filter", compact=True, select_on_focus=False)
            yield UtilityList(id="util-list", compact=True)
            yield Static(Content(""), id="util-desc")
            yield Static(Content("Enter opens the highlighted utility."), id="util-status")
            yield ProgressBar(id="util-progress", show_eta=False)

    @property
    def option_list(self) -> UtilityList:
        return self.query_one(UtilityList)

    @property
    def filter_input(self) -> Input:
        return self.query_one("#util-filter", Input)

    def on_mount(self) -> None:
        self.option_list.focus()
        self.set_interval(0.2, self._poll_progress)
        self.load()
        self._show_preselection()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self.is_mounted and self.entries:
            self.load()   # terminology or availability may have changed

    # -- the list ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="utilities-list")
    def load(self) -> None:
        conn = self.app.store.connect()
        try:
            entries = load_entries(conn)
        except Exception as exc:  # the section stays usable: Check database at least
            entries = [Entry(CHECK, CHECK_ENTRY_TITLE, CHECK_ENTRY_TEXT)]
            self.app.call_from_thread(self.notify, f"Could not list the utilities: {visible(exc)}",
                                      severity="error", markup=False)
        finally:
            conn.close()
        self.app.call_from_thread(self._loaded, entries)

    def _loaded(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.apply_filter(keep_highlight=True)

    def apply_filter(self, *, keep_highlight: bool = False) -> None:
        """Show the entries matching the filter; the best match is highlighted (a reload keeps
        the highlighted entry instead)."""
        text = self.filter_input.value.strip()
        ol = self.option_list
        keep = None
        if keep_highlight and ol.highlighted is not None and ol.highlighted < len(self.shown):
            keep = self.shown[ol.highlighted].name
        if text:   # titles that match first, then the utilities whose description matches
            ranked = [(r, i, e) for i, e in enumerate(self.entries) if (r := e.rank(text)) is not None]
            self.shown = [e for _, _, e in sorted(ranked, key=lambda t: t[:2])]
        else:
            self.shown = list(self.entries)
        width = max((len(e.title) for e in self.shown), default=0) + 2
        options = []
        for e in self.shown:
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            line.append(f"{visible(e.title):<{width}}", "dim" if e.unavailable else "bold")
            line.append(visible(e.description) if not e.unavailable else f"unavailable: {visible(e.unavailable)}",
                        "dim")
            options.append(Option(line, id=e.name))
        ol.clear_options()
        ol.add_options(options)
        if self.shown:
            names = [e.name for e in self.shown]
            ol.highlighted = names.index(keep) if keep in names else 0
        self._describe()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "util-filter":
            self.apply_filter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "util-filter":
            self.action_to_list()

    def on_utility_list_typed_ahead(self, event: UtilityList.TypedAhead) -> None:
        box = self.filter_input
        box.value += event.character
        box.cursor_position = len(box.value)
        box.focus()

    def action_focus_filter(self) -> None:
        self.filter_input.focus()

    def action_to_list(self) -> None:
        self.option_list.focus()

    def action_clear(self) -> None:
        if self.filter_input.value:
            self.filter_input.value = ""
            self.option_list.focus()
        elif self.preselection is not None:
            self.preselection = None
            self._show_preselection()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._describe()

    def _describe(self) -> None:
        ol = self.option_list
        desc = self.query_one("#util-desc", Static)
        if ol.highlighted is None or not 0 <= ol.highlighted < len(self.shown):
            desc.update(Content("No utility matches the filter." if self.entries else "Loading…"))
            return
        e = self.shown[ol.highlighted]
        text = visible(e.description)
        if e.unavailable:
            text += f"\nUnavailable: {visible(e.unavailable)}"
        desc.update(Content(text))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if not 0 <= event.option_index < len(self.shown):
            return
        entry = self.shown[event.option_index]
        if entry.name == CHECK:
            self.app.start_check()
            return
        from patron_tui.ui.screens.utility_run import UtilityScreen

        values = self.preselection.values() if self.preselection else None
        self.app.push_screen(UtilityScreen(entry.name, selections=values))

    # -- a selection from the Patrons screen -------------------------------------------------
    def preselect(self, preselection: Preselection) -> None:
        self.preselection = preselection
        if self.is_mounted:
            self._show_preselection()
            self.option_list.focus()

    def _show_preselection(self) -> None:
        banner = self.query_one("#util-for", Static)
        pre = self.preselection
        banner.set_class(pre is not None, "-shown")
        if pre is not None:
            banner.update(Content(f"Patrons from the Patrons screen: {pre.describe()} "
                                  "(preselected in each utility; Esc clears)"))

    # -- Check database's run ------------------------------------------------------------------
    def action_cancel_run(self) -> None:
        self.app.cancel_runs()

    def _poll_progress(self) -> None:
        status = self.query_one("#util-status", Static)
        bar = self.query_one(ProgressBar)
        handle = self.app.engine.latest() if self.app.engine is not None else None
        if handle is None:
            return
        bar.add_class("-active")
        if handle.finished:
            bar.update(total=1, progress=1)
        else:
            bar.update(total=handle.total or None, progress=handle.done)
        status.update(Content(f"Run {handle.run_id} {visible(handle.title)}: {handle.status.value}"))
