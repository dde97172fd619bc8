"""The two header lines: where you are (database, operator) and the sections."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from patron_tui.textsafe import visible

SECTIONS: list[tuple[str, str, str]] = [
    # (mode name, key, label)
    ("home", "1", "Home"),
    ("patrons", "2", "Patrons"),
    ("batch", "3", "Batch update"),
    ("jobs", "4", "Jobs"),
    ("utilities", "5", "Utilities"),
    ("log", "6", "Log"),
]


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader {
        dock: top;
        height: 2;
        background: $panel;
        color: $foreground;
    }
    """

    def __init__(self, section: str, **kw) -> None:
        super().__init__(**kw)
        self.section = section

    def on_mount(self) -> None:
        self.show()
        self.set_interval(1.0, self.show)

    def show(self) -> None:
        app = self.app
        store = getattr(app, "store", None)
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(" patron-tui", "bold")
        if store is not None:
            text.append(" │ db ")
            text.append(visible(store.path.name), "bold")
            text.append(" │ operator ")
            text.append(visible(store.operator), "bold")
        running = len(app.engine.active_runs()) if getattr(app, "engine", None) else 0
        if running:
            text.append(f" │ {running} run{'s' if running > 1 else ''} running", "reverse")
        text.append("\n")
        for mode, key, label in SECTIONS:
            style = "reverse bold" if mode == self.section else ""
            text.append(f" {key} {label} ", style)
            text.append(" ")
        self.update(text)
