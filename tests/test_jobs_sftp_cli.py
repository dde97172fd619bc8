"""`patron-tui jobs add|test|run` for an SFTP job against a real sshd: the password comes from
standard input and goes to the secret store only; Test Server shows the host key's fingerprint
and refuses it until accepted; the run imports the file; the password is never printed."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path


from patron_tui.cli import main
from patron_tui.services.jobs import sftp as sftp_mod
from patron_tui.services.jobs.secrets import default_secret_store
from patron_tui.services.jobs.sftp import KnownHosts, known_hosts_path

from patron_tui.store import current_login

from tests.jobs_helpers import HEADER, PROPS, make_store
from tests.sshd import SshServer, ssh_keygen_fingerprint


def test_jobs_add_test_and_run_over_sftp(sshd_password: SshServer, tmp_path: Path, monkeypatch, capsys) -> None:
    srv = sshd_password
    monkeypatch.setattr(sftp_mod, "SETTLE_SECONDS", 0.0)   # no ten-second look twice in a test
    folder = "cli" + uuid.uuid4().hex[:8]
    srv.serve(f"{folder}/students.csv", HEADER + "D1,B1,Able,Ann,HS\nD2,B2,Baker,Bob,HS\n")
    props = tmp_path / "students.properties"
    props.write_text(PROPS, encoding="utf-8")
    store = make_store(tmp_path, operator=current_login())   # the CLI's operator is the login
    db = str(store.path)

    monkeypatch.setattr("sys.stdin", io.StringIO(srv.password + "\n"))
    assert main(["jobs", "add", "Students", "--db", db, "--source", "sftp", "--sftp-url", srv.sftp_url(folder),
                 "--port", str(srv.port), "--user", srv.password_user, "--file-name", "students.csv",
                 "--properties", str(props), "--password-stdin"]) == 0
    assert default_secret_store(db).get("Students").reveal() == srv.password

    # unknown host key: Test Server fails at "host key" and prints the fingerprint
    capsys.readouterr()
    assert main(["jobs", "test", "Students", "--db", db, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    expected = ssh_keygen_fingerprint(srv.host_pub)
    assert report["fingerprint"] == expected
    assert [(c["step"], c["ok"]) for c in report["checks"][:2]] == [("connect", True), ("host key", False)]

    # accepting another fingerprint than the server shows accepts nothing
    assert main(["jobs", "test", "Students", "--db", db, "--accept", "SHA256:not-the-key"]) == 2
    assert "nothing was accepted" in capsys.readouterr().err
    assert not KnownHosts(known_hosts_path(db)).keys(srv.host, srv.port)
    # the operator accepts the fingerprint Test Server showed
    assert main(["jobs", "test", "Students", "--db", db, "--accept", expected]) == 0
    out = capsys.readouterr().out
    assert f"host key {expected} of {srv.host}:{srv.port} accepted" in out
    assert f"host key   {expected}" in out and "students.csv is there" in out

    assert main(["jobs", "run", "Students", "--db", db, "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert (run["status"], run["added"]) == ("succeeded", 2)

    assert main(["jobs", "show", "Students", "--db", db, "--json"]) == 0
    shown = capsys.readouterr()
    for text in (out, shown.out, shown.err, json.dumps(report), json.dumps(run)):
        assert srv.password not in text
    assert srv.password.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("district.db*"))
