"""Every guarded action, from the CLI, refused for an operator who lacks its permission, with a
sentence naming the permission; and allowed for one who has it. The operator is the login
name (monkeypatched here: the CLI runs in this process with `main([...])`)."""

from __future__ import annotations

import sqlite3

import pytest

from patron_tui.cli import main
from patron_tui.services import permissions as P
from patron_tui.services.operators import add_operator

from .conftest import district


@pytest.fixture
def db(tmp_path):
    store = district(tmp_path / "district.db", [
        {"barcode": "P1", "district_id": "D1", "site": "HS", "last_name": "One", "grade": "5",
         "security_group": "STUDENT"},
        {"barcode": "P2", "district_id": "D2", "site": "HS", "last_name": "Two", "grade": "6",
         "security_group": "STUDENT"},
    ])
    conn = store.connect()
    try:
        add_operator(conn, "tester", "nobody", security_level=5)
        add_operator(conn, "tester", "manager", security_level=2, manage_patrons=True)
        add_operator(conn, "tester", "batcher", security_level=2, batch_tools=True)
        add_operator(conn, "tester", "resetter", security_level=2, batch_tools=True, reset_passwords=True)
        add_operator(conn, "tester", "admin2", security_level=0)
    finally:
        conn.close()
    (tmp_path / "in").mkdir()
    return store


def as_login(monkeypatch, login: str) -> None:
    monkeypatch.setattr("patron_tui.store.current_login", lambda: login)
    monkeypatch.setattr("patron_tui.store.identity.current_login", lambda: login)


def cli(monkeypatch, capsys, login: str, *argv: str) -> tuple[int, str]:
    as_login(monkeypatch, login)
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def patrons(store) -> list[tuple]:
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute("SELECT * FROM patrons ORDER BY id").fetchall()
    finally:
        conn.close()


def test_require_names_the_missing_permission(db):
    conn = db.connect()
    try:
        for perm in P.PERMISSIONS:
            assert P.has_permission(conn, "tester", perm)   # level 0 may do everything
            assert P.has_permission(conn, "admin2", perm)
            with pytest.raises(P.PermissionDenied, match="not in the operators table"):
                P.require(conn, "stranger", perm)
        assert P.has_permission(conn, "manager", "manage_jobs")
        assert not P.has_permission(conn, "manager", "batch_tools")
        with pytest.raises(P.PermissionDenied, match='"manage patrons for the district"'):
            P.require(conn, "batcher", "manage_jobs")
        with pytest.raises(P.PermissionDenied, match='"may use batch tools"'):
            P.require(conn, "manager", "batch_tools")
        # resetting passwords needs both batch tools and the reset permission
        with pytest.raises(P.PermissionDenied, match='"may reset patron passwords"'):
            P.require(conn, "batcher", "reset_passwords")
        P.require(conn, "resetter", "reset_passwords")
        with pytest.raises(P.PermissionDenied, match="needs security level 0"):
            P.require(conn, "manager", "manage_operators")
        with pytest.raises(P.PermissionDenied, match="restore the database.*security level 0"):
            P.require(conn, "resetter", "restore")
        with pytest.raises(ValueError, match="unknown permission"):
            P.require(conn, "tester", "fly")   # type: ignore[arg-type]
        # the older helpers agree with require
        assert P.may_use_batch_tools(conn, "batcher") and not P.may_use_batch_tools(conn, "manager")
        assert P.may_manage_jobs(conn, "manager") and not P.may_manage_jobs(conn, "batcher")
        from patron_tui.services.jobs.store import may_manage, require_manager

        assert may_manage(conn, "manager") and not may_manage(conn, "nobody")
        with pytest.raises(PermissionError, match="may not manage scheduled patron updates"):
            require_manager(conn, "nobody")
    finally:
        conn.close()


def _job_args(tmp_path, db) -> list[str]:
    return ["jobs", "add", "Nightly", "--db", str(db.path), "--source", "directory",
            "--path", str(tmp_path / "in" / "students.csv"),
            "--properties", str(tmp_path / "p.properties")]


def test_jobs_add_and_run_need_manage_patrons(db, tmp_path, monkeypatch, capsys):
    (tmp_path / "p.properties").write_text("match=district_id\nfield.district_id=ID\nfield.site=S\n"
                                           "field.last_name=L\n", encoding="utf-8")
    code, text = cli(monkeypatch, capsys, "batcher", *_job_args(tmp_path, db))
    assert code == 2 and "'batcher' may not manage scheduled patron updates" in text
    assert '"manage patrons for the district"' in text
    code, text = cli(monkeypatch, capsys, "manager", *_job_args(tmp_path, db))
    assert code == 0, text
    code, text = cli(monkeypatch, capsys, "nobody", "jobs", "run", "Nightly", "--db", str(db.path))
    assert code == 2 and "'nobody' may not manage scheduled patron updates" in text
    conn = db.connect()
    try:
        assert conn.execute("SELECT count(*) FROM runs WHERE kind = 'job'").fetchone()[0] == 0
    finally:
        conn.close()


def test_batch_update_needs_batch_tools(db, monkeypatch, capsys):
    before = patrons(db)
    code, text = cli(monkeypatch, capsys, "manager", "batch-update", "--db", str(db.path), "--query", "",
                     "--medium", "DB", "--max-items-out", "4")
    assert code == 2 and "'manager'" in text and '"may use batch tools"' in text
    assert patrons(db) == before


def test_utilities_need_batch_tools_and_their_own_rules(db, monkeypatch, capsys):
    before = patrons(db)
    code, text = cli(monkeypatch, capsys, "manager", "utility", "change-patron-security-group",
                     "--db", str(db.path), "--query", "", "--new-security-group", "TEACHER", "--yes")
    assert code == 2 and '"may use batch tools"' in text, text
    # an operator of level 2 may not hand out a group of level 2 or lower
    code, text = cli(monkeypatch, capsys, "batcher", "utility", "change-patron-security-group",
                     "--db", str(db.path), "--query", "", "--new-security-group", "LIBRARIAN", "--yes")
    assert code == 2 and "may not assign the security group 'LIBRARIAN'" in text, text
    assert patrons(db) == before


def test_reset_patron_accounts_needs_the_reset_permission(db, monkeypatch, capsys):
    before = patrons(db)
    code, text = cli(monkeypatch, capsys, "batcher", "utility", "reset-patron-accounts",
                     "--db", str(db.path), "--query", "", "--username-by", "barcode", "--yes")
    if "No utility named" in text:
        pytest.skip("Reset Patron Accounts is not in the CLI yet")
    assert code == 2 and '"may reset patron passwords"' in text, text
    assert patrons(db) == before


def test_operators_add_edit_remove_need_a_district_administrator(db, monkeypatch, capsys):
    for argv in (("operators", "add", "eve", "--level", "0"),
                 ("operators", "edit", "nobody", "--level", "0"),
                 ("operators", "remove", "admin2")):
        code, text = cli(monkeypatch, capsys, "manager", *argv, "--db", str(db.path))
        assert code == 2 and "'manager' (security level 2) may not manage operators" in text, text
        assert "security level 0" in text
    code, text = cli(monkeypatch, capsys, "manager", "operators", "list", "--db", str(db.path))
    assert code == 0 and "admin2" in text   # anyone may see who may do what
    code, text = cli(monkeypatch, capsys, "admin2", "operators", "add", "eve", "--level", "3",
                     "--batch-tools", "--db", str(db.path))
    assert code == 0 and "eve" in text


def test_backup_needs_manage_patrons_and_restore_a_district_administrator(db, tmp_path, monkeypatch, capsys):
    target = tmp_path / "copy.db"
    code, text = cli(monkeypatch, capsys, "batcher", "backup", str(target), "--db", str(db.path))
    assert code == 2 and "may not back up the database" in text and not target.exists()
    code, text = cli(monkeypatch, capsys, "manager", "backup", str(target), "--db", str(db.path))
    assert code == 0 and target.is_file(), text
    code, text = cli(monkeypatch, capsys, "manager", "restore", str(target), "--yes", "--db", str(db.path))
    assert code == 2 and "may not restore the database from a backup" in text
    assert not list(tmp_path.glob("district.db.before-restore-*"))
    code, text = cli(monkeypatch, capsys, "admin2", "restore", str(target), "--yes", "--db", str(db.path))
    assert code == 0, text
    assert len(list(tmp_path.glob("district.db.before-restore-*"))) == 1


def test_import_and_conflict_resolution_need_manage_patrons(db, tmp_path, monkeypatch, capsys):
    """Importing a patron file by hand (now or in the background) and resolving its barcode
    conflicts change district patrons: "manage patrons for the district" or level 0."""
    props = tmp_path / "p.properties"
    props.write_text("match=district_id\nfield.district_id=ID\nfield.barcode=Barcode\nfield.site=School\n"
                     "field.last_name=Last\n", encoding="utf-8")
    csv_path = tmp_path / "in" / "students.csv"
    csv_path.write_text("ID,Barcode,School,Last\nD1,P1,HS,Renamed\nD9,P2,HS,Taker\n", encoding="utf-8")
    before = patrons(db)
    for extra in ([], ["--background"]):
        code, text = cli(monkeypatch, capsys, "batcher", "import", str(csv_path), "--properties", str(props),
                         "--db", str(db.path), *extra)
        assert code == 2 and "'batcher' may not import patron files" in text, text
        assert '"manage patrons for the district"' in text
    assert patrons(db) == before
    code, text = cli(monkeypatch, capsys, "manager", "import", str(csv_path), "--properties", str(props),
                     "--db", str(db.path), "--json")
    assert code in (0, 1), text   # the D9 record takes P2's barcode: a conflict, kept for resolution
    assert patrons(db) != before
    conn = db.connect()
    try:
        (conflict_id,) = conn.execute("SELECT id FROM import_conflicts").fetchone()
        kinds = [r[0] for r in conn.execute("SELECT kind FROM runs ORDER BY id")]
    finally:
        conn.close()
    assert kinds.count("import") == 1   # the refused ones left no run behind
    after_import = patrons(db)
    code, text = cli(monkeypatch, capsys, "nobody", "resolve", str(conflict_id), "move", "--db", str(db.path))
    assert code == 2 and "may not import patron files or resolve their barcode conflicts" in text
    assert patrons(db) == after_import
