"""Permission refusals in the console (issue 9), at 80x24 by keyboard: the console's operator is
the login name (`store.identity.current_login`, monkeypatched here, so the app is built exactly
as `patron-tui` builds it); for an operator lacking each permission, each guarded action is
refused with a sentence naming what is missing, and the database is read back unchanged.

Guarded: managing operators (security level 0), adding or running a scheduled job and backing
up ("manage patrons for the district"), batch update PROCESS and a utility run ("may use batch
tools"), Reset Patron Accounts ("may reset patron passwords")."""

from __future__ import annotations

import pytest
from textual.widgets import OptionList

from patron_tui.services import operators as ops
from patron_tui.services.jobs import job_runs
from patron_tui.store import Store
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.home import HomeScreen
from patron_tui.ui.screens.jobs import JobsScreen
from patron_tui.ui.screens.operators import OperatorsScreen
from patron_tui.ui.screens.query_dialogs import ConfirmScreen

from tests.conftest import patron_where
from tests.jobs_helpers import add_job, make_store, write_files
from tests.pilot import settle, wait_until
from tests.test_batch_screen import choose_medium_db, open_set_and_batch, preview, profiles, rows, text_of
from tests.test_batch_screen import store  # noqa: F401  (the batch district; "clerk" may not use batch tools)
from tests.test_utilities_screen import choose, make_district, open_utility, tab_to
from tests.utilities_helpers import add_operator


@pytest.fixture
def login(monkeypatch):
    """Be this Unix login for the app built next (Store asks store.identity.current_login)."""
    def be(name: str) -> None:
        monkeypatch.setattr("patron_tui.store.current_login", lambda: name)
    return be


def console(db: Store):
    app = make_app(db.path)            # no operator given: the login name is the operator
    return app


def all_operators(db: Store) -> list[ops.Operator]:
    conn = db.connect()
    try:
        return ops.list_operators(conn)
    finally:
        conn.close()


def notes(app) -> str:
    return "\n".join(n.message for n in app._notifications)


async def test_managing_operators_needs_security_level_0(tmp_path, login):
    db = make_district(tmp_path)
    add_operator(db, "deputy", level=1, batch=True, reset=True)   # every flag, but not level 0
    before = all_operators(db)
    login("deputy")
    app = console(db)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.store.operator == "deputy"
        await settle(app, pilot)
        await pilot.press("o")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, OperatorsScreen)
        await wait_until(app, pilot, lambda: screen.operators)
        assert "you may view operators, not change them" in screen.status
        for key in ("a", "e", "enter", "d"):
            await pilot.press(key)
            await settle(app, pilot)
            assert app.screen is screen, key                 # no form, no confirmation
            assert "security level 0 (district administrator)" in screen.status, key
            assert "deputy" in screen.status and "may not manage operators" in screen.status
    assert all_operators(db) == before


async def test_jobs_need_manage_patrons_for_the_district(tmp_path, login):
    db = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ["D1,B1,Able,Ann,HS"])
    add_job(db, "Students", path=csv_path, props=props)
    add_operator(db, "clerk", level=5, batch=True, reset=True)     # not "manage patrons"
    login("clerk")
    app = console(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("4")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        await pilot.press("a")                                # add a scheduled job
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        assert "manage patrons for the district" in notes(app)
        ol = app.screen.query_one("#jobs-list", OptionList)
        for _ in range(ol.option_count):
            if (ol.get_option_at_index(ol.highlighted).id or "").startswith("job-"):
                break
            await pilot.press("down")
        count = len(app._notifications)
        await pilot.press("r")                                # run it now
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        assert len(app._notifications) > count and "manage patrons for the district" in notes(app)
    conn = db.connect()
    try:
        assert job_runs(conn) == []
    finally:
        conn.close()
    assert patron_where(db, district_id="D1") is None


async def test_batch_update_process_needs_batch_tools(store, login):  # noqa: F811
    before = profiles(store)
    login("clerk")
    app = console(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = await open_set_and_batch(app, pilot)
        await choose_medium_db(app, pilot, screen)
        await preview(app, pilot)
        await pilot.press("ctrl+r")
        await wait_until(app, pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press(*"8", "enter")
        await wait_until(app, pilot, lambda: "may use batch tools" in text_of(app, "#batch-error"))
        assert "nothing was changed" in text_of(app, "#batch-error")
    assert profiles(store) == before
    assert rows(store, "SELECT count(*) AS n FROM runs WHERE kind = 'batch_update'")[0]["n"] == 0


async def test_a_utility_run_needs_batch_tools(tmp_path, login):
    db = make_district(tmp_path)
    add_operator(db, "aide", level=5, batch=False)
    login("aide")
    app = console(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        screen = await open_utility(app, pilot, "stat", "Change Patron Status")
        await tab_to(app, pilot, "sel-statement")
        await pilot.press(*"grade=9")
        await pilot.press("f3")
        await choose(app, pilot, "inact")
        await pilot.press("f5")
        await wait_until(app, pilot, lambda: "may use batch tools" in screen._last_problem,
                         why=lambda: screen._last_problem)
        assert "aide" in screen._last_problem
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert screen.previewed is None and screen.handle is None
    assert patron_where(db, barcode="B0")["status"] == "Active"
    assert rows(db, "SELECT count(*) AS n FROM runs WHERE kind LIKE 'utility%'")[0]["n"] == 0


async def test_reset_patron_accounts_needs_the_password_permission(tmp_path, login):
    db = make_district(tmp_path)
    add_operator(db, "aide", level=5, batch=True, reset=False)
    before = patron_where(db, barcode="B0")
    login("aide")
    app = console(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        screen = await open_utility(app, pilot, "reset", "Reset Patron Accounts")
        await tab_to(app, pilot, "sel-statement")
        await pilot.press(*"grade=9")
        await pilot.press("f3")
        await choose(app, pilot, "last")                  # Reset password by: Last name
        await pilot.press("f5")
        await wait_until(app, pilot, lambda: "may reset patron passwords" in screen._last_problem,
                         why=lambda: screen._last_problem)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert screen.previewed is None and screen.handle is None
    assert patron_where(db, barcode="B0") == before


async def test_backup_needs_manage_patrons_for_the_district(tmp_path, login):
    db = make_district(tmp_path)
    add_operator(db, "aide", level=5, batch=True, reset=True)
    login("aide")
    app = console(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, HomeScreen)
        await pilot.press("b")
        await wait_until(app, pilot, lambda: "No backup was made" in notes(app))
        said = notes(app)
        assert "aide" in said and "manage patrons for the district" in said
    assert not (db.path.parent / "backups").exists()


async def test_importing_a_file_needs_manage_patrons(tmp_path, login, monkeypatch):
    """The Import screen refuses an operator without "manage patrons for the district", now and
    in the background: the sentence names it, and no run is started or queued."""
    from textual.widgets import Static

    from tests.conftest import district
    from tests.test_import_screen import files, open_import

    db = district(tmp_path / "district.db", [
        {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS"}],
        sites=(("HS", "High School"),))
    add_operator(db, "clerk", level=5, batch=True)
    monkeypatch.chdir(tmp_path)
    csv_path, _props = files(tmp_path)
    before = patron_where(db, district_id="D1")
    login("clerk")
    app = console(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await open_import(app, pilot)
        screen = app.screen
        error = screen.query_one("#import-error", Static)
        await pilot.press(*csv_path.name, "enter")   # checked; the sibling .properties is filled in
        await settle(app, pilot)
        for key in ("ctrl+s", "ctrl+b"):
            screen.set_error("")
            await pilot.press(key)
            await wait_until(app, pilot, lambda: "may not import patron files" in str(error.render()),
                             why=lambda: str(error.render()))
            text = str(error.render())
            assert "'clerk'" in text and "manage patrons for the district" in text, key
            assert app.screen is screen
    conn = db.connect()
    try:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    finally:
        conn.close()
    assert patron_where(db, district_id="D1") == before
