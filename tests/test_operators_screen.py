"""Pilot at 80x24, keyboard only: the Operators screen (Home → o) adds, edits and removes an
operator (the database read back after each), refuses to remove or demote the last district
administrator with the service's sentence, and Home's "Back up now" (b) writes a copy that
passes PRAGMA integrity_check."""

from __future__ import annotations

import sqlite3

import pytest
from textual.widgets import DataTable

from patron_tui.services import operators as ops
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.audit import AuditEntryScreen, AuditScreen
from patron_tui.ui.screens.home import HomeScreen
from patron_tui.ui.screens.operators import OperatorFormScreen, OperatorsScreen
from patron_tui.ui.screens.query_dialogs import ConfirmScreen

from tests.pilot import in_every_theme, settle, wait_until


def operator(store, login: str) -> ops.Operator | None:
    conn = store.connect()
    try:
        return ops.get_operator(conn, login)
    finally:
        conn.close()


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def open_operators(app, pilot) -> OperatorsScreen:
    await settle(app, pilot)
    assert isinstance(app.screen, HomeScreen)
    await pilot.press("o")
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, OperatorsScreen)
    await wait_until(app, pilot, lambda: screen.operators)
    return screen


async def highlight(app, pilot, screen: OperatorsScreen, login: str) -> None:
    table = screen.query_one(DataTable)
    assert app.focused is table
    await pilot.press("home")
    for _ in range(len(screen.operators)):
        if screen.current().login_name == login:
            return
        await pilot.press("down")
    assert screen.current().login_name == login


async def test_add_edit_remove_an_operator_by_keyboard(small_store):
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_operators(app, pilot)
        assert [o.login_name for o in screen.operators] == ["tester"]
        assert "you may change operators" in screen.status

        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        assert isinstance(form, OperatorFormScreen)
        assert app.focused.id == "op-login"
        await pilot.press(*"clerk", "tab", *"Clerk [b]Kent", "tab")
        assert app.focused.id == "op-level"
        await pilot.press("ctrl+u", "3", "tab")
        assert app.focused.id == "op-manage_patrons"
        await pilot.press("space", "tab", "tab")
        assert app.focused.id == "op-reset_passwords"
        await pilot.press("space", "tab")
        assert app.focused.id == "op-save"
        await pilot.press("enter")
        await wait_until(app, pilot, lambda: app.screen is screen and "added" in screen.status,
                         why=lambda: screen.status)
        added = operator(small_store, "clerk")
        assert added is not None and added.display_name == "Clerk [b]Kent" and added.security_level == 3
        assert (added.manage_patrons, added.batch_tools, added.reset_passwords) == (True, False, True)
        await wait_until(app, pilot, lambda: len(screen.operators) == 2)
        assert "Clerk [b]Kent" in screen_text(app)        # data, never markup

        # edit: Enter on the row, the login name is not editable; level 4 and batch tools
        await highlight(app, pilot, screen, "clerk")
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, OperatorFormScreen) and app.focused.id == "op-name"
        assert app.screen.query_one("#op-login").disabled
        await pilot.press("tab", "ctrl+u", "4", "tab", "tab")
        assert app.focused.id == "op-batch_tools"
        await pilot.press("space", "ctrl+s")
        await wait_until(app, pilot, lambda: app.screen is screen and "changed" in screen.status,
                         why=lambda: screen.status)
        edited = operator(small_store, "clerk")
        assert edited.security_level == 4 and edited.display_name == "Clerk [b]Kent"
        assert (edited.manage_patrons, edited.batch_tools, edited.reset_passwords) == (True, True, True)

        # a level that is not a number is said in the form, nothing saved
        await pilot.press("e")
        await settle(app, pilot)
        await pilot.press("tab", "ctrl+u", "-", "ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, OperatorFormScreen) and app.screen.problem.startswith("Security level")
        await pilot.press("escape")
        await settle(app, pilot)
        assert operator(small_store, "clerk").security_level == 4

        # remove: the login name typed; a wrong answer does nothing
        await highlight(app, pilot, screen, "clerk")
        await pilot.press("d")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press(*"clark", "enter")
        await settle(app, pilot)
        assert operator(small_store, "clerk") is not None
        await pilot.press("d")
        await settle(app, pilot)
        await pilot.press(*"clerk", "enter")
        await wait_until(app, pilot, lambda: "removed" in screen.status, why=lambda: screen.status)
        assert operator(small_store, "clerk") is None
        await wait_until(app, pilot, lambda: len(screen.operators) == 1)
        await pilot.press("escape")                      # back to Home
        await settle(app, pilot)
        assert isinstance(app.screen, HomeScreen)


async def test_the_last_district_administrator_can_be_neither_removed_nor_demoted(small_store):
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_operators(app, pilot)
        await highlight(app, pilot, screen, "tester")
        await pilot.press("d")
        await settle(app, pilot)
        await pilot.press(*"tester", "enter")
        await wait_until(app, pilot, lambda: "last district administrator" in screen.status,
                         why=lambda: screen.status)
        assert screen.status.startswith("Nothing was changed:")
        assert any("last district administrator" in n.message for n in app._notifications)
        await pilot.press("e")
        await settle(app, pilot)
        await pilot.press("tab", "ctrl+u", "5", "ctrl+s")
        await wait_until(app, pilot, lambda: "make another operator a district administrator first" in screen.status,
                         why=lambda: screen.status)
    kept = operator(small_store, "tester")
    assert kept is not None and kept.security_level == 0


async def test_back_up_now_from_home_writes_a_sound_copy(small_store):
    folder = small_store.path.parent / "backups"
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, HomeScreen)
        await pilot.press("b")
        await wait_until(app, pilot, lambda: any("Backup written" in n.message for n in app._notifications))
        said = next(n.message for n in app._notifications if "Backup written" in n.message)
    copies = list(folder.glob("*.db"))
    assert len(copies) == 1 and str(copies[0]) in said
    conn = sqlite3.connect(copies[0])
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM patrons WHERE barcode LIKE 'P%'").fetchone()[0] == 12
    finally:
        conn.close()


async def test_audit_and_operators_fit_80x24_in_every_theme(small_store):
    # one keyboard walkthrough in the default theme; each screen's fit assertions run again in
    # all four themes through in_every_theme (this was four walkthroughs, one per theme)
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_operators(app, pilot)

        def list_fits():
            assert all(len(line) <= 80 for line in screen_text(app).splitlines())

        list_fits()
        await in_every_theme(app, pilot, list_fits)
        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        assert isinstance(form, OperatorFormScreen)

        def form_fits():
            for wid in ("#op-login", "#op-reset_passwords", "#op-save"):
                region = form.query_one(wid).region
                assert region.right <= 80 and region.bottom <= 24, wid

        form_fits()
        await in_every_theme(app, pilot, form_fits)
        await pilot.press("escape", "escape")
        await settle(app, pilot)
        await pilot.press("a")
        await settle(app, pilot)
        audit = app.screen
        assert isinstance(audit, AuditScreen)
        await wait_until(app, pilot, lambda: audit.loaded)
        table = audit.query_one("#audit-entries")

        def audit_fits():
            assert table.region.height >= 10 and table.region.bottom <= 24

        audit_fits()
        await in_every_theme(app, pilot, audit_fits)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, AuditEntryScreen)

        def entry_fits():
            assert app.screen.query_one("#audit-changes").region.right <= 80

        entry_fits()
        await in_every_theme(app, pilot, entry_fits)
