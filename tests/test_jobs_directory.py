"""The directory source and a job run end to end on a real store."""

from __future__ import annotations

import threading

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services.jobs import (
    SourceError,
    check_directory,
    fetch_directory,
    job_runs,
    run_job,
    test_job,
)
from patron_tui.services.jobs.model import Job, JobOptions
from patron_tui.store import runlog

from tests.jobs_helpers import add_job, make_store, write_files

ROWS = ["D1,B1,Able,Ann,HS", "D2,B2,Baker,Bob,HS", "D3,B3,Cole,Cy,HS"]


def dir_job(path, props="/p.properties") -> Job:
    return Job(name="Students", path=str(path), properties_path=str(props))


def test_missing_file_is_refused_with_a_sentence(tmp_path):
    with pytest.raises(SourceError, match=r"students.csv: no such file \(job 'Students', field: path\)"):
        fetch_directory(dir_job(tmp_path / "students.csv"), tmp_path / "stage", settle_seconds=0)


def test_a_file_still_being_written_is_refused(tmp_path):
    csv_path, _ = write_files(tmp_path, ROWS)

    def sis_writes_more(_seconds):   # the "sleep" between the two looks: the SIS appends a line
        with csv_path.open("a") as f:
            f.write("D4,B4,Dane,Di,HS\n")

    with pytest.raises(SourceError, match="still being written"):
        fetch_directory(dir_job(csv_path), tmp_path / "stage", settle_seconds=1, sleep=sis_writes_more)
    assert not (tmp_path / "stage" / "students.csv").exists()


def test_a_settled_file_is_copied(tmp_path):
    csv_path, _ = write_files(tmp_path, ROWS)
    out = fetch_directory(dir_job(csv_path), tmp_path / "stage", settle_seconds=1, sleep=lambda s: None)
    assert out.read_bytes() == csv_path.read_bytes() and out.parent == tmp_path / "stage"


def test_check_directory_and_test_job(tmp_path):
    csv_path, props = write_files(tmp_path, ROWS)
    report = test_job(dir_job(csv_path, props), properties=True)
    assert report.ok, report.as_dict()
    assert [c.step for c in report.checks] == ["folder", "file", "properties"]
    missing = check_directory(dir_job(tmp_path / "nowhere" / "x.csv"))
    assert not missing[0].ok and "does not exist" in missing[0].sentence
    assert [c.step for c in test_job(dir_job(csv_path, props), properties=False).checks] == ["folder", "file"]
    report = test_job(dir_job(tmp_path / "sis" / "other.csv", tmp_path / "nope.properties"), properties=True)
    assert not report.ok
    assert [c.ok for c in report.checks] == [True, False, False]
    assert "nope.properties does not exist" in report.checks[-1].sentence


def test_a_job_run_imports_the_file_end_to_end(tmp_path):
    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ROWS)
    job = add_job(store, path=csv_path, props=props)
    engine = RunEngine(store, pool_size=1)
    try:
        conn = store.connect()
        handle = engine.execute("job", "Job Students (full)",
                                lambda ctx: run_job(ctx, "Students", "full", settle_seconds=0,
                                                    staging_dir=tmp_path),
                                job_id=job.id, mode="full")
        assert handle.status.value == "succeeded", handle.error
        assert handle.summary["added"] == 3 and handle.summary["job"] == "Students"
        assert handle.summary["source"] == str(csv_path)
        names = {r[0] for r in conn.execute("SELECT last_name FROM patrons WHERE site='HS'")}
        assert names == {"Able", "Baker", "Cole"}
        assert not list(tmp_path.glob("patron-job-*")), "the staging folder is removed"
        (row,) = job_runs(conn, "Students")
        assert (row["status"], row["added"], row["read"]) == ("succeeded", 3, 3)
        # the lease is given back
        assert conn.execute("SELECT owner FROM job_leases").fetchone()[0] is None

        csv_path.unlink()
        handle = engine.execute("job", "Job Students (incremental)",
                                lambda ctx: run_job(ctx, "Students", "incremental", settle_seconds=0),
                                job_id=job.id, mode="incremental")
        assert handle.status.value == "failed" and "no such file" in handle.error
    finally:
        engine.shutdown()


def test_a_job_never_runs_twice_at_once(tmp_path, monkeypatch):
    from patron_tui.services.jobs import directory

    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ROWS)
    job = add_job(store, path=csv_path, props=props)
    entered, go_on = threading.Event(), threading.Event()
    original = directory.fetch_directory

    def held_fetch(job, dest, *, settle_seconds=None):
        if not entered.is_set():   # the first run holds the lease until the test lets it go on
            entered.set()
            go_on.wait(30)
        return original(job, dest, settle_seconds=0)

    monkeypatch.setattr(directory, "fetch_directory", held_fetch)
    engine = RunEngine(store, pool_size=1, max_runs=2)
    try:
        first = engine.start("job", "first", lambda ctx: run_job(ctx, "Students", "full"), job_id=job.id)
        assert entered.wait(30)
        second = engine.execute("job", "second", lambda ctx: run_job(ctx, "Students", "full"), job_id=job.id)
        assert second.status.value == "failed" and "already running" in second.error
        go_on.set()
        assert first.wait(30).value == "succeeded", first.error
        third = engine.execute("job", "third", lambda ctx: run_job(ctx, "Students", "full"), job_id=job.id)
        assert third.status.value == "succeeded", third.error
    finally:
        go_on.set()
        engine.shutdown()


def test_delete_previous_runs_keeps_n(tmp_path):
    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ROWS)
    job = add_job(store, path=csv_path, props=props,
                  options=JobOptions(delete_previous_runs=True, keep_runs=2))
    engine = RunEngine(store, pool_size=1)
    try:
        ids = [engine.execute("job", "j", lambda ctx: run_job(ctx, "Students", "incremental", settle_seconds=0),
                              job_id=job.id, mode="incremental").run_id for _ in range(4)]
    finally:
        engine.shutdown()
    conn = store.connect()
    assert [r["id"] for r in job_runs(conn, "Students")] == ids[-1:-3:-1]
    assert runlog.get_run(conn, ids[0]) is None
    assert not conn.execute("SELECT 1 FROM run_messages WHERE run_id IN (?, ?)", ids[:2]).fetchone()
    assert conn.execute("SELECT count(*) FROM change_journal WHERE table_name='runs' AND op='delete'"
                        ).fetchone()[0] == 2
