"""Jobs in the store: save/edit/delete through the changeset writer, runs, permission."""

from __future__ import annotations

import json

import pytest

from patron_tui.services.jobs import (
    Job,
    JobExists,
    delete_job,
    get_job,
    job_runs,
    list_jobs,
    may_manage,
    parse_schedule,
    require_manager,
    save_job,
)
from patron_tui.store import ChangesetWriter, Store, runlog, utc_now

from tests.jobs_helpers import make_store


def job(name="Students", **kw) -> Job:
    return Job(name=name, path="/srv/sis/students.csv", properties_path="/srv/p.properties", **kw)


def test_save_edit_delete_round_trip_is_journalled(tmp_path):
    store = make_store(tmp_path)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        saved = save_job(w, job(schedule=parse_schedule("mon=full@02:00")))
    assert saved.id is not None
    got = get_job(conn, "Students")
    assert got == saved and got.schedule.mon.mode == "full"
    row = conn.execute("SELECT schedule, options FROM jobs").fetchone()
    assert json.loads(row["schedule"])["mon"] == {"mode": "full", "time": "02:00"}

    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        save_job(w, saved.model_copy(update={"name": "Pupils", "encoding": "windows-1252"}))
    assert get_job(conn, "Students") is None
    assert get_job(conn, "Pupils").encoding == "windows-1252"
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        save_job(w, job("Staff"))
    assert [j.name for j in list_jobs(conn)] == ["Pupils", "Staff"]

    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        assert delete_job(w, "Pupils") is True
        assert delete_job(w, "Nobody") is False
    assert [j.name for j in list_jobs(conn)] == ["Staff"]
    ops = [r[0] for r in conn.execute(
        "SELECT op FROM change_journal WHERE table_name='jobs' ORDER BY id")]
    assert ops == ["insert", "update", "insert", "delete"]


def test_a_second_job_of_the_same_name_is_refused_naming_the_field(tmp_path):
    store = make_store(tmp_path)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        save_job(w, job())
    with pytest.raises(JobExists, match="^name: a job named 'Students' already exists"):
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            save_job(w, job())
    assert len(list_jobs(conn)) == 1


def test_job_runs_read_counts_and_duration(tmp_path):
    store = make_store(tmp_path)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        j = save_job(w, job())
        other = save_job(w, job("Staff"))
    rid = runlog.create_run(conn, kind="job", title="Job Students (full)", operator="tester",
                            params={"job": "Students"}, job_id=j.id, mode="full", started_by="scheduler")
    runlog.mark_running(conn, rid, pid=1)
    runlog.finish_run(conn, rid, status="succeeded",
                      summary={"read": 10, "added": 4, "updated": 3, "errors": 1, "duration_s": 0.5})
    runlog.create_run(conn, kind="job", title="Job Staff (incremental)", operator="tester",
                      job_id=other.id, mode="incremental")
    runlog.create_run(conn, kind="import", title="not a job", operator="tester")
    rows = job_runs(conn)
    assert [r["job_name"] for r in rows] == ["Staff", "Students"]
    assert rows[0]["status"] == "queued" and rows[0]["duration_s"] is None
    (r,) = job_runs(conn, "Students")
    assert (r["read"], r["added"], r["updated"], r["errors"], r["skipped"]) == (10, 4, 3, 1, 0)
    assert r["started_by"] == "scheduler" and r["mode"] == "full" and r["duration_s"] >= 0


def test_only_district_patron_managers_may_manage_jobs(tmp_path):
    store = make_store(tmp_path)   # the creator is a district administrator
    conn = store.connect()
    now = utc_now()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("operators", {"login_name": "clerk", "security_level": 5, "created_at": now})
        w.insert("operators", {"login_name": "manager", "security_level": 3,
                               "may_manage_district_patrons": 1, "created_at": now})
    assert may_manage(conn, "tester") and may_manage(conn, "manager")
    assert not may_manage(conn, "clerk") and not may_manage(conn, "stranger")
    require_manager(conn, "manager")
    with pytest.raises(PermissionError, match="'clerk' may not manage scheduled patron updates"):
        require_manager(conn, "clerk")


def test_migration_adds_the_lease_table(tmp_path):
    store = Store.create(tmp_path / "x.db", operator="tester")
    conn = store.connect()
    cols = {r[1] for r in conn.execute("PRAGMA table_info(job_leases)")}
    assert cols == {"job_id", "owner", "acquired_at", "expires_at", "last_slot"}
    assert {"sftp_auth", "sftp_key_path"} <= {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}


def test_lease_is_exclusive_and_freed_by_expiry_or_a_dead_owner(tmp_path):
    from datetime import datetime, timedelta, timezone

    from patron_tui.services.jobs import lease
    from patron_tui.store.identity import host_name

    store = make_store(tmp_path)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        j = save_job(w, job())
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert lease.acquire(conn, j.id, "other-host:1", now=now, ttl=timedelta(hours=1))
    assert not lease.acquire(conn, j.id, "other-host:2", now=now + timedelta(minutes=59))
    assert lease.holder(conn, j.id, now=now) == "other-host:1"
    assert lease.acquire(conn, j.id, "other-host:2", now=now + timedelta(minutes=61))   # expired
    lease.release(conn, j.id, "other-host:2")
    assert lease.holder(conn, j.id) is None
    dead = f"{host_name()}:999999999"   # a process of this host that does not exist
    assert lease.acquire(conn, j.id, dead)
    assert lease.acquire(conn, j.id, lease.owner_id("me"))
    # a scheduler's slot claim: once per slot, never an older one
    lease.release(conn, j.id, lease.owner_id("me"))
    assert lease.claim_slot(conn, j.id, "2026-06-02T06:00:00.000000Z")
    assert not lease.claim_slot(conn, j.id, "2026-06-02T06:00:00.000000Z")
    assert not lease.claim_slot(conn, j.id, "2026-06-01T06:00:00.000000Z")
    assert lease.claim_slot(conn, j.id, "2026-06-03T06:00:00.000000Z")
