"""Undo needs the permission of the run kind it takes back (services/permissions.require_undo):
batch tools for a utility run, what the undone run needed for an undo of an undo, security level
0 for a journal pruning. Refused from the CLI (exit 2, the sentence) and the console (the Undo
dialog shows the sentence), and nothing changes; a district administrator (level 0) may."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from patron_tui.cli import main
from patron_tui.runs import RunEngine
from patron_tui.services.permissions import PermissionDenied, require_undo, undo_permission
from patron_tui.services.undo import start_undo
from patron_tui.services.utilities import Selections, preview, start_utility
from patron_tui.store import ChangesetWriter, runlog, utc_now
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.undo_dialog import UndoScreen

from tests.conftest import patron_where
from tests.pilot import settle, wait_until
from tests.test_job_manager_runs import highlight, open_manager
from tests.test_utilities_screen import make_district


def add_operator(store, login: str, **perms) -> None:
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("operators", {"login_name": login, "display_name": login, "created_at": utc_now(),
                               "security_level": perms.pop("security_level", 5), **perms})
    conn.close()


def status_run(store) -> int:
    """Change Patron Status of grade 9 to Inactive, run by the district administrator 'tester'."""
    sel = Selections(grades=["9"])
    conn = store.connect()
    try:
        pv = preview(conn, "change-patron-status", sel, {"new_status": "Inactive"}, "tester")
    finally:
        conn.close()
    engine = RunEngine(store)
    try:
        handle = start_utility(engine, store, "tester", "change-patron-status", sel, {"new_status": "Inactive"},
                               fingerprint=pv.fingerprint)
        handle.wait(60)
    finally:
        engine.shutdown()
    assert handle.status.value == "succeeded", handle.error
    return handle.run_id


def statuses(store) -> list[str]:
    return [patron_where(store, barcode=b)["status"] for b in ("B0", "B1", "B2")]


@pytest.fixture
def store(tmp_path):
    store = make_district(tmp_path)
    add_operator(store, "clerk")                                        # no batch tools
    add_operator(store, "admin", security_level=0)
    return store


def as_login(monkeypatch, login: str) -> None:
    monkeypatch.setattr("patron_tui.store.identity.current_login", lambda: login)
    monkeypatch.setattr("patron_tui.store.current_login", lambda: login)


def test_the_cli_refuses_an_undo_without_the_run_kinds_permission(store, monkeypatch, capsys):
    run_id = status_run(store)
    assert statuses(store) == ["Inactive", "Inactive", "Active"]
    as_login(monkeypatch, "clerk")
    code = main(["undo", str(run_id), "--db", str(store.path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert "'clerk'" in err and '"may use batch tools"' in err and "Nothing was undone" in err
    assert statuses(store) == ["Inactive", "Inactive", "Active"]
    conn = store.connect()
    try:
        assert conn.execute("SELECT count(*) FROM runs WHERE kind = 'undo'").fetchone()[0] == 0
    finally:
        conn.close()
    # the dry run (it changes nothing) is not refused
    assert main(["undo", str(run_id), "--db", str(store.path), "--dry-run"]) == 0
    capsys.readouterr()
    # a district administrator may
    as_login(monkeypatch, "admin")
    code = main(["undo", str(run_id), "--db", str(store.path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert statuses(store) == ["Active", "Active", "Active"]


def test_an_undo_of_an_undo_needs_what_the_undone_run_needed(store):
    run_id = status_run(store)
    engine = RunEngine(store)
    try:
        handle = start_undo(engine, store, "tester", run_id)
        handle.wait(60)
        assert handle.status.value == "succeeded", handle.error
        with pytest.raises(PermissionDenied, match="may use batch tools"):
            start_undo(engine, store, "clerk", handle.run_id)
    finally:
        engine.shutdown()
    conn = store.connect()
    try:
        assert undo_permission(conn, handle.run_id) == ("utility", "batch_tools")
        require_undo(conn, "admin", handle.run_id)
        # the kinds: imports and conflicts, scheduled patron updates, batch tools, a level-0 rest
        made = {kind: runlog.create_run(conn, kind=kind, title=kind, operator="tester")
                for kind in ("import", "job", "conflict", "batch_update", "queue_fill", "journal_prune")}
        got = {kind: undo_permission(conn, rid)[1] for kind, rid in made.items()}
        assert got == {"import": "import_patrons", "job": "manage_jobs", "conflict": "import_patrons",
                       "batch_update": "batch_tools", "queue_fill": "batch_tools", "journal_prune": None}
        add_operator(store, "manager", may_manage_district_patrons=1, may_use_batch_tools=1)
        with pytest.raises(PermissionDenied, match=r"security level 0 \(district administrator\)"):
            require_undo(conn, "manager", made["journal_prune"])
        require_undo(conn, "manager", made["import"])
        require_undo(conn, "admin", made["journal_prune"])
    finally:
        conn.close()
    assert statuses(store) == ["Active", "Active", "Active"]


async def test_the_undo_dialog_shows_the_refusal_and_changes_nothing(store):
    run_id = status_run(store)
    app = make_app(store.path, operator="clerk")
    async with app.run_test(size=(80, 24)) as pilot:
        manager = await open_manager(app, pilot)
        table = manager.query_one("#manager-runs", DataTable)
        await highlight(app, pilot, table, run_id)
        await pilot.press("u")
        await wait_until(app, pilot, lambda: isinstance(app.screen, UndoScreen) and app.screen.plan is not None)
        dialog = app.screen
        await wait_until(app, pilot, lambda: "may use batch tools" in str(dialog.query_one("#undo-plan").render()))
        text = str(dialog.query_one("#undo-plan").render())
        assert f"undo run {run_id}" in text and "'clerk'" in text
        assert not dialog.query_one("#undo-confirm").display
        assert "Nothing was undone" in str(dialog.query_one("#undo-status").render())
        await pilot.press(*"undo", "enter")             # nothing to type into: nothing happens
        await settle(app, pilot)
        assert dialog.handle is None
        await pilot.press("escape")
        await settle(app, pilot)
    assert statuses(store) == ["Inactive", "Inactive", "Active"]
    # a district administrator undoes it from the same dialog
    app = make_app(store.path, operator="admin")
    async with app.run_test(size=(80, 24)) as pilot:
        manager = await open_manager(app, pilot)
        table = manager.query_one("#manager-runs", DataTable)
        await highlight(app, pilot, table, run_id)
        await pilot.press("u")
        await wait_until(app, pilot, lambda: isinstance(app.screen, UndoScreen) and app.screen.plan is not None)
        await settle(app, pilot)
        assert app.screen.query_one("#undo-confirm").display
        await pilot.press(*"undo", "enter")
        await wait_until(app, pilot, lambda: not isinstance(app.screen, UndoScreen))
        await settle(app, pilot)
    assert statuses(store) == ["Active", "Active", "Active"]
