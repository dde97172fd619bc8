"""Dialogs of the Patrons section: save a set, the saved sets, export, help, confirm; and
two the other sections build theirs from: a yes/no question (`AskScreen`) and the file-path
prompt (`PathScreen`) of their "write a file" dialogs.

Each is a `ModalScreen[T]` that returns what the operator chose through
`dismiss`; the Patrons screen does the work through services.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, OptionList, Select, SelectionList, Static
from textual.strip import Strip
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.option_list import Option
from textual.widgets.selection_list import Selection

from patron_tui.textsafe import visible

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 76; max-width: 100%; height: auto; max-height: 100%;
    border: round $primary; background: $surface; padding: 0 1;
}}
{name} .dialog-help {{ color: $foreground-muted; height: auto; }}
{name} .dialog-error {{ color: $error; height: auto; }}
{name} Input {{ margin: 0 0 1 0; }}
"""


class SaveSetScreen(ModalScreen["SaveRequest | None"]):
    """Name the current statement as a query set (optionally frozen)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = DIALOG_CSS.format(name="SaveSetScreen")

    def __init__(self, statement: str, count: int | None, name: str = "") -> None:
        super().__init__()
        self.statement = statement
        self.count = count
        self.initial = name

    def compose(self) -> ComposeResult:
        with Vertical(id="save-frame"):
            yield Static(Content(f"Search statement: {visible(self.statement) or '(all patrons)'}"),
                         classes="dialog-help")
            if self.count is not None:
                yield Static(Content(f"{self.count:,} patrons match now."), classes="dialog-help")
            yield Label(Content("Set name (1-80 characters):"))
            yield Input(value=self.initial, id="set-name", compact=True)
            yield Checkbox(Content("Freeze: keep exactly these patrons (for a run that must not drift)"),
                           id="set-freeze", compact=True)
            yield Checkbox(Content("Replace a set of the same name"), id="set-replace", compact=True)
            yield Static(Content("Enter saves, Esc cancels."), classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#save-frame").border_title = Content("Save query set")
        self.query_one("#set-name", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            self.notify("Give the set a name.", severity="warning", markup=False)
            return
        self.dismiss(SaveRequest(name, self.query_one("#set-freeze", Checkbox).value,
                                 self.query_one("#set-replace", Checkbox).value))


@dataclass(frozen=True)
class SaveRequest:
    name: str
    freeze: bool
    replace: bool


@dataclass(frozen=True)
class SetAction:
    action: str  # open | freeze | unfreeze | delete
    name: str


class SetsScreen(ModalScreen["SetAction | None"]):
    """The saved query sets: Enter opens one; f freezes, u makes it live, d deletes."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("f", "act('freeze')", "Freeze"),
        Binding("u", "act('unfreeze')", "Live again"),
        Binding("d", "act('delete')", "Delete"),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="SetsScreen") + """
    SetsScreen OptionList { height: auto; max-height: 16; }
    """

    def __init__(self, sets: list) -> None:
        super().__init__()
        self.sets = sets

    def compose(self) -> ComposeResult:
        with Vertical(id="sets-frame"):
            if not self.sets:
                yield Static(Content("No saved sets yet. Run a statement, then Ctrl+S saves it."),
                             classes="dialog-help")
            options = []
            for qs in self.sets:
                text = Text(no_wrap=True, overflow="ellipsis")
                text.append(visible(qs.name), "bold")
                if qs.frozen_at:
                    text.append(f"  frozen {visible(qs.frozen_at)[:16]}, {qs.member_count or 0:,} patrons")
                else:
                    text.append("  live")
                text.append("\n  " + (visible(qs.statement) or "(all patrons)"))
                options.append(Option(text, id=str(qs.id)))
            yield OptionList(*options, id="sets-list")
            yield Static(Content("Enter opens · f freezes now · u makes it live · d deletes · Esc closes"),
                         classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#sets-frame").border_title = Content("Saved query sets")
        self.query_one(OptionList).focus()

    def _current(self):
        ol = self.query_one(OptionList)
        if ol.highlighted is None or not self.sets:
            return None
        return self.sets[ol.highlighted]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        qs = self.sets[event.option_index]
        self.dismiss(SetAction("open", qs.name))

    def action_act(self, action: str) -> None:
        qs = self._current()
        if qs is not None:
            self.dismiss(SetAction(action, qs.name))


class ConfirmScreen(ModalScreen[bool]):
    """A confirmation that needs the answer typed, not a reflex Enter."""

    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel")]
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")

    def __init__(self, question: str, answer: str) -> None:
        super().__init__()
        self.question = question
        self.answer = answer

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-frame"):
            yield Static(Content(self.question))
            yield Label(Content(f"Type {visible(self.answer)} to confirm:"))
            yield Input(id="confirm-input", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-frame").border_title = Content("Confirm")
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.answer:
            self.dismiss(True)
        else:
            self.notify(f"That is not {visible(self.answer)}; nothing was done.", severity="warning",
                        markup=False)
            self.dismiss(False)


class AskScreen(ModalScreen[bool]):
    """A yes/no question: y answers yes, n or Escape no."""

    BINDINGS = [
        Binding("y", "dismiss(True)", "Yes"),
        Binding("n", "dismiss(False)", "No"),
        Binding("escape", "dismiss(False)", "No", show=False),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="AskScreen")
    FRAME_ID = "ask-frame"

    def __init__(self, title: str, question: str, keys: str) -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.keys = keys

    def compose(self) -> ComposeResult:
        with Vertical(id=self.FRAME_ID):
            yield Static(Content(self.question))
            yield Static(Content(self.keys), classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one(f"#{self.FRAME_ID}").border_title = Content(self.title_text)


class PathScreen(ModalScreen["Path | None"]):
    """Ask for the file to write: Enter returns the path (~ expanded), Escape None. A subclass
    names its dialog (title, label, an optional help line, the element ids) and its CSS."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, default: Path, *, title: str, frame_id: str, input_id: str, label: str = "File:",
                 help_text: str | None = None, keys: str = "Enter writes · Esc cancels") -> None:
        super().__init__()
        self.default = default
        self.dialog_title = title
        self.frame_id = frame_id
        self.input_id = input_id
        self.label = label
        self.help_text = help_text
        self.keys = keys

    def compose(self) -> ComposeResult:
        with Vertical(id=self.frame_id):
            if self.help_text:
                yield Static(Content(self.help_text), classes="dialog-help")
            yield Label(Content(self.label))
            yield Input(value=str(self.default), id=self.input_id, compact=True)
            yield Static(Content(self.keys), classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one(f"#{self.frame_id}").border_title = Content(self.dialog_title)
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.notify("Name the file to write.", severity="warning", markup=False)
            return
        self.dismiss(Path(value).expanduser())


@dataclass(frozen=True)
class ExportRequest:
    path: Path
    encoding: str
    columns: list[str]


ENCODINGS = [
    ("utf-8", "UTF-8"),
    ("utf-8-sig", "UTF-8 with BOM (Excel on Windows)"),
    ("windows-1252", "Windows-1252"),
]


class MarkedSelectionList(SelectionList[str]):
    """A SelectionList whose boxes show X only when chosen, so the state reads
    without colour (the mono theme, a terminal with NO_COLOR)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        if len(segments) > 1 and segments[1].text == ToggleButton.BUTTON_INNER and segments[1].style:
            index = segments[1].style.meta.get("option")
            if index is not None:
                chosen = self.get_option_at_index(index).value in self.selected
                segments[1] = Segment(ToggleButton.BUTTON_INNER if chosen else " ", segments[1].style)
                return Strip(segments, strip.cell_length)
        return strip


class ExportScreen(ModalScreen["ExportRequest | None"]):
    """Export the current set to CSV: file, encoding, columns (Space toggles)."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "export", "Export"),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="ExportScreen") + """
    ExportScreen SelectionList { height: 8; }
    ExportScreen Select { margin: 0 0 1 0; }
    """

    def __init__(self, statement: str, count: int | None, columns: list[tuple[str, str, bool]],
                 default_path: Path) -> None:
        super().__init__()
        self.statement = statement
        self.count = count
        self.columns = columns
        self.default_path = default_path

    def compose(self) -> ComposeResult:
        with Vertical(id="export-frame"):
            what = visible(self.statement) or "(all patrons)"
            count = f", {self.count:,} patrons" if self.count is not None else ""
            yield Static(Content(f"Set: {what}{count}"), classes="dialog-help")
            yield Label(Content("File:"))
            yield Input(value=str(self.default_path), id="export-path", compact=True)
            yield Label(Content("Encoding (Enter opens the choices):"))
            yield Select([(label, code) for code, label in ENCODINGS], value=ENCODINGS[0][0],
                         allow_blank=False, id="export-encoding", compact=True)
            yield MarkedSelectionList(
                *[Selection(Content(label), name, on) for name, label, on in self.columns],
                id="export-columns",
            )
            yield Static(Content("Tab moves · Space toggles a column · Ctrl+S exports · Esc cancels"),
                         classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#export-frame").border_title = Content("Export to CSV")
        self.query_one("#export-path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_export()

    def action_export(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        columns = list(self.query_one(SelectionList).selected)
        if not path:
            self.notify("Name the file to write.", severity="warning", markup=False)
            return
        if not columns:
            self.notify("Choose at least one column.", severity="warning", markup=False)
            return
        encoding = str(self.query_one("#export-encoding", Select).value)
        # keep the columns in the offered order
        order = [name for name, _, _ in self.columns]
        columns.sort(key=order.index)
        self.dismiss(ExportRequest(Path(path).expanduser(), encoding, columns))


class LanguageHelpScreen(ModalScreen[None]):
    """The search statement language, for reading while writing one."""

    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("f1", "dismiss", "Close", show=False)]
    DEFAULT_CSS = DIALOG_CSS.format(name="LanguageHelpScreen") + """
    LanguageHelpScreen > Vertical { height: 100%; }
    LanguageHelpScreen VerticalScroll { height: 1fr; }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.help_text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="lang-frame"):
            with VerticalScroll():
                yield Static(Content(self.help_text))

    def on_mount(self) -> None:
        self.query_one("#lang-frame").border_title = Content("Search statements (Esc closes)")
        self.query_one(VerticalScroll).focus()
