"""`patron-tui import` and `patron-tui summary`: the headless import and its job summary."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from patron_tui.cli import main
from patron_tui.store import Store
from tests.conftest import allow_login

PROPS = """\
match=district_id
field.district_id=ID
field.barcode=Barcode
field.last_name=Last
field.first_name=First
field.site=School
required=barcode,last_name
"""


@pytest.fixture
def files(small_store: Store, tmp_path: Path) -> tuple[str, str, str]:
    # small_store: D0000..D0011 with barcodes P0000..P0011 at HS / ELM
    allow_login(small_store)   # the CLI acts as the login: importing needs "manage patrons"
    data = tmp_path / "in.csv"
    data.write_text(
        "ID,Barcode,Last,First,School\n"
        "D0001,P0001,Last1,First1,HS\n"          # unchanged
        "D0002,P0002,Last2,Second,HS\n"          # updated
        "N1,NB1,Newman,Nia,HS\n"                 # added
        "N2,P0003,Taken,Tom,HS\n"                # barcode conflict
        "N3,NB3,Odd,Otto,ACAD\n",                # added at the Union Site (warning)
        encoding="utf-8")
    props = tmp_path / "in.properties"
    props.write_text(PROPS, encoding="utf-8")
    return str(small_store.path), str(data), str(props)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_json(files, capsys):
    db, data, props = files
    code, out, err = run(capsys, "import", data, "--properties", props, "--db", db, "--json")
    assert code == 0, err
    result = json.loads(out)
    for key in ("run_id", "status", "mode", "read", "added", "updated", "unchanged", "skipped",
                "errors", "warnings", "conflicts", "duration_s", "by_code"):
        assert key in result, key
    assert result["status"] == "succeeded" and result["mode"] == "full"
    assert (result["read"], result["added"], result["updated"], result["unchanged"], result["skipped"],
            result["conflicts"], result["warnings"], result["errors"]) == (5, 2, 1, 1, 1, 1, 1, 0)

    code, out, err = run(capsys, "import", data, "--properties", props, "--db", db, "--json",
                         "--mode", "incremental")
    again = json.loads(out)
    assert (again["mode"], again["unchanged"], again["added"], again["updated"]) == ("incremental", 4, 0, 0)


def test_dry_run_json_changes_nothing(files, capsys):
    db, data, props = files
    code, out, _ = run(capsys, "import", data, "--properties", props, "--db", db, "--json", "--dry-run")
    assert code == 0
    result = json.loads(out)
    assert result["dry_run"] is True and result["added"] == 2
    conn = Store(db).connect()
    assert conn.execute("SELECT count(*) FROM patrons WHERE district_id = 'N1'").fetchone()[0] == 0
    conn.close()


def test_import_text_output_streams_messages(files, capsys):
    db, data, props = files
    code, out, _ = run(capsys, "import", data, "--properties", props, "--db", db)
    assert code == 0
    assert "barcode_conflict" in out and "union_site" in out
    assert "2 added" in out and "1 conflicts" in out


def test_summary_json_and_errors_only(files, capsys):
    db, data, props = files
    _, out, _ = run(capsys, "import", data, "--properties", props, "--db", db, "--json")
    run_id = json.loads(out)["run_id"]
    code, out, _ = run(capsys, "summary", str(run_id), "--db", db, "--json")
    assert code == 0
    full = json.loads(out)
    assert full["status"] == "succeeded" and full["summary"]["added"] == 2
    levels = {m["level"] for m in full["messages"]}
    assert {"info", "skipped", "warning"} <= levels
    code, out, _ = run(capsys, "summary", str(run_id), "--db", db, "--json", "--errors-only")
    errors = json.loads(out)["messages"]
    assert errors and all(m["level"] != "info" for m in errors)
    assert [m["code"] for m in errors if m["level"] == "skipped"] == ["barcode_conflict"]
    code, out, _ = run(capsys, "summary", str(run_id), "--db", db, "--csv", "-", "--errors-only")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["line", "barcode", "level", "code", "text"]
    assert {r[3] for r in rows[1:]} == {"barcode_conflict", "union_site"}
    code, out, _ = run(capsys, "summary", str(run_id), "--db", db)
    assert code == 0 and "succeeded" in out and "barcode_conflict" in out


def test_summary_of_a_missing_run(files, capsys):
    db, _, _ = files
    code, _, err = run(capsys, "summary", "999", "--db", db)
    assert code == 2 and "no run 999" in err


def test_bad_properties_file_exits_2_with_file_and_line(files, tmp_path, capsys):
    db, data, _ = files
    bad = tmp_path / "bad.properties"
    bad.write_text("match=district_id\nfield.last_nmae=Last\n", encoding="utf-8")
    code, out, err = run(capsys, "import", data, "--properties", str(bad), "--db", db, "--json")
    assert code == 2 and out == ""
    assert f"{bad}:2:" in err


def test_failed_import_exits_2(files, tmp_path, capsys):
    db, _, props = files
    data = tmp_path / "short.csv"
    data.write_text("ID,Barcode\nX,Y\n", encoding="utf-8")
    code, out, _ = run(capsys, "import", str(data), "--properties", props, "--db", db, "--json")
    result = json.loads(out)
    assert code == 2 and result["status"] == "failed" and "short.csv:1:" in result["error"]
