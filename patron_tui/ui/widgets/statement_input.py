"""The search-statement input: history on Up/Down, field-name completion.

Completion is Textual's inline suggestion: the rest of the field name shows
dimmed after the cursor and Right (or End) takes it; Tab keeps moving focus,
as a keyboard-only user expects.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Input

from patron_tui.services import queries


class FieldSuggester(Suggester):
    """Completes the word being typed at the end with a field name or keyword."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value or value[-1].isspace() or value.count('"') % 2 or value.count("'") % 2:
            return None
        candidates = queries.complete(value)
        if not candidates:
            return None
        word_start = len(value)
        while word_start > 0 and (value[word_start - 1].isalnum() or value[word_start - 1] == "_"):
            word_start -= 1
        word = value[word_start:]
        for candidate in candidates:
            if candidate.lower().startswith(word.lower()) and len(candidate) > len(word):
                return value[:word_start] + word + candidate[len(word):]
        return None


class StatementInput(Input):
    """One line for the search statement; Up/Down walk this user's history."""

    BINDINGS = [
        Binding("up", "history(-1)", "Previous statement", show=False),
        Binding("down", "history(1)", "Next statement", show=False),
    ]

    class Left(Message):
        """The operator pressed Escape: focus goes back to the list."""

    def __init__(self, history: list[str] | None = None, **kw) -> None:
        super().__init__(
            placeholder='search: status = Active and grade in (11, 12)   (Enter runs, F1 help)',
            suggester=FieldSuggester(),
            compact=True,
            select_on_focus=False,
            **kw,
        )
        self.history: list[str] = list(history or [])
        self._index = len(self.history)
        self._draft = ""

    def remember(self, statement: str) -> None:
        statement = statement.strip()
        if statement in self.history:
            self.history.remove(statement)
        if statement:
            self.history.append(statement)
        self._index = len(self.history)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        if self._index == len(self.history):
            self._draft = self.value
        self._index = max(0, min(len(self.history), self._index + step))
        self.value = self._draft if self._index == len(self.history) else self.history[self._index]
        self.cursor_position = len(self.value)

    def key_escape(self) -> None:
        self.post_message(self.Left())
