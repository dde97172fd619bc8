"""Issue 14 item 9: a login may write only what its permissions allow. `protect` and
`prune-journal` used to succeed for a login that is not an operator and for a level-7 operator
with no permission at all. Every CLI command that writes is run here, table-driven, as both of
those logins: each is refused with exit code 2 and the sentence of services/permissions.py
naming what is missing, no "Traceback", and the database (every row of every table) and the
files beside it are exactly as before. The console's write actions that had no check (Protect
in a patron's detail, saving/freezing/deleting a query set) are refused the same way.

Not in the table, on purpose: `scheduler` and `run-due` only carry out what an operator with
the permission scheduled (a job) or queued (a background run, checked again at pick-up as the
operator who queued it), so the service login that runs them needs no permission of its own;
`check` (its run row is a report, no district data), `convert` and `summary --csv` / `query
--csv` (they write a file the login names, not the database), and reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from patron_tui.cli import main
from patron_tui.runs import RunEngine
from patron_tui.services import query_sets
from patron_tui.services.jobs import Job, save_job
from patron_tui.services.permissions import refusal, undo_refusal
from patron_tui.store import ChangesetWriter, utc_now

from tests.conftest import district, patron_where
from tests.jobs_helpers import write_import

LOGINS = ("visitor", "aide7")     # not in the operators table; level 7 with no permission


@pytest.fixture
def world(tmp_path, monkeypatch):
    store = district(tmp_path / "district.db", [
        {"barcode": "B1", "district_id": "D1", "site": "HS", "last_name": "Able", "first_name": "Ann", "grade": "5"},
        {"barcode": "B2", "district_id": "D2", "site": "HS", "last_name": "Baker", "first_name": "Bob", "grade": "6"},
        {"barcode": "PROT1", "district_id": "D3", "site": "HS", "last_name": "Staff", "first_name": "Sam",
         "protected": 1},
    ])
    csv_path, props = write_import(tmp_path, ["D9,B9,New,Nina,HS"])
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("operators", {"login_name": "aide7", "display_name": "Aide", "security_level": 7,
                               "may_manage_district_patrons": 0, "may_use_batch_tools": 0,
                               "may_reset_passwords": 0, "created_at": utc_now()})
        save_job(w, Job(name="Students", path=str(csv_path), properties_path=str(props)))
    query_sets.save_set(conn, "tester", "HS", "site = HS")
    conn.close()
    engine = RunEngine(store, pool_size=1)    # a run of tester's to undo
    try:
        def change(ctx):
            with ctx.writer() as w:
                w.update("patrons", w.conn.execute("SELECT id FROM patrons WHERE barcode = 'B1'").fetchone()[0],
                         {"email": "ann@school.test"})
            return {}
        undo_me = engine.execute("utility", "a change to undo", change).run_id
    finally:
        engine.shutdown()
    backup_copy = tmp_path / "copy.db"
    src, dst = sqlite3.connect(store.path), sqlite3.connect(backup_copy)
    src.backup(dst)
    src.close(), dst.close()

    def be(login: str) -> None:
        monkeypatch.setattr("patron_tui.store.identity.current_login", lambda: login)
        monkeypatch.setattr("patron_tui.store.current_login", lambda: login)

    return {"store": store, "db": str(store.path), "csv": str(csv_path), "props": str(props), "undo": undo_me,
            "backup_copy": str(backup_copy), "backup_to": str(tmp_path / "backup-here.db"), "be": be,
            "tmp": tmp_path}


#: (command, its arguments, the permission whose refusal it prints)
COMMANDS = [
    ("protect", lambda w: ["protect", "B1"], "protect"),
    ("protect --off", lambda w: ["protect", "PROT1", "--off"], "protect"),
    ("prune-journal", lambda w: ["prune-journal"], "prune_journal"),
    ("query --save", lambda w: ["query", "site = HS", "--save", "New set"], "query_sets"),
    ("query --set --freeze", lambda w: ["query", "--set", "HS", "--freeze"], "query_sets"),
    ("fill-queues", lambda w: ["fill-queues"], "fill_queues"),
    ("mail-settings", lambda w: ["mail-settings", "--host", "smtp.example.test"], "manage_patrons"),
    ("mail-settings --forget-password", lambda w: ["mail-settings", "--forget-password"], "manage_patrons"),
    ("mail-test", lambda w: ["mail-test", "--to", "me@example.test"], "mail"),
    ("demo --force", lambda w: ["demo", "--force", "--patrons", "0"], "replace_database"),
    ("import", lambda w: ["import", w["csv"], "--properties", w["props"]], "import_patrons"),
    ("import --background", lambda w: ["import", w["csv"], "--properties", w["props"], "--background"],
     "import_patrons"),
    ("resolve", lambda w: ["resolve", "1", "keep"], "import_patrons"),
    ("jobs add", lambda w: ["jobs", "add", "Staff", "--path", w["csv"], "--properties", w["props"]], "manage_jobs"),
    ("jobs edit", lambda w: ["jobs", "edit", "Students", "--encoding", "latin-1"], "manage_jobs"),
    ("jobs delete", lambda w: ["jobs", "delete", "Students"], "manage_jobs"),
    ("jobs run", lambda w: ["jobs", "run", "Students"], "manage_jobs"),
    ("batch-update", lambda w: ["batch-update", "--query", "", "--medium", "DB", "--max-items-out", "3"],
     "batch_tools"),
    ("utility", lambda w: ["utility", "change-patron-status", "--query", "", "--new-status", "Inactive"],
     "batch_tools"),
    ("utility --background", lambda w: ["utility", "change-patron-status", "--query", "", "--new-status",
                                        "Inactive", "--background"], "batch_tools"),
    ("undo", lambda w: ["undo", str(w["undo"])], "undo"),
    ("operators add", lambda w: ["operators", "add", "newbie", "--level", "3"], "manage_operators"),
    ("operators edit", lambda w: ["operators", "edit", "aide7", "--level", "1", "--manage-patrons"],
     "manage_operators"),
    ("operators remove", lambda w: ["operators", "remove", "aide7"], "manage_operators"),
    ("backup", lambda w: ["backup", w["backup_to"]], "backup"),
    ("restore", lambda w: ["restore", w["backup_copy"], "--yes"], "restore"),
]


def everything(path: str) -> list[str]:
    """Every row of every table (and the schema), as SQL text."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def files(tmp: Path) -> set[str]:
    return {str(p.relative_to(tmp)) for p in tmp.rglob("*") if not p.name.endswith(("-wal", "-shm"))}


def expected(world, login: str, permission: str) -> str:
    conn = world["store"].connect()
    try:
        if permission == "undo":
            return undo_refusal(conn, login, world["undo"])
        return refusal(conn, login, permission)
    finally:
        conn.close()


@pytest.mark.parametrize("login", LOGINS)
@pytest.mark.parametrize("command, argv, permission", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_write_command_is_refused_for_a_login_without_the_permission(world, capsys, login, command,
                                                                           argv, permission):
    world["be"](login)
    before, around = everything(world["db"]), files(world["tmp"])
    code = main(["--db", world["db"], *argv(world)])
    out, err = capsys.readouterr()
    assert code == 2, (command, out, err)
    assert everything(world["db"]) == before, command
    assert files(world["tmp"]) == around, command
    assert "Traceback" not in err + out
    sentence = expected(world, login, permission)
    assert sentence and f"Operator {login!r}" in sentence
    assert sentence in " ".join(err.replace("patron-tui: ", "").split()), (command, err)


@pytest.mark.parametrize("login", LOGINS)
def test_reads_and_dry_runs_are_still_allowed(world, capsys, login):
    world["be"](login)
    before = everything(world["db"])
    assert main(["query", "site = HS", "--db", world["db"], "--count"]) == 0
    assert main(["prune-journal", "--db", world["db"], "--dry-run"]) == 0
    assert main(["sets", "--db", world["db"]]) == 0
    capsys.readouterr()
    assert everything(world["db"]) == before


def test_an_operator_with_the_permission_may(world, capsys):
    # level 7 given "manage patrons for the district": protect works; query sets still need batch tools
    conn = world["store"].connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        aide = conn.execute("SELECT id FROM operators WHERE login_name = 'aide7'").fetchone()[0]
        w.update("operators", aide, {"may_manage_district_patrons": 1})
    conn.close()
    world["be"]("aide7")
    assert main(["protect", "B1", "--db", world["db"]]) == 0
    assert "B1: protected" in capsys.readouterr().out
    assert main(["query", "site = HS", "--save", "Mine", "--db", world["db"]]) == 2
    assert '"may use batch tools"' in capsys.readouterr().err


# -- the console's write actions that had no check -------------------------------------------


def notes(app) -> str:
    return "\n".join(" ".join(str(n.message).split()) for n in app._notifications)


@pytest.mark.parametrize("login", LOGINS)
async def test_console_protect_is_refused_with_the_sentence(world, login):
    from patron_tui.ui.app import make_app
    from patron_tui.ui.screens.patrons import PatronDetailScreen
    from tests.pilot import wait_until

    pid = patron_where(world["store"], barcode="B1")["id"]
    before = everything(world["db"])
    app = make_app(world["db"], operator=login)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(PatronDetailScreen(pid))
        await wait_until(app, pilot, lambda: isinstance(app.screen, PatronDetailScreen)
                         and app.screen.detail is not None)
        await pilot.press("p")
        await wait_until(app, pilot, lambda: len(app._notifications) == 1, why=lambda: notes(app))
        assert everything(world["db"]) == before, notes(app)
        assert app.screen.detail["protected"] == 0
    assert notes(app) == expected(world, login, "protect")


@pytest.mark.parametrize("login", LOGINS)
async def test_console_query_sets_save_freeze_delete_are_refused_with_the_sentence(world, login):
    from patron_tui.ui.app import make_app
    from patron_tui.ui.screens.patrons import PatronsScreen
    from patron_tui.ui.screens.query_dialogs import SaveSetScreen, SetsScreen
    from tests.pilot import wait_until

    before = everything(world["db"])

    def refused(n: int) -> bool:   # the n-th notification came; nothing was written
        assert everything(world["db"]) == before, notes(app)
        return True
    app = make_app(world["db"], operator=login)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await wait_until(app, pilot, lambda: isinstance(app.screen, PatronsScreen))
        await pilot.press("ctrl+s")                                   # save the list as a set
        await wait_until(app, pilot, lambda: isinstance(app.screen, SaveSetScreen))
        await pilot.press(*"Mine", "enter")
        await wait_until(app, pilot, lambda: len(app._notifications) == 1, why=lambda: notes(app))
        assert refused(1)
        await pilot.press("l")                                        # the sets list: freeze HS
        await wait_until(app, pilot, lambda: isinstance(app.screen, SetsScreen))
        await pilot.press("f")
        await wait_until(app, pilot, lambda: len(app._notifications) == 2, why=lambda: notes(app))
        assert refused(2)
        await wait_until(app, pilot, lambda: isinstance(app.screen, PatronsScreen))
        await pilot.press("l")                                        # delete HS (typed answer)
        await wait_until(app, pilot, lambda: isinstance(app.screen, SetsScreen))
        await pilot.press("d")
        await pilot.pause()
        await pilot.press(*"HS", "enter")
        await wait_until(app, pilot, lambda: len(app._notifications) == 3, why=lambda: notes(app))
        assert refused(3)
    sentence = expected(world, login, "query_sets")
    assert notes(app) == "\n".join([sentence] * 3)
