"""`patron-tui query` and `patron-tui sets`: the headless twins of the Patrons
section's search, query sets and export."""

from __future__ import annotations

import csv
import json

import pytest

from patron_tui.cli import main
from patron_tui.services import query_sets as qsets
from patron_tui.store import Store

from tests.conftest import add_patrons, allow_login

HS = "site = HS"  # 8 of the small district's 12 patrons
BAD = "frobnicate = 1"  # no such field


@pytest.fixture
def db(small_store: Store) -> str:
    add_patrons(small_store, [{"barcode": "X1", "site": "HS", "last_name": '=HYPERLINK("http://x")',
                               "first_name": "Łukasz"}])
    allow_login(small_store)   # saving a query set needs "may use batch tools" (issue 14 item 9)
    return str(small_store.path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_count(db, capsys):
    assert run(capsys, "query", HS, "--db", db, "--count") == (0, "9\n", "")


def test_db_before_the_subcommand(db, capsys):
    assert run(capsys, "--db", db, "query", HS, "--count") == (0, "9\n", "")


def test_table_by_default(db, capsys):
    code, out, err = run(capsys, "query", HS, "--db", db, "--limit", "3", "--columns", "barcode,last_name")
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0] == HS
    assert lines[1].split() == ["Barcode", "Last", "name"]
    assert len(lines) == 3 + 3 + 1
    assert lines[-1] == "9 patrons match (showing the first 3; --limit 0 shows all)"


def test_table_shows_data_as_text(tmp_path, capsys):
    store = Store.create(tmp_path / "d.db", operator="tester")
    add_patrons(store, [{"barcode": "E1", "site": "UNION", "last_name": "\x1b]0;pwned\x07Evil"}])
    code, out, _ = run(capsys, "query", "", "--db", str(store.path), "--columns", "last_name")
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "␛]0;pwned␇Evil" in out


def test_json(db, capsys):
    code, out, err = run(capsys, "query", HS, "--db", db, "--json", "--limit", "2", "--columns", "barcode,balance")
    data = json.loads(out)
    assert code == 0 and err == ""
    assert (data["statement"], data["count"], data["set"], data["saved"], data["frozen"]) == (
        HS, 9, None, None, False)
    assert data["columns"] == ["barcode", "balance"]
    assert len(data["rows"]) == 2 and set(data["rows"][0]) == {"barcode", "balance"}
    data = json.loads(run(capsys, "query", HS, "--db", db, "--json", "--limit", "0")[1])
    assert len(data["rows"]) == 9


def test_json_count_has_no_rows(db, capsys):
    data = json.loads(run(capsys, "query", HS, "--db", db, "--json", "--count")[1])
    assert data["count"] == 9 and "rows" not in data


def test_bad_statement_exits_2_with_the_caret_on_stderr(db, capsys):
    code, out, err = run(capsys, "query", BAD, "--db", db, "--save", "Never")
    assert (code, out) == (2, "")
    assert BAD in err and "^" in err
    caret_line = next(line for line in err.splitlines() if line.strip() == "^" or line.lstrip().startswith("^"))
    assert caret_line.strip().startswith("^")
    conn = Store(db).connect()
    try:
        assert qsets.list_sets(conn) == []  # nothing saved
    finally:
        conn.close()


def test_csv(db, capsys, tmp_path):
    out_file = tmp_path / "hs.csv"
    code, out, err = run(capsys, "query", HS, "--db", db, "--csv", str(out_file),
                         "--columns", "barcode,last_name,first_name", "--encoding", "utf-8-sig", "--sort", "id")
    assert code == 0 and "9 patron(s) written to" in out and err == ""
    raw = out_file.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with open(out_file, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Barcode", "Last name", "First name"] and len(rows) == 10
    assert rows[-1] == ["X1", "'=HYPERLINK(\"http://x\")", "Łukasz"]


def test_csv_windows_1252_refuses_with_a_message_and_no_file(db, capsys, tmp_path):
    out_file = tmp_path / "hs.csv"
    code, out, err = run(capsys, "query", HS, "--db", db, "--csv", str(out_file), "--encoding", "windows-1252")
    assert code == 2 and out == "" and not out_file.exists()
    assert "patron X1, first_name" in err and "--replace-unencodable" in err
    code, out, err = run(capsys, "query", HS, "--db", db, "--csv", str(out_file), "--encoding", "windows-1252",
                         "--replace-unencodable", "--columns", "barcode,first_name", "--sort", "id")
    assert code == 0 and "1 cell(s)" in out
    assert out_file.read_bytes().endswith(b"X1,?ukasz\r\n")


def test_csv_to_stdout(db, capsysbinary):
    code = main(["query", HS, "--db", db, "--csv", "-", "--columns", "barcode", "--sort", "id"])
    out, err = capsysbinary.readouterr()
    assert code == 0
    assert out.split(b"\r\n")[:2] == [b"Barcode", b"P0001"] and b"written to the output" in err


def test_save_freeze_and_run_the_set(db, capsys):
    code, out, err = run(capsys, "query", HS, "--db", db, "--save", "High school", "--freeze", "--count")
    assert (code, out) == (0, "9\n") and "saved as query set 'High school' (frozen with 9 patrons)" in err
    add_patrons(Store(db), [{"barcode": "X2", "site": "HS"}])
    assert run(capsys, "query", "--set", "high school", "--db", db, "--count")[1] == "9\n"  # frozen
    assert run(capsys, "query", HS, "--db", db, "--count")[1] == "10\n"  # the statement itself is live
    data = json.loads(run(capsys, "query", "--set", "High school", "--freeze", "--db", db, "--json")[1])
    assert (data["count"], data["frozen"], data["statement"], data["saved"]["member_count"]) == (10, True, HS, 10)


def test_save_refuses_a_taken_name_unless_replaced(db, capsys):
    assert run(capsys, "query", HS, "--db", db, "--save", "S", "--count")[0] == 0
    code, out, err = run(capsys, "query", "", "--db", db, "--save", "s", "--count")
    assert code == 2 and "already exists" in err
    code, out, err = run(capsys, "query", "", "--db", db, "--save", "S", "--replace", "--json")
    assert code == 0 and json.loads(out)["saved"]["statement"] == ""


def test_unknown_set(db, capsys):
    code, _, err = run(capsys, "query", "--set", "Nope", "--db", db)
    assert code == 2 and "no query set 'Nope'" in err


@pytest.mark.parametrize("argv", [
    ["query", "--count"],  # neither statement nor set
    ["query", HS, "--set", "S"],  # both
    ["query", HS, "--freeze"],
    ["query", HS, "--replace"],
    ["query", HS, "--encoding", "utf-8"],
    ["query", HS, "--csv", "-", "--json"],
    ["query", HS, "--encoding", "latin-1", "--csv", "x.csv"],
    ["query", HS, "--limit", "-1"],
])
def test_usage_errors_exit_2(db, capsys, argv):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--db", db])
    assert info.value.code == 2


def test_unknown_columns(db, capsys):
    code, _, err = run(capsys, "query", HS, "--db", db, "--columns", "barcode,password_hash")
    assert code == 2 and "unknown column(s): password_hash" in err


def test_columns_help(capsys):
    code, out, _ = run(capsys, "query", "--columns", "help")
    assert code == 0 and "balance" in out and "password_hash" not in out


def test_missing_database(tmp_path, capsys):
    code, _, err = run(capsys, "query", HS, "--db", str(tmp_path / "none.db"))
    assert code == 2 and "no patron database" in err


def test_sets(db, capsys):
    assert run(capsys, "sets", "--db", db)[1].startswith("no saved query sets")
    run(capsys, "query", HS, "--db", db, "--save", "Zeta", "--count")
    run(capsys, "query", "", "--db", db, "--save", "alpha", "--freeze", "--count")
    code, out, _ = run(capsys, "sets", "--db", db)
    assert code == 0 and out.index("alpha") < out.index("Zeta") and "frozen" in out and HS in out
    data = json.loads(run(capsys, "sets", "--db", db, "--json")[1])
    assert [(s["name"], s["member_count"]) for s in data] == [("alpha", 13), ("Zeta", None)]


def test_error_messages_show_data_as_text(tmp_path, capsys):
    store = Store.create(tmp_path / "d.db", operator="tester")
    add_patrons(store, [{"barcode": "\x1b[31mRED", "site": "UNION", "last_name": "Łukasz"}])
    code, out, err = run(capsys, "query", "", "--db", str(store.path), "--csv", str(tmp_path / "x.csv"),
                         "--encoding", "windows-1252")
    assert code == 2 and "\x1b" not in err and "patron ␛[31mRED, last_name" in err


def test_freezing_a_saved_set_again(db, capsys):
    run(capsys, "query", HS, "--db", db, "--save", "HS")
    code, out, err = run(capsys, "query", "--set", "HS", "--freeze", "--db", db, "--count")
    assert (code, out) == (0, "9\n") and "froze query set 'HS' (frozen with 9 patrons)" in err
