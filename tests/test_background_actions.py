"""Run in background, end to end: a run handed to the scheduler service from the console (Ctrl+B,
Pilot at 80x24, keyboard only) or the CLI (--background) is queued in the database, the console
closes, one scheduler pass runs it as the operator who queued it, and the patrons change. Also:
a utility whose selection changed since the preview is refused at pick-up and changes nothing;
the permission is checked when the run is queued from the console."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from patron_tui.cli import main
from patron_tui.services.jobs.scheduler import Scheduler
from patron_tui.services.run_history import list_runs
from patron_tui.services.utilities import Selections, preview
from patron_tui.services.utilities.base import queue_utility
from patron_tui.store import ChangesetWriter, current_login, runlog, utc_now
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.query_dialogs import ConfirmScreen

from tests.batch_helpers import add_catalog, build, dump, profiles
from tests.conftest import add_patrons, district, patron_where
from tests.pilot import settle, wait_until
from tests.test_batch_screen import choose_medium_db, open_set_and_batch
from tests.test_batch_screen import preview as batch_preview
from tests.test_utilities_screen import choose, make_district, open_utility, pick, tab_to


def runs_of(store, kind: str) -> list[dict]:
    conn = store.connect()
    try:
        return [dict(r) for r in conn.execute("SELECT id, status, operator, started_by, error FROM runs"
                                              " WHERE kind = ? ORDER BY id", (kind,))]
    finally:
        conn.close()


def one_pass(store) -> list[dict]:
    """One scheduler pass (the service's loop body), waiting for what it started."""
    sched = Scheduler(store)
    try:
        results = sched.run_once()
        assert sched.engine.wait_idle(60)
    finally:
        sched.engine.shutdown(cancel_running=False)
    return results


async def test_a_utility_queued_from_the_console_runs_after_the_console_closed(tmp_path):
    store = make_district(tmp_path)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        screen = await open_utility(app, pilot, "stat", "Change Patron Status")
        await tab_to(app, pilot, "sel-grades")
        await pick(app, pilot, "9")
        await pilot.press("f3")
        await choose(app, pilot, "inact")
        await pilot.press("f5")
        await wait_until(app, pilot, lambda: screen.previewed is not None, why=lambda: screen._last_problem)
        await pilot.press("ctrl+b")
        await wait_until(app, pilot, lambda: "Queued as run" in str(screen.query_one("#ur-status").render()),
                         why=lambda: screen._last_problem)
        [queued] = runs_of(store, "utility")
        status = str(screen.query_one("#ur-status").render())
        assert f"Queued as run {queued['id']}" in status and "Job Manager" in status
        assert screen.handle is None              # nothing started here
    # the console is closed; the run waits in the database, and the Job Manager lists it
    assert (queued["status"], queued["started_by"], queued["operator"]) == ("queued", "scheduler", "tester")
    conn = store.connect()
    try:
        listed = {r["id"]: r["status"] for r in list_runs(conn)}
        assert listed[queued["id"]] == "queued"
    finally:
        conn.close()
    assert patron_where(store, barcode="B0")["status"] == "Active"

    results = one_pass(store)
    assert [(r["run_id"], r["action"]) for r in results] == [(queued["id"], "background")]
    [done] = runs_of(store, "utility")
    assert done["status"] == "succeeded", done["error"]
    assert [patron_where(store, barcode=b)["status"] for b in ("B0", "B1", "B2")] == ["Inactive", "Inactive", "Active"]
    conn = store.connect()
    try:
        ops = {r[0] for r in conn.execute("SELECT DISTINCT operator FROM change_journal WHERE run_id = ?",
                                          (done["id"],))}
        assert ops == {"tester"}
        assert runlog.get_run(conn, done["id"])["summary"]["changed"] == 2
    finally:
        conn.close()


def test_a_batch_update_queued_by_the_cli_runs_in_a_scheduler_pass_then_the_filler(tmp_path, capsys):
    store = build(tmp_path / "district.db", operator=current_login())   # the CLI's operator is the login
    add_catalog(store)
    conn = store.connect()
    before = dump(conn)
    conn.close()
    code = main(["batch-update", "--db", str(store.path), "--query", "grade = 6", "--medium", "DB",
                 "--items-per-shipment", "2", "--add-subject", "SCI", "--fill-queues", "--queue-length", "2",
                 "--background", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["status"] == "queued" and data["kind"] == "batch_update"
    run_id = data["run_id"]
    conn = store.connect()
    try:
        assert dump(conn) == before                 # queued: nothing changed yet
        assert runlog.get_run(conn, run_id)["status"] == "queued"
    finally:
        conn.close()
    # the text form says where to follow it
    code = main(["batch-update", "--db", str(store.path), "--query", "grade = 5", "--medium", "DB",
                 "--max-items-out", "7", "--background"])
    out, err = capsys.readouterr()
    assert code == 0, err
    second = run_id + 1
    assert f"Queued as run {second}" in out and "Job Manager" in out

    proc = subprocess.run([sys.executable, "-m", "patron_tui", "run-due", "--json", "--db", str(store.path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [(r["run_id"], r["action"], r["status"]) for r in results] == [
        (run_id, "background", "succeeded"), (second, "background", "succeeded")]
    conn = store.connect()
    try:
        got = profiles(conn)
        assert {got[b]["items_per_shipment"] for b in ("P07", "P08", "P09", "P10")} == {2}
        assert {got[b]["max_items_out"] for b in ("P01", "P02")} == {7}
        run = runlog.get_run(conn, run_id)
        assert run["summary"]["queues_queued"] == 4 and run["operator"] == current_login()
        # the queue filler followed the batch, as after a batch run in the console or the CLI
        filler = run["summary"]["filler_run_id"]
        assert runlog.get_run(conn, filler)["status"] == "succeeded"
        assert conn.execute("SELECT count(*) FROM queue_fill_requests WHERE done_at IS NULL").fetchone()[0] == 0
        queued = dict(conn.execute("SELECT profile_id, count(*) FROM service_queue GROUP BY profile_id"))
        assert all(queued[got[b]["id"]] == 2 for b in ("P07", "P08", "P09", "P10"))
    finally:
        conn.close()


def test_a_queued_utility_whose_selection_changed_is_refused_at_pick_up(tmp_path):
    store = make_district(tmp_path)
    sel = Selections(grades=["9"])
    conn = store.connect()
    try:
        pv = preview(conn, "change-patron-status", sel, {"new_status": "Inactive"}, "tester")
        assert pv.changes == 2
        run_id = queue_utility(conn, "tester", "change-patron-status", sel, {"new_status": "Inactive"},
                               fingerprint=pv.fingerprint)
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:   # the selection changes
            w.update("patrons", patron_where(store, barcode="B0")["id"], {"grade": "10"})
    finally:
        conn.close()
    one_pass(store)
    conn = store.connect()
    try:
        run = runlog.get_run(conn, run_id)
        assert run["status"] == "failed"
        assert "changed since the preview (2 patrons then, 1 now)" in run["error"]
        assert conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ?", (run_id,)).fetchone()[0] == 0
    finally:
        conn.close()
    assert patron_where(store, barcode="B1")["status"] == "Active"


def batch_district(tmp_path):
    """8 HS patrons with DB profiles in the saved set 'HS patrons'; 'clerk' may not use batch tools."""
    store = district(tmp_path / "library.db")
    ids = add_patrons(store, [
        {"barcode": f"P{i:04d}", "district_id": f"D{i:04d}", "site": "HS", "last_name": f"Last{i}",
         "first_name": f"First{i}", "grade": "9", "status": "Active"} for i in range(8)])
    conn = store.connect()
    now = utc_now()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for pid in ids:
            w.insert("patron_profiles", {"patron_id": pid, "medium": "DB", "max_items_out": 3})
        w.insert("query_sets", {"name": "HS patrons", "statement": "site = HS", "created_by": "tester",
                                "created_at": now, "updated_at": now})
        w.insert("operators", {"login_name": "clerk", "display_name": "Clerk", "security_level": 5,
                               "may_use_batch_tools": 0, "created_at": now})
    conn.close()
    return store


async def test_the_permission_is_checked_when_the_console_queues_a_run(tmp_path):
    store = batch_district(tmp_path)
    app = make_app(store.path, operator="clerk")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = await open_set_and_batch(app, pilot)
        await choose_medium_db(app, pilot, screen)
        await batch_preview(app, pilot)                 # a preview changes nothing: allowed
        await pilot.press("ctrl+b")                     # PROCESS in background, from the preview
        await wait_until(app, pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press(*"8", "enter")                # the typed count, as for PROCESS
        await wait_until(app, pilot, lambda: "nothing was queued" in str(screen.query_one("#batch-error").render()))
        error = str(screen.query_one("#batch-error").render())
        assert "'clerk'" in error and "may use batch tools" in error
        assert app.screen is screen
    assert runs_of(store, "batch_update") == []


async def test_a_utility_queued_after_the_permission_was_lost_is_refused_and_not_queued(tmp_path):
    store = make_district(tmp_path)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("operators", {"login_name": "aide", "display_name": "Aide", "security_level": 5,
                               "may_use_batch_tools": 1, "created_at": utc_now()})
    conn.close()
    app = make_app(store.path, operator="aide")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        screen = await open_utility(app, pilot, "stat", "Change Patron Status")
        await tab_to(app, pilot, "sel-grades")
        await pick(app, pilot, "9")
        await pilot.press("f3")
        await choose(app, pilot, "inact")
        await pilot.press("f5")
        await wait_until(app, pilot, lambda: screen.previewed is not None, why=lambda: screen._last_problem)
        conn = store.connect()       # a district administrator takes the permission away meanwhile
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            aide = w.conn.execute("SELECT id FROM operators WHERE login_name = 'aide'").fetchone()[0]
            w.update("operators", aide, {"may_use_batch_tools": 0})
        conn.close()
        await pilot.press("ctrl+b")
        await wait_until(app, pilot, lambda: "Not queued" in screen._last_problem,
                         why=lambda: (screen._last_problem, str(screen.query_one("#ur-status").render())))
        assert "'aide'" in screen._last_problem and "may use batch tools" in screen._last_problem
    assert runs_of(store, "utility") == []
    assert patron_where(store, barcode="B0")["status"] == "Active"


async def test_an_import_queued_from_the_import_screen_and_one_from_the_cli(tmp_path, monkeypatch, capsys):
    from tests.test_background import _files
    from tests.test_import_screen import open_import

    store = build(tmp_path / "district.db", operator=current_login())
    csv_path, props = _files(tmp_path, rows=40)
    monkeypatch.chdir(tmp_path)
    app = make_app(store.path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await open_import(app, pilot)
        screen = app.screen
        await pilot.press(*csv_path.name, "enter")      # the sibling .properties is filled in
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("ctrl+b")
        await wait_until(app, pilot, lambda: "Queued as run" in str(screen.query_one("#import-status").render()),
                         why=lambda: str(screen.query_one("#import-error").render()))
        assert screen.handle is None
    [queued] = runs_of(store, "import")
    assert (queued["status"], queued["started_by"]) == ("queued", "scheduler")
    other = tmp_path / "more.csv"
    other.write_text("Student ID,Student Barcode,Last Name,First Name,School\nX1,BX1,Late,Lou,HS\n", encoding="utf-8")
    code = main(["import", str(other), "--properties", str(props), "--db", str(store.path), "--background", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["status"] == "queued" and data["run_id"] == queued["id"] + 1
    conn = store.connect()
    try:
        assert conn.execute("SELECT count(*) FROM patrons WHERE barcode LIKE 'B%'").fetchone()[0] == 0
    finally:
        conn.close()
    one_pass(store)
    assert [r["status"] for r in runs_of(store, "import")] == ["succeeded", "succeeded"]
    conn = store.connect()
    try:
        assert conn.execute("SELECT count(*) FROM patrons WHERE barcode LIKE 'B%'").fetchone()[0] == 41
    finally:
        conn.close()
