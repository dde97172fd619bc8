"""`patron-tui jobs ...`, `runs`, `run-due`: the headless twins of the Jobs section."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from patron_tui.cli import main
from patron_tui.services.jobs import directory, get_job
from patron_tui.store import ChangesetWriter, Store, current_login, utc_now

from tests.jobs_helpers import make_store, write_files

ROWS = ["D1,B1,Able,Ann,HS", "D2,B2,Baker,Bob,HS"]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(directory, "SETTLE_SECONDS", 0)
    store = make_store(tmp_path, operator=current_login())   # the CLI's operator is the login
    csv_path, props = write_files(tmp_path, ROWS)
    return store, str(store.path), csv_path, props


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_show_list_run_runs(setup, capsys):
    store, db, csv_path, props = setup
    code, out, err = run(capsys, "jobs", "add", "Students", "--db", db, "--path", str(csv_path),
                         "--properties", str(props), "--schedule", "mon-fri=incremental@02:30",
                         "--sat", "full@06:00", "--errors-only", "--keep", "2")
    assert code == 0, err
    conn = store.connect()
    job = get_job(conn, "Students")
    assert job.schedule.tue.mode == "incremental" and job.schedule.sat.time == "06:00"
    assert job.schedule.sun.mode == "none"
    assert job.options.summary_errors_only and job.options.delete_previous_runs and job.options.keep_runs == 2

    code, out, _ = run(capsys, "jobs", "show", "Students", "--db", db, "--json")
    shown = json.loads(out)
    assert shown["path"] == str(csv_path) and shown["next_mode"] in ("full", "incremental")

    code, out, _ = run(capsys, "jobs", "list", "--db", db)
    assert code == 0 and "Students" in out and "sat=full@06:00" in out

    code, out, err = run(capsys, "jobs", "run", "Students", "--db", db, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["status"], result["added"], result["read"]) == ("succeeded", 2, 2)
    assert conn.execute("SELECT count(*) FROM patrons WHERE barcode IN ('B1','B2')").fetchone()[0] == 2

    code, out, _ = run(capsys, "runs", "--db", db, "--job", "Students", "--json")
    (r,) = json.loads(out)
    assert (r["status"], r["started_by"], r["mode"], r["added"]) == ("succeeded", "operator", "full", 2)
    code, out, _ = run(capsys, "runs", "--db", db)
    assert "Students" in out and "succeeded" in out


def test_bad_input_names_the_field_and_changes_nothing(setup, capsys):
    store, db, csv_path, props = setup
    code, _, err = run(capsys, "jobs", "add", "Students", "--db", db, "--path", str(csv_path),
                       "--properties", str(props), "--encoding", "klingon", "--mon", "full@25:00")
    assert code == 2 and "--mon" in err
    code, _, err = run(capsys, "jobs", "add", "Students", "--db", db, "--path", str(csv_path),
                       "--properties", str(props), "--encoding", "klingon")
    assert code == 2 and "encoding: unknown encoding 'klingon'" in err
    code, _, err = run(capsys, "jobs", "add", "Remote", "--db", db, "--source", "sftp",
                       "--properties", str(props))
    assert code == 2 and "sftp_url:" in err
    assert get_job(store.connect(), "Students") is None
    code, _, err = run(capsys, "jobs", "edit", "Nobody", "--db", db, "--mon", "full@01:00")
    assert code == 2 and "no job named 'Nobody'" in err


def test_from_toml_and_json_files(setup, capsys, tmp_path):
    store, db, csv_path, props = setup
    toml = tmp_path / "job.toml"
    toml.write_text(f'''name = "Staff"
path = "{csv_path}"
properties_path = "students.properties"
encoding = "windows-1252"
schedule = "sat-sun=full@03:00"
[options]
allow_delete_outstanding = true
''', encoding="utf-8")
    code, _, err = run(capsys, "jobs", "add", "--db", db, "--from", str(toml), "--sun", "none")
    assert code == 0, err
    job = get_job(store.connect(), "Staff")
    assert job.properties_path == str(props)   # relative to the file's folder
    assert job.schedule.sat.mode == "full" and job.schedule.sun.mode == "none"
    assert job.options.allow_delete_outstanding and job.encoding == "windows-1252"

    edit = tmp_path / "edit.json"
    edit.write_text(json.dumps({"schedule": {"mon": {"mode": "incremental", "time": "04:00"}},
                                "options": {"summary_errors_only": True}}), encoding="utf-8")
    code, _, err = run(capsys, "jobs", "edit", "Staff", "--db", db, "--from", str(edit), "--rename", "Faculty")
    assert code == 0, err
    job = get_job(store.connect(), "Faculty")
    assert job.schedule.mon.mode == "incremental" and job.schedule.sat.mode == "full"
    assert job.options.summary_errors_only and job.options.allow_delete_outstanding

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "X"\npath = "/x.csv"\nproperties_path = "/p"\n[options]\nkeep_runs = "many"\n')
    code, _, err = run(capsys, "jobs", "add", "--db", db, "--from", str(bad))
    assert code == 2 and f"{bad}: options.keep_runs:" in err
    secret = tmp_path / "secret.toml"
    secret.write_text('name = "X"\npassword = "hunter2"\n')
    code, _, err = run(capsys, "jobs", "add", "--db", db, "--from", str(secret))
    assert code == 2 and "secrets are not read from files" in err and "hunter2" not in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "X",\n "path": }')
    code, _, err = run(capsys, "jobs", "add", "--db", db, "--from", str(broken))
    assert code == 2 and "line 2: not valid JSON" in err


def test_sftp_password_from_stdin_is_kept_apart_from_the_database(setup, capsys, monkeypatch):
    store, db, _, props = setup
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-Pw!\n"))
    code, out, err = run(capsys, "jobs", "add", "Remote", "--db", db, "--source", "sftp",
                         "--sftp-url", "sftp://SIS.example.org/Exports", "--user", "lib",
                         "--file-name", "Students.csv", "--properties", str(props), "--password-stdin")
    assert code == 0, err
    from patron_tui.services.jobs.secrets import default_secret_store

    assert default_secret_store(store.path).get("Remote").reveal() == "s3cret-Pw!"
    for f in Path(db).parent.glob("district.db*"):
        assert b"s3cret-Pw!" not in f.read_bytes()
    code, out, err = run(capsys, "jobs", "show", "Remote", "--db", db)
    assert "secret stored" in out and "s3cret" not in out + err
    # not from a terminal and no --password-stdin: refused, with the way to give it
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "jobs", "add", "Remote2", "--db", db, "--source", "sftp",
                       "--sftp-url", "sis.example.org", "--user", "lib", "--file-name", "S.csv",
                       "--properties", str(props))
    assert code == 2 and "--password-stdin" in err
    code, _, err = run(capsys, "jobs", "delete", "Remote", "--db", db)
    assert code == 0, err
    assert default_secret_store(store.path).get("Remote") is None


def test_jobs_test_prints_the_report(setup, capsys):
    _, db, csv_path, props = setup
    run(capsys, "jobs", "add", "Students", "--db", db, "--path", str(csv_path), "--properties", str(props))
    code, out, _ = run(capsys, "jobs", "test", "Students", "--db", db)
    assert code == 0 and "ok   file" in out and "ok   properties" in out
    csv_path.unlink()
    code, out, _ = run(capsys, "jobs", "test", "Students", "--db", db, "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and [c["ok"] for c in report["checks"]] == [True, False, True]


def test_only_managers_may_change_or_run_jobs(tmp_path, capsys):
    store = Store.create(tmp_path / "d.db", operator="admin")   # the login is not an operator here
    conn = store.connect()
    with ChangesetWriter(conn, operator="admin", run_id=None) as w:
        w.insert("operators", {"login_name": current_login(), "security_level": 4, "created_at": utc_now()})
    db = str(store.path)
    for argv in (["jobs", "add", "X", "--path", "/x.csv", "--properties", "/p"],
                 ["jobs", "run", "X"], ["jobs", "delete", "X"], ["jobs", "edit", "X", "--mon", "none"]):
        code, _, err = run(capsys, *argv, "--db", db)
        assert code == 2 and "may not manage scheduled patron updates" in err, argv
    code, out, _ = run(capsys, "jobs", "list", "--db", db)
    assert code == 0   # looking is allowed


def test_run_due_runs_what_is_due(setup, capsys):
    store, db, csv_path, props = setup
    code, _, err = run(capsys, "jobs", "add", "Students", "--db", db, "--path", str(csv_path),
                       "--properties", str(props), "--schedule", "mon-sun=full@00:00")
    assert code == 0, err
    conn = store.connect()
    # saved yesterday, so today's midnight slot (in the server's zone) is due, or a missed one
    conn.execute("UPDATE jobs SET updated_at = ?", ((datetime.now(timezone.utc).replace(microsecond=0)
                  .timestamp() - 2 * 86400,)))
    conn.execute("UPDATE jobs SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, 'unixepoch')")
    code, out, err = run(capsys, "run-due", "--db", db, "--json", "--max-missed-age", str(25 * 60))
    assert code == 0, err
    results = json.loads(out)
    assert [r["action"] for r in results] == ["missed", "run"] and results[-1]["status"] == "succeeded"
    code, out, _ = run(capsys, "run-due", "--db", db, "--json")
    assert json.loads(out) == []


def test_changing_the_login_way_does_not_keep_the_old_secret(setup, capsys, monkeypatch, tmp_path):
    from patron_tui.services.jobs.secrets import default_secret_store

    store, db, _, props = setup
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-one\n"))
    code, _, err = run(capsys, "jobs", "add", "Remote", "--db", db, "--source", "sftp",
                       "--sftp-url", "sis.example.org/x", "--user", "lib", "--file-name", "S.csv",
                       "--properties", str(props), "--password-stdin")
    assert code == 0, err
    secrets = default_secret_store(store.path)
    code, _, err = run(capsys, "jobs", "edit", "Remote", "--db", db, "--rename", "Remote SIS")
    assert code == 0, err
    assert secrets.get("Remote") is None and secrets.get("Remote SIS").reveal() == "pw-one"
    key = tmp_path / "id_ed25519"
    key.write_text("not read here")
    code, _, err = run(capsys, "jobs", "edit", "Remote SIS", "--db", db, "--auth", "key", "--key", str(key))
    assert code == 0, err
    assert secrets.get("Remote SIS") is None   # a password is not a key passphrase
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-two\n"))
    code, _, err = run(capsys, "jobs", "edit", "Remote SIS", "--db", db, "--auth", "password",
                       "--password-stdin")
    assert code == 0, err
    assert secrets.get("Remote SIS").reveal() == "pw-two"
    code, _, err = run(capsys, "jobs", "edit", "Remote SIS", "--db", db, "--source", "directory",
                       "--path", "/srv/x.csv")
    assert code == 0, err
    assert secrets.get("Remote SIS") is None
