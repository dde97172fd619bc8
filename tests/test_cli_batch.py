"""`patron-tui batch-update` and `patron-tui fill-queues`: the headless twins of the batch
update tool and its queue filler."""

from __future__ import annotations

import json

import pytest

from patron_tui.cli import main
from patron_tui.store import current_login

from .batch_helpers import add_catalog, build, dump, profiles


@pytest.fixture
def store(tmp_path):
    store = build(tmp_path / "district.db", operator=current_login())   # the CLI's operator is the login
    add_catalog(store)
    return store


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_prints_the_preview_and_changes_nothing(store, capsys):
    conn = store.connect()
    before = dump(conn)
    code, out, err = run(capsys, "batch-update", "--db", str(store.path), "--query", "grade = 5", "--medium", "DB",
                         "--max-items-out", "9", "--nightly-debug", "on", "--dry-run")
    assert code == 0, err
    assert "grade = 5 - 6 patrons (dry run: nothing changed)" in out
    assert "Maximum items out: 5 profiles change" in out and "Nightly debug: 3 profiles change" in out
    assert "P02" in out and "adams, Bo" in out and "5 -> 9" in out
    code, out, err = run(capsys, "batch-update", "--db", str(store.path), "--query", "", "--medium", "db",
                         "--status-of-service", "Active", "--dry-run", "--json")
    data = json.loads(out)
    assert (data["patrons"], data["profiles_created"]) == (10, 2)
    assert {f["field"]: f["changes"] for f in data["fields"]} == {"status_of_service": 3, "nightly_debug": 4}
    assert dump(conn) == before


def test_batch_update_applies_prints_the_summary_and_fills_the_queues(store, capsys):
    code, out, err = run(capsys, "batch-update", "--db", str(store.path), "--query", "grade = 6", "--medium", "DB",
                         "--items-per-shipment", "2", "--space", "01/05/2026:7:1:barcode", "--auto-select", "off",
                         "--add-subject", "SCI", "--fill-queues", "--queue-length", "2")
    assert code == 0, err
    assert "4 patrons: 2 profiles updated, 2 created, 0 unchanged, 0 errors, 4 queues queued" in out
    assert "queue filler succeeded: 4 queues" in out
    conn = store.connect()
    got = profiles(conn)
    assert [got[b]["next_service_date"] for b in ("P07", "P08", "P09", "P10")] == \
        ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]
    assert {(got[b]["items_per_shipment"], got[b]["auto_select"], got[b]["queue_length"])
            for b in ("P07", "P08", "P09", "P10")} == {(2, 0, 2)}
    queued = dict(conn.execute("SELECT profile_id, count(*) FROM service_queue GROUP BY profile_id"))
    assert all(queued[got[b]["id"]] == 2 for b in ("P07", "P08", "P09", "P10"))
    code, out, _ = run(capsys, "fill-queues", "--db", str(store.path))
    assert (code, out) == (0, "no service queue is waiting to be filled\n")


def test_refused_patrons_make_the_error_report_and_exit_1(store, capsys):
    conn = store.connect()
    p04 = conn.execute("SELECT id FROM patrons WHERE barcode = 'P04'").fetchone()[0]
    conn.execute("CREATE TRIGGER locked BEFORE UPDATE ON patron_profiles WHEN OLD.patron_id = "
                 f"{p04} BEGIN SELECT RAISE(ABORT, 'profile locked'); END")
    code, out, err = run(capsys, "batch-update", "--db", str(store.path), "--query", "grade = 5", "--medium", "DB",
                         "--max-items-out", "0", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["status"] == "succeeded" and data["summary"]["errors"] == 1
    assert data["errors"][0]["barcode"] == "P04" and "profile locked" in data["errors"][0]["text"]
    assert "[P04] Cole, Di (patron #5): the DB profile was not changed; the database refused it: profile locked." \
        in err
    got = profiles(conn)
    assert [got[b]["max_items_out"] for b in ("P01", "P02", "P03", "P04", "P05", "P06")] == [0, 0, 0, 7, 0, 0]


def test_refused_operator_and_bad_input_exit_2_with_a_sentence(tmp_path, store, capsys):
    other = build(tmp_path / "other.db")   # created by "tester": the login is not an operator there
    before = dump(other.connect())
    code, out, err = run(capsys, "batch-update", "--db", str(other.path), "--query", "", "--medium", "DB",
                         "--max-items-out", "1")
    assert code == 2 and out == ""
    assert f"Operator {current_login()!r}" in err and '"may use batch tools"' in err
    assert dump(other.connect()) == before
    db = str(store.path)
    for args, message in (
        (["--medium", "XX"], "There is no medium 'XX'"),
        (["--medium", "DB", "--max-items-out", "100"], "--max-items-out: Input should be less than or equal to 99"),
        (["--medium", "DB", "--space", "01/05/2026:7"], "--space: give START:EVERY_DAYS:GROUP_SIZE"),
        (["--medium", "DB", "--space", "01/05/2026:7:3:shoe_size"], "order by one of"),
        (["--medium", "DB", "--next-service-date", "13/45/2026"], "is not a date; write it MM/DD/YYYY"),
    ):
        code, out, err = run(capsys, "batch-update", "--db", db, "--query", "", *args)
        assert code == 2 and message in err, (args, err)
    code, out, err = run(capsys, "batch-update", "--db", db, "--set", "Nope", "--medium", "DB")
    assert code == 2 and "No query set 'Nope'" in err
    code, out, err = run(capsys, "batch-update", "--db", db, "--query", "grade = = 1", "--medium", "DB")
    assert code == 2 and "does not compile" in err
