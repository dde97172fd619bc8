"""`patron-tui jobs add/edit` with the Inactivation / Deletion rules, and `jobs preview`."""

from __future__ import annotations

import json

import pytest

from patron_tui.cli import main
from patron_tui.services.jobs import directory, get_job
from patron_tui.store import ChangesetWriter, current_login

from tests.jobs_helpers import make_store, write_files


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(directory, "SETTLE_SECONDS", 0)
    store = make_store(tmp_path, operator=current_login())
    csv_path, props = write_files(tmp_path, ["D1,B1,Able,Ann,HS"])
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for i, (status, seen, since) in enumerate([
            ("Active", "2026-01-01T00:00:00Z", None),                       # not updated for months
            ("Active", "2026-06-20T00:00:00Z", None),                       # updated recently
            ("Inactive", "2025-01-01T00:00:00Z", "2025-09-01T00:00:00Z"),   # long inactive, no loans
            ("Inactive", "2025-01-01T00:00:00Z", "2025-09-01T00:00:00Z"),   # long inactive, a loan
        ]):
            pid = w.insert("patrons", {"barcode": f"P{i}", "district_id": f"X{i}", "site": "HS",
                                       "last_name": f"L{i}", "status": status, "last_seen_import_at": seen,
                                       "inactive_since": since, "created_at": "2020-01-01T00:00:00Z",
                                       "updated_at": "2020-01-01T00:00:00Z"})
        w.insert("checkouts", {"patron_id": pid, "item_barcode": "I", "checked_out_at": "2025-08-01",
                               "due_at": "2025-08-15"})
    conn.close()
    return store, str(store.path), csv_path, props


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_rules_by_options_show_and_preview(setup, capsys):
    store, db, csv_path, props = setup
    code, _, err = run(capsys, "jobs", "add", "Students", "--db", db, "--path", str(csv_path),
                       "--properties", str(props), "--records-read-greater-than", "40000",
                       "--patron-types", "Student,Guest", "--inactivate-days", "30", "--set-homeroom-undefined",
                       "--preface-username", "--delete-inactive", "60:regardless",
                       "--min-percent-of-previous", "90%")
    assert code == 0, err
    conn = store.connect()
    rules = get_job(conn, "Students").inactivation
    conn.close()
    assert (rules.records_read_greater_than, rules.patron_types, rules.inactivate_days) == \
        (40000, ("Student", "Guest"), 30)
    assert rules.set_homeroom_undefined and rules.preface_username and rules.min_percent_of_previous == 90
    assert (rules.delete_inactive.days, rules.delete_inactive.condition) == (60, "regardless")

    code, out, _ = run(capsys, "jobs", "show", "Students", "--db", db)
    assert "more than 40,000 records" in out and "regardless of checkouts" in out and "Student, Guest" in out

    # the patrons above have no patron type: limited to Student/Guest, the rules take nobody
    code, out, _ = run(capsys, "jobs", "preview", "Students", "--db", db, "--date", "2026-07-01", "--json")
    assert json.loads(out)["rules"] == {
        "inactivate": {"inactivated": 0, "deleted": 0, "kept_back": 0},
        "delete_inactive": {"inactivated": 0, "deleted": 0, "kept_back": 0}}
    code, _, err = run(capsys, "jobs", "edit", "Students", "--db", db, "--patron-types", "")
    assert code == 0, err
    code, out, _ = run(capsys, "jobs", "preview", "Students", "--db", db, "--date", "2026-07-01", "--json")
    assert json.loads(out)["rules"] == {
        "inactivate": {"inactivated": 1, "deleted": 0, "kept_back": 0},
        "delete_inactive": {"inactivated": 0, "deleted": 1, "kept_back": 1}}   # the loan keeps one back
    code, _, _ = run(capsys, "jobs", "edit", "Students", "--db", db, "--allow-delete-outstanding")
    code, out, _ = run(capsys, "jobs", "preview", "Students", "--db", db, "--date", "2026-07-01")
    assert code == 0 and "Delete patrons inactive for 60 days" in out and "2 deleted" in out

    code, _, _ = run(capsys, "jobs", "edit", "Students", "--db", db, "--inactivate-days", "off",
                     "--delete-inactive", "off")
    conn = store.connect()
    assert not get_job(conn, "Students").inactivation.any_rule
    conn.close()


@pytest.mark.parametrize("argv, message", [
    (["--delete-inactive", "60:sometimes"], "--delete-inactive"),
    (["--delete-inactive", "6o"], "not a whole number"),
    (["--delete-outstanding", "age=100"], "inactivation.delete_outstanding.value"),
    (["--delete-outstanding", "height=3"], "inactive-days=N"),
    (["--records-read-greater-than", "1000000"], "records_read_greater_than"),
])
def test_bad_rule_options_name_the_field(setup, capsys, argv, message):
    _, db, csv_path, props = setup
    code, _, err = run(capsys, "jobs", "add", "Students", "--db", db, "--path", str(csv_path),
                       "--properties", str(props), *argv)
    assert code == 2 and message in err, err


def test_rules_from_a_toml_file(setup, capsys, tmp_path):
    store, db, csv_path, props = setup
    spec = tmp_path / "job.toml"
    spec.write_text(f'''name = "Staff"
path = "{csv_path}"
properties_path = "{props}"

[inactivation]
records_read_greater_than = 10
delete_graduated_seniors = true
delete_outstanding = {{ by = "age", value = 21 }}
''', encoding="utf-8")
    code, _, err = run(capsys, "jobs", "add", "--db", db, "--from", str(spec))
    assert code == 0, err
    conn = store.connect()
    rules = get_job(conn, "Staff").inactivation
    conn.close()
    assert rules.delete_graduated_seniors and (rules.delete_outstanding.by, rules.delete_outstanding.value) == ("age", 21)
