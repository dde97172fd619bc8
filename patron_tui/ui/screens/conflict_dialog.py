"""The conflict dialog of the job summary: both patrons side by side, and what to do.

k keeps the value with its holder, m moves it to the incoming record (typed confirmation),
e applies the incoming record with another value. The dialog returns the choice; the job
summary runs it (`services.imports.conflicts.resolve_conflict`) on the run engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Static

from patron_tui.services.imports.conflicts import DETAIL_FIELDS, Conflict, describe, patron_name, word
from patron_tui.textsafe import visible
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, ConfirmScreen

LABELS = {"last_name": "Last name", "first_name": "First name", "barcode": "Barcode",
          "district_id": "District ID", "username": "Username", "site": "Site", "grade": "Grade",
          "status": "Status", "homeroom": "Homeroom", "email": "Email", "id": "Patron", "flagged": "Flagged"}


@dataclass(frozen=True)
class ConflictChoice:
    conflict_id: int
    action: str  # keep | move | edit
    new_value: str | None = None


def cell(value: object, *, bold: bool = False) -> Text:
    return Text(visible(value), style="bold" if bold else "", no_wrap=True, overflow="ellipsis")


class ConflictScreen(ModalScreen["ConflictChoice | None"]):
    """One conflict: the patron holding the value now vs the incoming record."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("k", "keep", "Keep (holder keeps it)"),
        Binding("m", "move", "Move to incoming"),
        Binding("e", "edit", "Edit the value"),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="ConflictScreen") + """
    ConflictScreen > Vertical { width: 78; }
    ConflictScreen DataTable { height: auto; max-height: 13; }
    ConflictScreen #conflict-edit-row { display: none; height: auto; }
    ConflictScreen #conflict-edit-row.-shown { display: block; }
    ConflictScreen #conflict-edit-row Input { margin: 0; }
    """

    def __init__(self, conflict: Conflict) -> None:
        super().__init__()
        self.conflict = conflict

    def compose(self) -> ComposeResult:
        c = self.conflict
        what = word(c.field)
        with Vertical(id="conflict-frame"):
            where = f"patron {c.target_id}" if c.target_id else "a new patron"
            yield Static(Content(f"Line {c.line}: {what} {visible(c.value)} — the record for "
                                 f"{visible(patron_name(c.incoming))} ({where}) was skipped."),
                         classes="dialog-help", id="conflict-what")
            yield DataTable(cursor_type="row", zebra_stripes=True, id="conflict-table")
            if c.is_open:
                help_text = ("k keep: the holder keeps it, nothing changes · m move it to the incoming record "
                             "(the holder loses it and is flagged) · e edit: apply with another value · Esc close")
            else:
                help_text = (f"Resolved: {c.status} by {visible(c.resolved_by)} at {visible(c.resolved_at)[:19]}"
                             f" (run {c.resolution_run_id}). Esc closes.")
            yield Static(Content(help_text), classes="dialog-help", id="conflict-help")
            with Vertical(id="conflict-edit-row"):
                yield Label(Content(f"New {what} for the incoming record (Enter applies, Esc closes):"))
                yield Input(id="conflict-new-value", compact=True)

    def on_mount(self) -> None:
        c = self.conflict
        self.query_one("#conflict-frame").border_title = Content(f"Import conflict {c.id} ({c.status})")
        table = self.query_one(DataTable)
        holder = c.holder
        if holder is None:
            left = "Holds it now: nobody"
        elif c.target_id is not None and holder.get("id") == c.target_id:
            left = "Holds it now: the matched patron"
        else:
            left = "Holds it now"
        table.add_columns("", left, f"Incoming (line {c.line})")
        incoming = c.incoming_patron()
        holder = holder or {}
        for fld in ("id", *DETAIL_FIELDS, "flagged"):
            a = holder.get(fld)
            b = incoming.get(fld) if fld != "flagged" else (c.target or {}).get("flagged")
            if fld == "id":
                b = c.target_id if c.target_id is not None else "(new patron)"
            if a in (None, "") and b in (None, ""):
                continue
            mark = fld == c.field or (a not in (None, "") and b not in (None, "") and str(a) != str(b))
            table.add_row(cell(LABELS.get(fld, fld), bold=fld == c.field), cell(a if a is not None else "", bold=mark),
                          cell(b if b is not None else "", bold=mark))
        table.focus()

    def _open_or_say(self) -> bool:
        if not self.conflict.is_open:
            self.notify(f"Conflict {self.conflict.id} is already resolved ({self.conflict.status}).",
                        severity="warning", markup=False)
            return False
        return True

    def action_keep(self) -> None:
        if self._open_or_say():
            self.dismiss(ConflictChoice(self.conflict.id, "keep"))

    def action_move(self) -> None:
        if not self._open_or_say():
            return
        c = self.conflict
        what = f"{word(c.field)} {visible(c.value)}"
        if c.still_held:
            question = (f"Move {what} from {visible(describe(c.holder))} to {visible(patron_name(c.incoming))}? "
                        f"{visible(patron_name(c.holder))} loses it and is flagged; the incoming record is applied.")
        else:
            question = f"Nobody else holds {what} now. Apply the incoming record of line {c.line} with it?"
        self.app.push_screen(ConfirmScreen(question, "move"),
                             lambda ok: self.dismiss(ConflictChoice(c.id, "move")) if ok else None)

    def action_edit(self) -> None:
        if not self._open_or_say():
            return
        self.query_one("#conflict-edit-row").add_class("-shown")
        self.query_one("#conflict-new-value", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.notify(f"Type the new {word(self.conflict.field)} first.", severity="warning", markup=False)
            return
        if value == self.conflict.value:
            self.notify(f"That is the conflicting {word(self.conflict.field)}; type another.",
                        severity="warning", markup=False)
            return
        self.dismiss(ConflictChoice(self.conflict.id, "edit", value))
