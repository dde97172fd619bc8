"""Runs handed to the scheduler: queued in the database, picked up by `patron-tui run-due` (a
scheduler pass) after the console that asked for them has closed, executed as the operator
who queued them, and followed from the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services import background
from patron_tui.services.background import UnknownKind, pick_up, queue_run, register_background
from patron_tui.services.permissions import PermissionDenied
from patron_tui.services.operators import add_operator
from patron_tui.store import runlog

from .conftest import district

PROPS = ("encoding=utf-8\ndelimiter=,\nheader=true\nmatch=district_id\n"
         "field.district_id=Student ID\nfield.barcode=Student Barcode\nfield.last_name=Last Name\n"
         "field.first_name=First Name\nfield.site=School\nrequired=barcode,last_name,site\n")


def _files(tmp_path, rows: int = 300):
    csv_path = tmp_path / "students.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as f:
        f.write("Student ID,Student Barcode,Last Name,First Name,School\n")
        for i in range(rows):
            f.write(f"S{i:05d},B{i:05d},Last{i},First{i},HS\n")
    props = tmp_path / "students.properties"
    props.write_text(PROPS, encoding="utf-8")
    return csv_path, props


def test_a_queued_import_is_completed_by_a_scheduler_pass_after_the_console_closed(tmp_path):
    store = district(tmp_path / "district.db")
    csv_path, props = _files(tmp_path)
    # the "console": an engine that hands the import to the scheduler, then closes
    engine = RunEngine(store)
    conn = store.connect()
    try:
        run_id = queue_run(conn, "tester", "import", "Import students.csv (full)",
                           {"file": str(csv_path), "properties": str(props), "mode": "full"}, mode="full")
    finally:
        conn.close()
    engine.shutdown()
    conn = store.connect()
    try:
        row = runlog.get_run(conn, run_id)
        assert (row["status"], row["started_by"], row["kind"]) == ("queued", "scheduler", "import")
        assert conn.execute("SELECT count(*) FROM patrons WHERE barcode LIKE 'B%'").fetchone()[0] == 0
    finally:
        conn.close()

    out = subprocess.run([sys.executable, "-m", "patron_tui", "run-due", "--json", "--db", str(store.path)],
                         capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert [(r["run_id"], r["action"], r["status"]) for r in results] == [(run_id, "background", "succeeded")]

    # a console opened later finds the run and what it said in the database
    conn = store.connect()
    try:
        row = runlog.get_run(conn, run_id)
        assert row["status"] == "succeeded" and row["summary"]["added"] == 300
        assert row["owner_pid"] != os.getpid() and row["finished_at"]
        assert conn.execute("SELECT count(*) FROM patrons WHERE barcode LIKE 'B%'").fetchone()[0] == 300
        codes = [m["code"] for m in runlog.messages(conn, run_id)]
        assert "background" in codes and "import_done" in codes
        # written as the operator who queued it, in that run
        ops = {r[0] for r in conn.execute("SELECT DISTINCT operator FROM change_journal WHERE run_id = ?",
                                          (run_id,))}
        assert ops == {"tester"}
    finally:
        conn.close()
    # the next pass finds nothing more to do
    out = subprocess.run([sys.executable, "-m", "patron_tui", "run-due", "--json", "--db", str(store.path)],
                         capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout) == []


def test_scheduler_run_once_picks_up_a_registered_kind_once(tmp_path):
    from patron_tui.services.jobs.scheduler import Scheduler

    store = district(tmp_path / "district.db")
    seen: list[dict] = []

    def echo(ctx):
        seen.append(dict(ctx.params))
        ctx.info(f"echo {ctx.params['word']}", code="echo")
        return {"word": ctx.params["word"]}

    register_background("test_echo", echo)
    try:
        conn = store.connect()
        first = queue_run(conn, "tester", "test_echo", "Echo one", {"word": "one"})
        second = queue_run(conn, "tester", "test_echo", "Echo two", {"word": "two"})
        conn.close()
        sched = Scheduler(store)
        try:
            results = sched.run_once()
            assert [r["run_id"] for r in results] == [first, second]
            assert sched.engine.wait_idle(60)
            assert sched.run_once() == []   # claimed once, not again
        finally:
            sched.engine.shutdown(cancel_running=False)
    finally:
        background._REGISTRY.pop("test_echo", None)
    # both ran (on the engine's two run slots, in either order); the marker param is not passed on
    assert sorted(seen, key=lambda p: p["word"]) == [{"word": "one"}, {"word": "two"}]
    conn = store.connect()
    try:
        assert [runlog.get_run(conn, i)["status"] for i in (first, second)] == ["succeeded", "succeeded"]
        assert runlog.get_run(conn, second)["summary"]["word"] == "two"
    finally:
        conn.close()


def test_a_claimed_run_whose_process_died_is_claimed_again(tmp_path):
    store = district(tmp_path / "district.db")
    register_background("test_noop", lambda ctx: {"ok": 1})
    try:
        conn = store.connect()
        run_id = queue_run(conn, "tester", "test_noop", "No-op")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        conn.execute("UPDATE runs SET owner_host = ?, owner_pid = ? WHERE id = ?",
                     (__import__("socket").gethostname(), int(dead), run_id))
        # a live owner keeps it
        conn.execute("INSERT INTO runs (kind, title, status, operator, started_by, params, owner_host,"
                     " owner_pid, created_at) VALUES ('test_noop', 'held', 'queued', 'tester', 'scheduler',"
                     " '{\"background\":true}', ?, ?, 'now')",
                     (__import__("socket").gethostname(), os.getpid()))
        held = conn.execute("SELECT max(id) FROM runs").fetchone()[0]
        conn.close()
        engine = RunEngine(store)
        try:
            handles = pick_up(engine, store)
            assert [h.run_id for h in handles] == [run_id]
            assert engine.wait_idle(60)
        finally:
            engine.shutdown()
    finally:
        background._REGISTRY.pop("test_noop", None)
    conn = store.connect()
    try:
        assert runlog.get_run(conn, run_id)["status"] == "succeeded"
        assert runlog.get_run(conn, held)["status"] == "queued"
    finally:
        conn.close()


def test_queueing_checks_the_kind_and_the_permission_then_and_at_start(tmp_path):
    store = district(tmp_path / "district.db")
    conn = store.connect()
    try:
        with pytest.raises(UnknownKind, match="cannot be handed to the scheduler"):
            queue_run(conn, "tester", "no_such_kind", "x")
        add_operator(conn, "tester", "clerk", security_level=3)
        with pytest.raises(PermissionDenied, match="'clerk' may not manage scheduled patron updates"):
            queue_run(conn, "clerk", "job", "Job x (full)", {"job": "x", "mode": "full"})
        # queued while allowed, refused at start once the permission is gone
        add_operator(conn, "tester", "mgr", security_level=3, manage_patrons=True)
        run_id = queue_run(conn, "mgr", "job", "Job x (full)", {"job": "x", "mode": "full"})
        conn.execute("UPDATE operators SET may_manage_district_patrons = 0 WHERE login_name = 'mgr'")
    finally:
        conn.close()
    engine = RunEngine(store)
    try:
        [handle] = pick_up(engine, store)
        handle.wait(60)
    finally:
        engine.shutdown()
    assert handle.run_id == run_id and handle.status.value == "failed"
    assert "'mgr' may not manage scheduled patron updates" in handle.error
