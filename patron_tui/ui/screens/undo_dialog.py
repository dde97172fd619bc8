"""The Undo dialog: what undoing a run would put back, the rows a later run changed again, and
the undo itself, run here with its progress.

Opened with u from the Job Manager or a run's summary. It reads the plan (services/undo.py
`plan_undo`): per table the rows re-inserted, deleted and restored; the conflicts (table,
patron, the value the run left and the value now, the later run), with the choice to skip
them (leave them as they are now) or overwrite them. A run that cannot be undone, or that this
operator may not undo (permissions.require_undo: the permission of the run's kind), shows the
sentence that says why. Typing "undo" and Enter starts the undo run (`start_undo`); when it
ends the dialog returns the undo run's id, and the caller opens its summary. The choice holds
for the conflicts shown: when rows are changed again after the plan was read (no conflict shown,
or more than were shown), the undo refuses them, changes nothing, and the dialog reads the plan
again, says so and asks again.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, ProgressBar, Select, Static

from patron_tui.textsafe import visible

ANSWER = "undo"
CONFLICT_ROWS = 500   # listed at most; the plan line says how many there are
CHOICES = [
    (Content("Skip them: leave those rows as they are now"), "skip"),
    (Content("Overwrite them: put the run's before-images back"), "overwrite"),
]


def _value(value: object) -> str:
    if value is None:
        return "(blank)"
    if isinstance(value, dict) and "$hex" in value:
        return "(binary)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "(binary)"
    return visible(value) or "(blank)"


def plan_lines(plan) -> list[str]:
    """The plan in words (plain text)."""
    lines = [f"Run {plan.run_id} · {plan.kind or '?'} · {visible(plan.title)} · {plan.status}"]
    if plan.refusal:
        return [*lines, visible(plan.refusal)]
    for label, counts in (("Re-insert", plan.reinsert), ("Delete", plan.delete), ("Restore", plan.restore)):
        if counts:
            lines.append(f"{label}: " + ", ".join(f"{n:,} row{'s' if n != 1 else ''} of {visible(t)}"
                                                  for t, n in sorted(counts.items())))
    if len(lines) == 1:
        lines.append("Nothing to change: every row is already as it was before the run.")
    if plan.conflicts:
        n = len(plan.conflicts)
        lines.append(f"{n:,} row{'s' if n != 1 else ''} changed again by a later run (below): "
                     "skip or overwrite them.")
    else:
        lines.append("No row was changed again by a later run.")
    return lines


def conflict_cells(c) -> tuple[Text, Text, Text, Text]:
    """(table and key, patron, what the run left -> now, the later run) of one conflict."""
    where = Text(f"{visible(c.table)} {visible(c.key)}", no_wrap=True, overflow="ellipsis")
    who = " ".join(x for x in (c.barcode and visible(c.barcode), c.name and visible(c.name)) if x)
    if c.patron_id is not None and not who:
        who = f"#{c.patron_id}"
    if c.fields:
        change = "; ".join(f"{visible(f)}: {_value(left)} -> {_value(now)}" for f, left, now in c.fields[:3])
    else:
        change = {"row_gone": "deleted since", "key_taken": "its id is taken again",
                  "dependants": "has dependants added since"}.get(c.reason, "changed again")
    later = (f"run {c.later_run_id} {visible(c.later_run_title or '')}".strip()
             if c.later_run_id is not None else "-")
    return (where, Text(who or "-", no_wrap=True, overflow="ellipsis"),
            Text(change, no_wrap=True, overflow="ellipsis"), Text(later, no_wrap=True, overflow="ellipsis"))


def conflict_text(c) -> str:
    """One conflict in full: which row, why, and each value the run left against the value now."""
    text = visible(c.describe())
    if c.fields:
        text += " · " + "; ".join(f"{visible(f)}: run left {_value(left)}, now {_value(now)}"
                                  for f, left, now in c.fields[:5])
    return text


class UndoScreen(ModalScreen["int | None"]):
    """Undo one run (see the module doc); returns the undo run's id, or None."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    UndoScreen { align: center middle; }
    UndoScreen > Vertical {
        width: 78; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    UndoScreen #undo-plan { height: auto; }
    UndoScreen #undo-conflicts { height: auto; max-height: 8; }
    UndoScreen #undo-conflict-detail { height: auto; max-height: 3; color: $foreground-muted; }
    UndoScreen #undo-choice-row { height: 1; margin: 0 0 1 0; }
    UndoScreen #undo-choice-row Label { width: 11; }
    UndoScreen #undo-choice { width: 1fr; }
    UndoScreen #undo-confirm { margin: 0 0 1 0; width: 30; background: $boost; }
    UndoScreen ProgressBar { height: 1; }
    UndoScreen #undo-status { height: auto; color: $foreground-muted; }
    """

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.plan = None
        self.handle = None
        self._timer = None
        self._started = 0.0
        self._asked_again = ""   # why the plan was read again (an undo refused for new conflicts)

    def compose(self) -> ComposeResult:
        with Vertical(id="undo-frame"):
            yield Static(Content(f"Reading what undoing run {self.run_id} would do…"), id="undo-plan")
            yield DataTable(cursor_type="row", zebra_stripes=True, id="undo-conflicts")
            yield Static(Content(""), id="undo-conflict-detail")
            with Horizontal(id="undo-choice-row"):
                yield Label(Content("Conflicts"))
                yield Select(CHOICES, value="skip", allow_blank=False, id="undo-choice", compact=True)
            yield Label(Content(f"Type {ANSWER} and Enter to undo the run:"), id="undo-ask")
            yield Input(id="undo-confirm", compact=True)
            yield ProgressBar(id="undo-progress", show_eta=False)
            yield Static(Content("Esc cancels"), id="undo-status")

    def on_mount(self) -> None:
        self.query_one("#undo-frame").border_title = Content(f"Undo run {self.run_id}")
        table = self.query_one("#undo-conflicts", DataTable)
        for label, width in (("Row", 11), ("Patron", 15), ("Run left -> now", 26), ("Later run", 14)):
            table.add_column(label, width=width)
        for wid in ("#undo-conflicts", "#undo-conflict-detail", "#undo-choice-row", "#undo-ask", "#undo-confirm",
                    "#undo-progress"):
            self.query_one(wid).display = False
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="undo-plan")
    def load(self) -> None:
        from patron_tui.services.permissions import undo_refusal
        from patron_tui.services.undo import plan_undo

        conn = self.app.store.connect()
        try:
            plan = plan_undo(conn, self.run_id)
            denied = undo_refusal(conn, self.app.store.operator, self.run_id)
        finally:
            conn.close()
        self.app.call_from_thread(self.show_plan, plan)
        if denied and not plan.refusal:
            self.app.call_from_thread(self.refused, denied)

    def show_plan(self, plan) -> None:
        self.plan = plan
        self.query_one("#undo-plan", Static).update(Content("\n".join(plan_lines(plan))))
        if plan.refusal:
            self.set_status("This run cannot be undone. Esc closes.")
            return
        if plan.conflicts:
            table = self.query_one("#undo-conflicts", DataTable)
            table.clear()
            for c in plan.conflicts[:CONFLICT_ROWS]:
                table.add_row(*conflict_cells(c))
            table.display = True
            self.query_one("#undo-conflict-detail").display = True
            self.show_conflict(0)
            self.query_one("#undo-choice-row").display = True
        self.query_one("#undo-ask").display = True
        confirm = self.query_one("#undo-confirm", Input)
        confirm.display = True
        again, self._asked_again = self._asked_again, ""
        if plan.conflicts:
            self.query_one("#undo-choice", Select).focus()
            self.set_status(f"{again}Choose what happens to the conflicts, Tab, type undo, Enter · Esc cancels")
        else:
            confirm.focus()
            self.set_status(f"{again}The undo is one transaction and a run of its own (it can be undone)"
                            " · Esc cancels")

    def show_conflict(self, index: int | None) -> None:
        """The highlighted conflict in full: its values are cut short in the table."""
        plan = self.plan
        if plan is None or index is None or not 0 <= index < len(plan.conflicts):
            return
        self.query_one("#undo-conflict-detail", Static).update(Content(conflict_text(plan.conflicts[index])))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "undo-conflicts":
            self.show_conflict(event.cursor_row)

    def set_status(self, text: str) -> None:
        self.query_one("#undo-status", Static).update(Content(text))

    @property
    def on_conflict(self) -> str:
        value = self.query_one("#undo-choice", Select).value
        return value if value in ("skip", "overwrite") else "skip"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.plan is None or self.plan.refusal or self.handle is not None:
            return
        if event.value.strip().lower() != ANSWER:
            event.input.value = ""
            self.notify(f"Type {ANSWER} to undo the run; nothing was done.", severity="warning", markup=False)
            return
        event.input.disabled = True
        self.query_one("#undo-choice", Select).disabled = True
        self.set_status("Starting the undo…")
        # the choice is for the conflicts shown; none shown: a conflict found by the run refuses it
        shown = self.plan.conflicts
        self.start(self.on_conflict if shown else "refuse", {(c.table, c.key) for c in shown})

    @work(thread=True, exclusive=True, exit_on_error=False, group="undo-start")
    def start(self, on_conflict: str, accepted: set[tuple[str, str]] | None = None) -> None:
        from patron_tui.services.permissions import PermissionDenied
        from patron_tui.services.undo import UndoRefused, start_undo

        engine = self.app.engine
        if engine is None:
            self.app.call_from_thread(self.refused, "The run engine is not running: nothing was undone.")
            return
        try:
            handle = start_undo(engine, self.app.store, self.app.store.operator, self.run_id,
                                on_conflict=on_conflict, accepted=accepted)
        except (UndoRefused, PermissionDenied) as exc:
            self.app.call_from_thread(self.refused, str(exc))
            return
        self.app.call_from_thread(self.running, handle)

    def refused(self, text: str) -> None:
        self.query_one("#undo-plan", Static).update(Content(visible(text)))
        for wid in ("#undo-conflicts", "#undo-conflict-detail", "#undo-choice-row", "#undo-ask", "#undo-confirm"):
            self.query_one(wid).display = False
        self.set_status("Nothing was undone. Esc closes.")

    def running(self, handle) -> None:
        self.handle = handle
        self._started = time.monotonic()
        self.query_one("#undo-progress").display = True
        self.set_status(f"Run {handle.run_id}: {visible(handle.title)} running…")
        self._timer = self.set_interval(0.1, self.poll)

    def poll(self) -> None:
        handle = self.handle
        if handle is None:
            return
        bar = self.query_one("#undo-progress", ProgressBar)
        elapsed = f"{time.monotonic() - self._started:.1f}"
        if not handle.finished:
            bar.update(total=handle.total or None, progress=handle.done)
            self.set_status(f"Run {handle.run_id} {handle.status.value}: step {handle.done:,}"
                            f"{f' of {handle.total:,}' if handle.total else ''} · {elapsed} s · Esc cancels")
            return
        if self._timer is not None:
            self._timer.stop()
        if handle.status.value == "failed" and (handle.summary or {}).get("conflicts_refused"):
            self.ask_again(handle)
            return
        bar.update(total=1, progress=1)
        if handle.status.value == "succeeded":
            self.notify(f"Run {handle.run_id}: undid run {self.run_id}.", markup=False)
        else:
            self.notify(visible(f"Run {handle.run_id} {handle.status.value}: {handle.error or ''}"),
                        severity="error", markup=False, timeout=10)
        self.dismiss(handle.run_id)

    def ask_again(self, handle) -> None:
        """The undo found rows changed again that nobody chose for, and changed nothing: read
        the plan again (they are listed) and ask."""
        self.notify(visible(f"Run {handle.run_id}: {handle.error}"), severity="warning", markup=False, timeout=10)
        self._asked_again = visible(f"Run {handle.run_id}: {handle.error} ")
        self.handle = None
        self.plan = None
        self.query_one("#undo-progress").display = False
        confirm = self.query_one("#undo-confirm", Input)
        confirm.value = ""
        confirm.disabled = False
        self.query_one("#undo-choice", Select).disabled = False
        self.query_one("#undo-plan", Static).update(Content(f"Reading what undoing run {self.run_id} would do…"))
        self.set_status(self._asked_again)
        self.load()

    def action_close(self) -> None:
        if self.handle is not None and not self.handle.finished:
            self.handle.cancel()   # one transaction: cancelled means rolled back
            self.set_status("Cancelling: the undo is rolled back…")
            return
        if self.handle is None:
            self.dismiss(None)
