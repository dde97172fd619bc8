"""Operators (Home → o, or the command palette): who may use the console and what they may do.

The list shows every operator (login name, name, security level, the three permissions);
a adds one and Enter or e edits the highlighted one (a form: Tab moves through login name,
name, security level, the three permissions, Save), d removes one after the login name is
typed. Only a district administrator (security level 0) may change operators, and the last
one can be neither removed nor demoted: the services (`services.operators`,
`services.permissions.require`) decide, and their refusal is shown as their sentence. The
headless twin is `patron-tui operators list|add|edit|remove`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Label, Static

from patron_tui.services import operators as ops
from patron_tui.services.permissions import PermissionDenied, refusal
from patron_tui.textsafe import visible
from patron_tui.ui.screens.import_run import MarkedCheckbox
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, ConfirmScreen

#: the form's permission checkboxes: (service keyword, label)
FLAG_LABELS = (("manage_patrons", "May manage patrons for the district (and scheduled jobs)"),
               ("batch_tools", "May use batch tools"),
               ("reset_passwords", "May reset patron passwords"))


def level_text(level: int) -> str:
    return "0 admin" if level == 0 else str(level)


def yes(flag: bool) -> str:
    return "yes" if flag else "-"


def cell(value: object, *, right: bool = False) -> Text:
    return Text(visible(value), no_wrap=True, overflow="ellipsis", justify="right" if right else "left")


@dataclass(frozen=True)
class OperatorRequest:
    """What the form asks for: add (original None) or edit `original`."""

    original: str | None
    login: str
    display_name: str
    security_level: int
    manage_patrons: bool
    batch_tools: bool
    reset_passwords: bool


class OperatorFormScreen(ModalScreen["OperatorRequest | None"]):
    """Add or edit one operator. Ctrl+S (or the Save button) returns the request; Esc cancels.
    The level is checked here (a whole number); everything else is the service's to refuse."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+s", "save", "Save")]
    DEFAULT_CSS = DIALOG_CSS.format(name="OperatorFormScreen") + """
    OperatorFormScreen .op-row { height: 1; margin-bottom: 1; }
    OperatorFormScreen .op-row Label { width: 16; }
    OperatorFormScreen .op-row Input { width: 1fr; margin: 0; }
    OperatorFormScreen Checkbox { height: 1; margin: 0; padding: 0; border: none; }
    OperatorFormScreen #op-buttons { height: 1; margin-top: 1; }
    OperatorFormScreen #op-buttons Button { margin-right: 2; }
    """

    def __init__(self, operator: ops.Operator | None = None) -> None:
        super().__init__()
        self.operator = operator
        self.problem = ""

    def compose(self) -> ComposeResult:
        op = self.operator
        with Vertical(id="op-frame"):
            with Horizontal(classes="op-row"):
                yield Label(Content("Login name"))
                yield Input(op.login_name if op else "", placeholder="the Unix login name", id="op-login",
                            compact=True, disabled=op is not None)
            with Horizontal(classes="op-row"):
                yield Label(Content("Name"))
                yield Input(op.display_name if op else "", placeholder="shown in lists (default: the login)",
                            id="op-name", compact=True)
            with Horizontal(classes="op-row"):
                yield Label(Content("Security level"))
                yield Input(str(op.security_level) if op else "5", placeholder="0 = district administrator",
                            id="op-level", compact=True, type="integer")
            for name, label in FLAG_LABELS:
                yield MarkedCheckbox(Content(label), bool(getattr(op, name)) if op else False, id=f"op-{name}",
                                     compact=True)
            yield Static(id="op-problem", classes="dialog-error")
            yield Static(Content("Tab moves · Space ticks · Ctrl+S saves · Esc cancels"), classes="dialog-help")
            with Horizontal(id="op-buttons"):
                yield Button(Content("Save"), id="op-save", compact=True)
                yield Button(Content("Cancel"), id="op-cancel", compact=True)

    def on_mount(self) -> None:
        op = self.operator
        self.query_one("#op-frame").border_title = Content(
            f"Edit operator {visible(op.login_name)}" if op else "Add an operator")
        self.query_one("#op-name" if op else "#op-login", Input).focus()

    def show_problem(self, message: str, focus: str | None = None) -> None:
        self.problem = message
        self.query_one("#op-problem", Static).update(Content(visible(message)))
        if focus:
            self.query_one(focus).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "op-save":
            self.action_save()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_save(self) -> None:
        login = self.query_one("#op-login", Input).value.strip()
        if not login:
            self.show_problem("Login name: give the operator's Unix login name.", "#op-login")
            return
        level_text_ = self.query_one("#op-level", Input).value.strip()
        if not level_text_.isdigit():
            self.show_problem("Security level: a whole number, 0 (district administrator) or more.", "#op-level")
            return
        flags = {name: self.query_one(f"#op-{name}", Checkbox).value for name, _ in FLAG_LABELS}
        self.dismiss(OperatorRequest(self.operator.login_name if self.operator else None, login,
                                     self.query_one("#op-name", Input).value.strip(), int(level_text_), **flags))


class OperatorsScreen(Screen[None]):
    """The operators and their permissions (see the module doc)."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("a", "add", "Add"),
        Binding("e", "edit", "Edit"),
        Binding("d", "remove", "Remove"),
        Binding("f5", "reload", "Refresh"),
    ]
    DEFAULT_CSS = """
    OperatorsScreen #operators-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    OperatorsScreen #operators-table { height: 1fr; }
    OperatorsScreen #operators-status { height: auto; max-height: 4; padding: 0 1; border-top: solid $primary; }
    OperatorsScreen #operators-status.-error { color: $error; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.operators: list[ops.Operator] = []
        #: why the console's operator may not change operators (None: they may; "" not known yet)
        self.refusal: str | None = ""
        self.status = ""

    def compose(self) -> ComposeResult:
        yield Static(Content("Operators — a add · Enter/e edit · d remove · Esc back"), id="operators-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="operators-table")
        yield Static(Content(""), id="operators-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("Login", width=12)
        table.add_column("Name", width=18)
        table.add_column("Level", width=7)
        table.add_column("Patrons", width=7)
        table.add_column("Batch", width=5)
        table.add_column("Resets", width=6)
        table.focus()
        self.action_reload()

    def action_reload(self, select: str | None = None) -> None:
        self.load(select)

    @work(thread=True, exclusive=True, exit_on_error=False, group="operators")
    def load(self, select: str | None = None) -> None:
        store = self.app.store
        conn = store.connect()
        try:
            found = ops.list_operators(conn)
            refused = refusal(conn, store.operator, "manage_operators")
        finally:
            conn.close()
        self.app.call_from_thread(self.show, found, refused, select)

    def show(self, found: list[ops.Operator], refused: str | None, select: str | None) -> None:
        self.operators, self.refusal = found, refused
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        for op in found:
            table.add_row(cell(op.login_name), cell(op.display_name), cell(level_text(op.security_level)),
                          cell(yes(op.manage_patrons)), cell(yes(op.batch_tools)), cell(yes(op.reset_passwords)),
                          key=op.login_name)
        if select is not None:
            keep = next((i for i, op in enumerate(found) if op.login_name == select), keep)
        if found and keep is not None:
            table.move_cursor(row=min(keep, len(found) - 1))
        admins = sum(1 for op in found if op.security_level == 0)
        self.query_one("#operators-title", Static).update(Content(
            f"Operators — {len(found)} ({admins} district administrator{'s' if admins != 1 else ''})"
            " · Enter edits"))
        if not self.status:
            self.say(f"You are {self.app.store.operator}; "
                     + ("you may view operators, not change them." if refused else "you may change operators."))

    def say(self, message: str, *, error: bool = False) -> None:
        self.status = message
        status = self.query_one("#operators-status", Static)
        status.update(Content(visible(message)))
        status.set_class(error, "-error")
        if error:
            self.notify(visible(message), severity="error", markup=False, timeout=10)

    def current(self) -> ops.Operator | None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        if not self.operators or row is None or not 0 <= row < len(self.operators):
            return None
        return self.operators[row]

    def _allowed(self) -> bool:
        """Refuse before a form is filled in for nothing (the service checks again on save)."""
        if self.refusal:
            self.say(self.refusal, error=True)
            return False
        return True

    # -- add / edit ------------------------------------------------------------------------------
    def action_add(self) -> None:
        if self._allowed():
            self.app.push_screen(OperatorFormScreen(None), self._save)

    def action_edit(self) -> None:
        op = self.current()
        if op is None:
            self.say("Highlight an operator first (a adds one).", error=True)
            return
        if self._allowed():
            self.app.push_screen(OperatorFormScreen(op), self._save)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_edit()

    def _save(self, request: OperatorRequest | None) -> None:
        if request is not None:
            self.save(request)

    @work(thread=True, exclusive=True, exit_on_error=False, group="operators-change")
    def save(self, request: OperatorRequest) -> None:
        store = self.app.store
        conn = store.connect()
        kw = dict(display_name=request.display_name, security_level=request.security_level,
                  manage_patrons=request.manage_patrons, batch_tools=request.batch_tools,
                  reset_passwords=request.reset_passwords)
        try:
            if request.original is None:
                op = ops.add_operator(conn, store.operator, request.login, **kw)
                done = f"Operator {op.login_name} added."
            else:
                op = ops.edit_operator(conn, store.operator, request.original, **kw)
                done = f"Operator {op.login_name} changed."
        except (PermissionDenied, ops.OperatorError) as exc:
            self.app.call_from_thread(self._refused, f"Nothing was changed: {exc}")
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._changed, done, op.login_name)

    def _refused(self, message: str) -> None:
        self.say(message, error=True)
        self.action_reload()

    def _changed(self, message: str, select: str | None) -> None:
        self.say(message)
        self.notify(visible(message), markup=False)
        self.action_reload(select)

    # -- remove --------------------------------------------------------------------------------
    def action_remove(self) -> None:
        op = self.current()
        if op is None:
            self.say("Highlight an operator first.", error=True)
            return
        if not self._allowed():
            return
        role = "a district administrator" if op.security_level == 0 else f"security level {op.security_level}"
        question = (f"Remove the operator {visible(op.login_name)} ({visible(op.display_name)}, {role})? "
                    f"They can no longer use the console's guarded actions; their past changes stay in "
                    f"the audit trail.")
        login = op.login_name
        self.app.push_screen(ConfirmScreen(question, login),
                             lambda ok: self.remove_operator(login) if ok else None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="operators-change")
    def remove_operator(self, login: str) -> None:
        store = self.app.store
        conn = store.connect()
        try:
            removed = ops.remove_operator(conn, store.operator, login)
        except (PermissionDenied, ops.OperatorError) as exc:
            self.app.call_from_thread(self._refused, f"Nothing was changed: {exc}")
            return
        finally:
            conn.close()
        self.app.call_from_thread(self._changed, f"Operator {removed.login_name} removed.", None)
