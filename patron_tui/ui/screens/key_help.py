"""`?`: the keys of the screen you are on, as a list (Escape closes it)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static


class KeyHelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    DEFAULT_CSS = """
    KeyHelpScreen { align: center middle; }
    KeyHelpScreen > Vertical {
        width: 70; max-width: 100%; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    KeyHelpScreen #keys-title { text-style: bold; height: 1; }
    KeyHelpScreen DataTable { height: auto; max-height: 18; }
    KeyHelpScreen #keys-foot { color: $foreground-muted; height: 1; }
    """

    def __init__(self, title: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.help_title = title
        self.keys = keys

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Content(f"Keys — {self.help_title}"), id="keys-title")
            table = DataTable(cursor_type="row", id="keys-table")
            yield table
            yield Static(Content("Escape closes. Ctrl+P opens the command palette."), id="keys-foot")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Key", "Does")
        for key, what in self.keys:
            table.add_row(Text(key, style="bold"), Text(what))
        table.focus()
