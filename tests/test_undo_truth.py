"""An undo tells the truth about conflicts that appear while it runs, and its run row exists
before it plans (issue 14, item 6).

A conflict is made at one exact moment: `undo.plan_undo` is wrapped so that, right after the
undo's plan is made (and before its write transaction), another run changes a row the undo
would put back. Counting the calls pins the moment: the dialog's own plan is the first call.
No test sleeps: the plan that must be seen "in progress" blocks on an Event.

- Without --skip-conflicts (the CLI) or with no conflicts shown (the Undo dialog), such a
  conflict refuses the undo with the sentence a conflict found before gets, changes nothing,
  and the undo's run row says failed, not succeeded; the dialog then lists the conflicts and
  asks again.
- With --skip-conflicts the undo leaves that row as it is now and counts it.
- With skip chosen for the conflicts the operator saw, a conflict he did not see refuses.
- While the undo plans, its run row is already in the runs table (the Job Manager lists it),
  and an undo nobody wrote across plans once (the check in its transaction is a journal look).
- A refused undo's summary says it undid nothing; of two undos of one run the second to commit
  is refused; conflicts on rows the run added keep their names and values.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services import undo as U
from patron_tui.services.run_history import list_runs
from patron_tui.store import Store
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.undo_dialog import UndoScreen

from tests.conftest import district, run_row
from tests.pilot import settle, wait_until
from tests.test_cli_audit import cli, email_run, emails

SENTENCE = ("1 row(s) were changed again by a later run; nothing was undone. Run again with --skip-conflicts "
            "(leave them as they are) or --overwrite (put them back).")


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> Store:
    s = district(tmp_path / "d.db", [
        {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS",
         "email": "ann@old"},
        {"district_id": "D2", "barcode": "B2", "last_name": "Baker", "first_name": "Bob", "site": "ELM",
         "email": "bob@old"},
    ])
    monkeypatch.setattr("patron_tui.store.identity.current_login", lambda: "tester")
    monkeypatch.setattr("patron_tui.store.current_login", lambda: "tester")
    return s


def change_after_plan(monkeypatch, store: Store, changes: dict[str, str], *, call: int) -> dict:
    """Wrap plan_undo: right after its `call`-th call returns, a later run writes `changes`."""
    real = U.plan_undo
    seen = {"calls": 0, "later": None, "real": real}

    def planned(conn, run_id, **kw):
        plan = real(conn, run_id, **kw)
        seen["calls"] += 1
        if seen["calls"] == call:
            seen["later"] = email_run(store, changes, "Later")
        return plan

    monkeypatch.setattr(U, "plan_undo", planned)
    return seen


def undo(store: Store, run: int, **kw):
    """Undo `run` as "tester" on an engine of its own, to its end: the undo's handle."""
    engine = RunEngine(store, pool_size=1)
    try:
        handle = U.start_undo(engine, store, "tester", run, **kw)
        handle.wait()
        return handle
    finally:
        engine.shutdown(cancel_running=False)


def undo_runs(store: Store, undoes: int) -> list[dict]:
    conn = sqlite3.connect(store.path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(
            "SELECT * FROM runs WHERE kind = 'undo' AND json_extract(params, '$.undoes') = ? ORDER BY id",
            (undoes,))]
    finally:
        conn.close()


def test_a_conflict_made_after_the_plan_refuses_the_cli_undo_with_the_same_sentence(store, monkeypatch, capsys):
    run = email_run(store, {"B1": "a@1", "B2": "b@1"}, "Emails")
    seen = change_after_plan(monkeypatch, store, {"B1": "a@later"}, call=1)
    assert cli(store, "undo", str(run)) == 2
    err = capsys.readouterr().err
    assert seen["later"] is not None
    assert SENTENCE in err, err
    assert "Traceback" not in err
    # nothing changed: B2 (no conflict) is not put back either
    assert emails(store) == {"B1": "a@later", "B2": "b@1"}
    (row,) = undo_runs(store, run)
    assert row["status"] == "failed" and "changed again by a later run" in row["error"]
    assert json.loads(row["summary"])["conflicts_refused"] == 1
    # a conflict found before the undo starts gets the very same sentence
    monkeypatch.setattr(U, "plan_undo", seen["real"])
    assert cli(store, "undo", str(run)) == 2
    assert SENTENCE in capsys.readouterr().err


def test_skip_conflicts_skips_a_conflict_made_after_the_plan_and_counts_it(store, monkeypatch, capsys):
    run = email_run(store, {"B1": "a@1", "B2": "b@1"}, "Emails")
    seen = change_after_plan(monkeypatch, store, {"B1": "a@later"}, call=1)
    assert cli(store, "undo", str(run), "--skip-conflicts", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert seen["later"] is not None
    assert result["status"] == "succeeded" and result["summary"]["conflicts"] == 1
    assert result["summary"]["restored"] == 1
    assert emails(store) == {"B1": "a@later", "B2": "bob@old"}


def test_a_conflict_the_operator_did_not_see_refuses_even_under_skip(store, monkeypatch):
    run = email_run(store, {"B1": "a@1", "B2": "b@1"}, "Emails")
    email_run(store, {"B1": "a@seen"}, "Seen")
    conn = store.connect()
    try:
        shown = U.plan_undo(conn, run)
    finally:
        conn.close()
    assert len(shown.conflicts) == 1
    change_after_plan(monkeypatch, store, {"B2": "b@unseen"}, call=1)
    handle = undo(store, run, on_conflict="skip", accepted={(c.table, c.key) for c in shown.conflicts})
    assert handle.status.value == "failed"
    assert handle.error == "1 row(s) were changed again by a later run; nothing was undone."
    assert emails(store) == {"B1": "a@seen", "B2": "b@unseen"}


def test_the_undo_run_row_exists_while_the_undo_plans(store, monkeypatch):
    run = email_run(store, {"B1": "a@1"}, "Emails")
    planning, release = threading.Event(), threading.Event()
    real = U.plan_undo
    calls = []

    def slow(conn, run_id, **kw):
        calls.append(run_id)
        planning.set()
        assert release.wait(60), "the test never released the plan"
        return real(conn, run_id, **kw)

    monkeypatch.setattr(U, "plan_undo", slow)
    engine = RunEngine(store, pool_size=1)
    got: dict = {}

    def start() -> None:
        try:
            got["handle"] = U.start_undo(engine, store, "tester", run)
        except BaseException as exc:   # reported below
            got["error"] = exc

    starter = threading.Thread(target=start)
    starter.start()
    try:
        assert planning.wait(60), "the undo never started planning"
        rows = undo_runs(store, run)      # another connection, while the plan is in progress
        conn = store.connect()
        try:
            listed = list_runs(conn, kinds=["undo"])
        finally:
            conn.close()
    finally:
        release.set()
        starter.join(60)
    try:
        assert "error" not in got, got.get("error")
        got["handle"].wait()
    finally:
        engine.shutdown(cancel_running=False)
    assert len(rows) == 1 and rows[0]["status"] in ("queued", "running"), rows
    assert [r["id"] for r in listed] == [rows[0]["id"]]
    assert got["handle"].run_id == rows[0]["id"]
    assert got["handle"].status.value == "succeeded", got["handle"].error
    assert emails(store) == {"B1": "ann@old", "B2": "bob@old"}
    # nobody wrote while it planned: the check in the write transaction did not plan again
    assert calls == [run]


async def test_the_undo_dialog_asks_again_when_a_conflict_appears_after_its_plan(store, monkeypatch):
    run = email_run(store, {"B1": "a@1", "B2": "b@1"}, "Emails")
    # call 1 is the dialog's own plan; call 2 is the one the undo makes once started
    seen = change_after_plan(monkeypatch, store, {"B1": "a@later"}, call=2)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = UndoScreen(run)
        app.push_screen(dialog)
        await wait_until(app, pilot, lambda: dialog.plan is not None)
        await settle(app, pilot)
        assert "No row was changed again" in str(dialog.query_one("#undo-plan").render())
        await pilot.press(*"undo", "enter")
        await wait_until(app, pilot, lambda: app.screen is dialog and dialog.handle is None
                         and dialog.plan is not None and bool(dialog.plan.conflicts),
                         why=lambda: f"the screen is {app.screen!r}, the undo runs: {undo_runs(store, run)}")
        await settle(app, pilot)
        assert seen["later"] is not None
        status = str(dialog.query_one("#undo-status").render())
        assert "1 row(s) were changed again by a later run; nothing was undone." in status, status
        assert "1 row changed again by a later run" in str(dialog.query_one("#undo-plan").render())
        assert emails(store) == {"B1": "a@later", "B2": "b@1"}
        (row,) = undo_runs(store, run)
        assert row["status"] == "failed"
        # asked again: the operator chooses skip (the default) and confirms
        assert dialog.query_one("#undo-choice").display
        await pilot.press("tab")
        await pilot.press(*"undo", "enter")
        await wait_until(app, pilot, lambda: app.screen is not dialog)
        await settle(app, pilot)
    assert emails(store) == {"B1": "a@later", "B2": "bob@old"}
    assert [r["status"] for r in undo_runs(store, run)] == ["failed", "succeeded"]


def test_rows_the_run_added_then_changed_or_deleted_are_conflicts_named_with_the_values_now(store):
    """The plan reads whole rows only of added rows a later run wrote (the rest: their ids)."""
    engine = RunEngine(store, pool_size=1)
    try:
        def add(ctx):
            with ctx.writer() as w:
                for i in range(3, 8):
                    w.insert("patrons", {"district_id": f"D{i}", "barcode": f"B{i}", "last_name": f"Last{i}",
                                         "first_name": "F", "site": "HS", "email": f"{i}@old",
                                         "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"})
            return {}
        added = engine.execute("test", "Add five", add)
        assert added.status.value == "succeeded", added.error

        def later(ctx):
            with ctx.writer() as w:
                pid = {b: i for b, i in w.conn.execute("SELECT barcode, id FROM patrons")}
                w.update("patrons", pid["B4"], {"email": "4@later"})
                w.delete("patrons", pid["B6"])
            return {}
        changed = engine.execute("test", "Later", later)
        assert changed.status.value == "succeeded", changed.error
    finally:
        engine.shutdown(cancel_running=False)
    conn = store.connect()
    try:
        plan = U.plan_undo(conn, added.run_id)
    finally:
        conn.close()
    assert plan.delete == {"patrons": 5}
    got = {c.barcode or c.key: (c.reason, c.fields, c.later_run_id) for c in plan.conflicts}
    assert got["B4"] == ("changed_later", [("email", "4@old", "4@later")], changed.run_id)
    (gone,) = [c for c in plan.conflicts if c.reason == "row_gone"]
    assert gone.later_run_id == changed.run_id and len(plan.conflicts) == 2
    assert next(c for c in plan.conflicts if c.barcode == "B4").name == "Last4, F"


def test_the_summary_of_a_refused_undo_says_nothing_was_undone(store, monkeypatch):
    from patron_tui.services.run_history import summary_lines

    run = email_run(store, {"B1": "a@1"}, "Emails")
    change_after_plan(monkeypatch, store, {"B1": "a@later"}, call=1)
    handle = undo(store, run)
    lines = summary_lines(run_row(store, handle.run_id))
    assert lines[0] == f"Did not undo run {run}: 1 row(s) were changed again by a later run; nothing was undone."
    assert not any("Undid" in line for line in lines)


def test_two_undos_of_one_run_the_second_to_commit_is_refused(store, monkeypatch):
    run = email_run(store, {"B1": "a@1"}, "Emails")
    real = U.plan_undo
    other: dict = {}

    def planned(conn, run_id, **kw):
        plan = real(conn, run_id, **kw)
        if not other:   # right after the first undo's plan, a second undo of the run commits
            other["planned"] = True   # (its own plan comes back here)
            other["handle"] = undo(store, run)
        return plan

    monkeypatch.setattr(U, "plan_undo", planned)
    first = undo(store, run)
    second = other["handle"]
    assert second.status.value == "succeeded", second.error
    assert first.status.value == "failed"
    assert first.error == (f"Run {run} (Emails) was already undone by run {second.run_id}; undo run "
                           f"{second.run_id} to bring its changes back, then it can be undone again.")
    assert emails(store) == {"B1": "ann@old", "B2": "bob@old"}


def test_the_cli_json_of_an_undo_refused_for_a_conflict_made_after_the_plan(store, monkeypatch, capsys):
    run = email_run(store, {"B1": "a@1", "B2": "b@1"}, "Emails")
    seen = change_after_plan(monkeypatch, store, {"B1": "a@later"}, call=1)
    assert cli(store, "undo", str(run), "--json") == 2
    out = json.loads(capsys.readouterr().out)
    (row,) = undo_runs(store, run)
    assert (out["refused"], out["undo_run_id"], out["status"]) == ("conflicts", row["id"], "failed")
    (conflict,) = out["conflicts"]
    assert (conflict["barcode"], conflict["later_run_id"], conflict["fields"]) == (
        "B1", seen["later"], [{"field": "email", "run_left": "a@1", "now": "a@later"}])
    assert emails(store) == {"B1": "a@later", "B2": "b@1"}
