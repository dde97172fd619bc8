"""A scheduled patron update whose file comes over SFTP, end to end against a real sshd: the
run fetches and imports the file; Test Server, a wrong password, a missing file and an
unknown host key are explained; and afterwards the SFTP password is nowhere — not in a log
line, a run message, a run row, the captured output, or the database's bytes."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path

import paramiko
import pytest

from patron_tui.runs import RunEngine
from patron_tui.services.jobs import job_runs, run_job, save_job, test_job
from patron_tui.services.jobs.model import Job
from patron_tui.services.jobs.secrets import default_secret_store
from patron_tui.services.jobs.sftp import KnownHosts, known_hosts_path
from patron_tui.store import ChangesetWriter

from tests.jobs_helpers import HEADER, PROPS, make_store
from tests.sshd import SshServer, ssh_keygen_fingerprint

ROWS = ["D1,B1,Able,Ann,HS", "D2,B2,Baker,Bob,HS", "D3,B3,Cole,Cy,HS"]
OPTIONS = {"settle_seconds": 0, "timeout": 10.0, "attempts": 1}


def run(engine: RunEngine, job: Job, mode: str = "full"):
    return engine.execute("job", f"Job {job.name} ({mode})",
                          lambda ctx: run_job(ctx, job.name, mode, sftp_options=dict(OPTIONS)),
                          job_id=job.id, mode=mode)


def test_sftp_job_run_imports_and_no_secret_leaks(sshd_password: SshServer, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture, capfd) -> None:
    srv = sshd_password
    caplog.set_level(logging.DEBUG)   # paramiko's own debug lines included
    folder = "run" + uuid.uuid4().hex[:8]
    srv.serve(f"{folder}/students.csv", HEADER + "".join(r + "\n" for r in ROWS))
    props = tmp_path / "students.properties"
    props.write_text(PROPS, encoding="utf-8")

    store = make_store(tmp_path)
    conn = store.connect()
    with ChangesetWriter(conn, operator=store.operator, run_id=None) as w:
        job = save_job(w, Job(name="Students", source="sftp", sftp_url=srv.sftp_url(folder),
                              sftp_port=srv.port, sftp_user=srv.password_user, sftp_auth="password",
                              file_name="students.csv", properties_path=str(props)))
    secrets = default_secret_store(store.path)
    secrets.set(job.name, srv.password)
    known = KnownHosts(known_hosts_path(store.path))
    wrong = "Wrong-" + srv.password
    before = conn.execute("SELECT count(*) FROM patrons").fetchone()[0]
    engine = RunEngine(store, pool_size=1)
    try:
        # the server's host key is not accepted yet: the run refuses, naming the fingerprint
        handle = run(engine, job)
        assert handle.status.value == "failed"
        assert "not known yet" in handle.error and ssh_keygen_fingerprint(srv.host_pub) in handle.error
        assert conn.execute("SELECT count(*) FROM patrons").fetchone()[0] == before

        # Test Server shows the fingerprint; the operator accepts it
        report = test_job(job, store.path, timeout=10.0)
        assert report.fingerprint == ssh_keygen_fingerprint(srv.host_pub) and not report.ok
        known.accept(srv.host, srv.port, paramiko.PKey.from_path(srv.host_key))
        report = test_job(job, store.path, timeout=10.0)
        assert report.ok, report.as_dict()

        # the run fetches and imports the file
        handle = run(engine, job)
        assert handle.status.value == "succeeded", handle.error
        assert handle.summary["added"] == 3 and handle.summary["job"] == "Students"
        names = {r[0] for r in conn.execute("SELECT last_name FROM patrons WHERE site = 'HS'")}
        assert names == {"Able", "Baker", "Cole"}
        (row, *_) = job_runs(conn, "Students")
        assert (row["status"], row["added"]) == ("succeeded", 3)

        # a wrong password is explained
        secrets.set(job.name, wrong)
        handle = run(engine, job, "incremental")
        assert handle.status.value == "failed"
        assert f"refused the password for user {srv.password_user!r}" in handle.error
        secrets.set(job.name, srv.password)

        # a missing file is explained with the names in the folder
        (srv.public / folder / "students.csv").rename(srv.public / folder / "Students.CSV")
        handle = run(engine, job, "incremental")
        assert handle.status.value == "failed"
        assert "'students.csv' is not in" in handle.error and '"Students.CSV"' in handle.error
    finally:
        engine.shutdown()

    # --- the password (and the wrong one) is nowhere ------------------------------------------
    out, err = capfd.readouterr()
    places: dict[str, str] = {"log records": caplog.text, "stdout": out, "stderr": err,
                              "sshd log": srv.log_text()}
    check = sqlite3.connect(store.path)
    check.row_factory = sqlite3.Row
    messages = check.execute("SELECT * FROM run_messages").fetchall()
    assert messages, "the runs said something"
    places["run messages"] = "\n".join(repr(tuple(r)) for r in messages)
    places["runs"] = "\n".join(repr(tuple(r)) for r in check.execute("SELECT * FROM runs"))
    places["jobs"] = "\n".join(repr(tuple(r)) for r in check.execute("SELECT * FROM jobs"))
    check.close()
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("district.db*"))
    assert db_bytes
    for secret in (srv.password, wrong):
        for where, text in places.items():
            assert secret not in text, f"the SFTP password appears in the {where}"
        assert secret.encode() not in db_bytes, "the SFTP password appears in the database file"
    # ...and is only in the secret file, which only its owner can read
    assert (secrets.path.stat().st_mode & 0o077) == 0
    assert srv.password in secrets.path.read_text()
