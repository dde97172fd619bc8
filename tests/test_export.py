"""CSV export: chosen columns, three encodings, formula neutralization, keyset
streaming, and no half file when anything fails."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from patron_tui.services import export
from patron_tui.services.export import ExportEncodingError, ExportError, export_csv
from patron_tui.store import ChangesetWriter, Store

from tests.conftest import add_patrons

NAMES = [  # (barcode, last, first): every one of these fits Windows-1252
    ("A1", "Müller", "Zoë"),
    ("A2", "Ñúñez", "José"),
    ("A3", "Œuvray", "Šárka"),
    ("A4", "D'Angelo-Smith", "Renée"),
]
FORMULAS = [
    ("F1", '=HYPERLINK("http://x")', "Eve"),
    ("F2", "+1+2", "Plus"),
    ("F3", "-2+3", "Minus"),
    ("F4", "@SUM(A1)", "At"),
    ("F5", "\tTab", "Tab"),
    ("F6", "\rCR", "Cr"),
]
WIDE = [("W1", "Łukasz", "Wróbel"), ("W2", "李", "小龍")]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.create(tmp_path / "district.db", operator="tester")
    rows = [{"barcode": b, "site": "UNION", "last_name": last, "first_name": first}
            for b, last, first in NAMES + FORMULAS]
    rows.append({"barcode": "-123", "site": "UNION", "last_name": "Negative", "first_name": "Barcode"})
    ids = add_patrons(store, rows)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for pid, cents in ((ids[0], 1250), (ids[0], 5), (ids[1], -1250)):
            w.insert("charges", {"patron_id": pid, "kind": "other", "amount_cents": abs(cents),
                                 "balance_cents": cents, "transaction_date": "2026-01-01"})
    conn.close()
    return store


@pytest.fixture
def conn(store: Store):
    c = store.connect()
    yield c
    c.close()


def add_wide(store: Store) -> None:
    add_patrons(store, [{"barcode": b, "site": "UNION", "last_name": last, "first_name": first}
                        for b, last, first in WIDE])


def read(path: Path, encoding: str) -> list[list[str]]:
    with open(path, encoding=encoding, newline="") as f:
        return list(csv.reader(f))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# -- encodings ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, codec, bom", [
    ("utf-8", "utf-8", False),
    ("utf-8-sig", "utf-8-sig", True),
    ("windows-1252", "cp1252", False),
])
def test_every_encoding_round_trips_accented_names(conn, tmp_path, encoding, codec, bom):
    out = tmp_path / f"out-{encoding}.csv"
    where = "barcode LIKE 'A%'"
    summary = export_csv(conn, out, where=where, columns=["barcode", "last_name", "first_name"],
                         encoding=encoding, sort="id")
    assert (summary.rows, summary.path, summary.encoding) == (4, out, encoding)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") is bom
    assert read(out, codec) == [["Barcode", "Last name", "First name"], *map(list, NAMES)]
    assert raw.endswith(b"\r\n")
    if encoding == "windows-1252":
        assert "Müller".encode("cp1252") in raw and b"\x8c" in raw  # Œ is 0x8C in Windows-1252


def test_windows_1252_refuses_what_it_cannot_hold_and_writes_nothing(store, conn, tmp_path):
    add_wide(store)
    out = tmp_path / "out.csv"
    with pytest.raises(ExportEncodingError) as info:
        export_csv(conn, out, columns=["barcode", "last_name", "first_name"], encoding="windows-1252", sort="id")
    err = info.value
    assert err.total == 3  # Łukasz, 李, 小龍 (Wróbel fits)
    assert [(u.barcode, u.column, u.characters) for u in err.first] == [
        ("W1", "last_name", "Ł"), ("W2", "last_name", "李"), ("W2", "first_name", "小龍")]
    message = str(err)
    assert "patron W1, last_name" in message and "U+0141" in message and "nothing was exported" in message
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_failed_export_keeps_the_file_it_would_have_replaced(store, conn, tmp_path):
    add_wide(store)
    out = tmp_path / "out.csv"
    out.write_text("yesterday's export\n")
    with pytest.raises(ExportEncodingError):
        export_csv(conn, out, columns=["last_name"], encoding="windows-1252")
    assert out.read_text() == "yesterday's export\n" and leftovers(tmp_path) == []


def test_windows_1252_can_replace_with_question_marks_and_counts_them(store, conn, tmp_path):
    add_wide(store)
    out = tmp_path / "out.csv"
    summary = export_csv(conn, out, where="barcode LIKE 'W%'", columns=["barcode", "last_name", "first_name"],
                         encoding="windows-1252", errors="replace", sort="id")
    assert summary.replaced_cells == 3 and "3 cell(s)" in summary.describe()
    assert read(out, "cp1252")[1:] == [["W1", "?ukasz", "Wróbel"], ["W2", "?", "??"]]


def test_utf_8_holds_everything(store, conn, tmp_path):
    add_wide(store)
    out = tmp_path / "out.csv"
    export_csv(conn, out, where="barcode LIKE 'W%'", columns=["last_name", "first_name"], sort="id")
    assert read(out, "utf-8")[1:] == [["Łukasz", "Wróbel"], ["李", "小龍"]]


# -- formula injection ------------------------------------------------------------------


def test_formula_cells_are_neutralized(conn, tmp_path):
    out = tmp_path / "out.csv"
    export_csv(conn, out, where="barcode LIKE 'F%' OR barcode = '-123'",
               columns=["barcode", "last_name", "first_name"], sort="id")
    rows = read(out, "utf-8")[1:]
    assert [r[1] for r in rows] == ["'" + last for _, last, _ in FORMULAS] + ["Negative"]
    assert rows[0][1] == "'=HYPERLINK(\"http://x\")"
    assert rows[-1][0] == "'-123"  # a barcode is text, even when it looks like a number
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for cell in r)


def test_numbers_stay_numbers(conn, tmp_path):
    out = tmp_path / "out.csv"
    export_csv(conn, out, where="barcode IN ('A1', 'A2', 'A3')", columns=["id", "barcode", "balance", "protected"],
               sort="id")
    rows = read(out, "utf-8")
    assert rows[0] == ["ID", "Barcode", "Balance", "Protected"]
    assert [r[1:] for r in rows[1:]] == [["A1", "12.55", "0"], ["A2", "-12.50", "0"], ["A3", "0.00", "0"]]
    assert all(r[0].isdigit() for r in rows[1:])


def test_neutralize():
    assert export.neutralize("=1+1") == "'=1+1"
    assert export.neutralize("Smith") == "Smith"
    assert export.neutralize("") == ""
    assert export.neutralize(" =1") == " =1"


# -- columns ----------------------------------------------------------------------------


def test_chosen_columns_in_the_chosen_order(conn, tmp_path):
    out = tmp_path / "out.csv"
    export_csv(conn, out, where="barcode = 'A2'", columns=["first_name", "site", "barcode", "status"])
    assert read(out, "utf-8") == [["First name", "Site", "Barcode", "Status"], ["José", "UNION", "A2", "Active"]]


def test_columns_available_is_the_schema_without_secrets(conn):
    schema = [r["name"] for r in conn.execute("PRAGMA table_info(patrons)")]
    names = [name for name, _ in export.columns_available()]
    # import_fingerprint and flagged (schema v3) are the import engine's bookkeeping, not exported
    internal = ("password_hash", "picture", "is_system", "import_fingerprint", "flagged")
    assert names == [c for c in schema if c not in internal] + ["balance"]
    assert all(label for _, label in export.columns_available())
    assert set(export.DEFAULT_COLUMNS) <= set(names)


@pytest.mark.parametrize("columns, message", [
    ([], "at least one column"),
    (["barcode", "password_hash"], "unknown column(s): password_hash"),
    (["picture"], "unknown column(s): picture"),
    (["barcode", "barcode"], "chosen twice: barcode"),
    ("barcode", "list of names"),
])
def test_bad_columns_are_refused_before_any_file(conn, tmp_path, columns, message):
    out = tmp_path / "out.csv"
    with pytest.raises(ExportError) as info:
        export_csv(conn, out, columns=columns)
    assert message in str(info.value)
    assert not out.exists()


def test_bad_encoding_sort_and_destination_are_refused(conn, tmp_path):
    with pytest.raises(ExportError, match="choose one of utf-8, utf-8-sig, windows-1252"):
        export_csv(conn, tmp_path / "x.csv", columns=["barcode"], encoding="latin-1")
    with pytest.raises(ValueError, match="cannot sort"):
        export_csv(conn, tmp_path / "x.csv", columns=["barcode"], sort="nonsense")
    with pytest.raises(ExportError, match="no such folder"):
        export_csv(conn, tmp_path / "nope" / "x.csv", columns=["barcode"])
    with pytest.raises(ExportError, match="is a folder"):
        export_csv(conn, tmp_path, columns=["barcode"])
    with pytest.raises(ExportError, match="binary stream"):
        export_csv(conn, io.StringIO(), columns=["barcode"])
    assert not (tmp_path / "x.csv").exists() and leftovers(tmp_path) == []


# -- streaming, atomicity -------------------------------------------------------------------


def test_keyset_pages_give_every_row_once_in_order(store, conn, tmp_path):
    add_patrons(store, [{"barcode": f"K{i:03d}", "site": "UNION", "last_name": "Same", "first_name": "Name"}
                        for i in range(50)])
    out = tmp_path / "out.csv"
    summary = export_csv(conn, out, columns=["id", "barcode"], page_size=7)  # by name: many ties
    rows = read(out, "utf-8")[1:]
    expected = [[str(r[0]), r[1]] for r in conn.execute(
        "SELECT id, barcode FROM patrons WHERE is_system = 0 ORDER BY last_name, first_name, id")]
    expected = [[i, "'" + b if b.startswith("-") else b] for i, b in expected]
    assert rows == expected and summary.rows == len(expected) == 61


def test_sorts_over_nullable_columns_page_past_missing_barcodes(store, conn, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "UNINDEXED_PAGE", 1)
    add_patrons(store, [{"barcode": None, "site": "UNION", "last_name": f"NoBarcode{i}"} for i in range(5)])
    out = tmp_path / "out.csv"
    assert export_csv(conn, out, columns=["barcode", "last_name"], sort="barcode", page_size=2).rows == 16
    rows = read(out, "utf-8")[1:]
    assert [r[1] for r in rows[:5]] == [f"NoBarcode{i}" for i in range(5)]  # '' first, then by id
    assert [r[0] for r in rows[5:]] == sorted(r[0] for r in rows[5:])  # '-123' sorts as text, quoted


def test_a_cancelled_export_leaves_no_file(store, conn, tmp_path):
    add_patrons(store, [{"barcode": f"K{i:03d}", "site": "UNION"} for i in range(50)])
    out = tmp_path / "out.csv"
    seen = []

    def progress(done: int) -> None:
        seen.append(done)
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_csv(conn, out, columns=["barcode"], page_size=10, progress=progress)
    assert seen == [10, 20] and not out.exists() and leftovers(tmp_path) == []
    assert not conn.in_transaction


def test_a_new_file_is_private_and_a_replaced_one_keeps_its_mode(conn, tmp_path):
    out = tmp_path / "out.csv"
    export_csv(conn, out, columns=["barcode"])
    assert (out.stat().st_mode & 0o777) == 0o600
    os.chmod(out, 0o640)
    export_csv(conn, out, columns=["barcode"])
    assert (out.stat().st_mode & 0o777) == 0o640


def test_export_to_a_binary_stream(store, conn):
    buf = io.BytesIO()
    summary = export_csv(conn, buf, where="barcode = 'A1'", columns=["last_name"], encoding="utf-8-sig")
    assert summary.path is None and summary.rows == 1
    assert buf.getvalue() == "\ufeffLast name\r\nMüller\r\n".encode("utf-8")
    add_wide(store)
    buf = io.BytesIO()
    with pytest.raises(ExportEncodingError):
        export_csv(conn, buf, columns=["last_name"], encoding="windows-1252")
    assert buf.getvalue() == b""  # checked before the first byte


def test_iter_rows_limits_and_filters(conn):
    rows = list(export.iter_rows(conn, where="barcode LIKE 'A%'", columns=["barcode", "balance"],
                                 sort="id", page_size=1, limit=3))
    assert [r[2] for r in rows] == [("A1", "12.55"), ("A2", "-12.50"), ("A3", "0.00")]
    assert [r[1] for r in rows] == ["A1", "A2", "A3"]


def test_an_empty_selection_writes_the_header(conn, tmp_path):
    out = tmp_path / "out.csv"
    assert export_csv(conn, out, where="0", columns=["barcode", "email"]).rows == 0
    assert out.read_bytes() == b"Barcode,Email\r\n"


def test_export_of_a_query_set(store, conn, tmp_path):
    from patron_tui.services import query_sets as qsets

    sel = qsets.resolve(conn, statement="")
    out = tmp_path / "all.csv"
    assert export_csv(conn, out, where=sel.where, params=sel.params, columns=["barcode"]).rows == sel.count == 11


@pytest.mark.parametrize("sort", sorted(export.SORT_INDEX))
def test_a_big_export_walks_the_sorts_index_to_the_same_result(conn, tmp_path, monkeypatch, sort):
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert export.SORT_INDEX[sort] is None or export.SORT_INDEX[sort] in names
    planned = tmp_path / "planned.csv"
    walked = tmp_path / "walked.csv"
    cols = ["id", "barcode", "last_name", "site", "status", "grade"]
    export_csv(conn, planned, where="barcode != 'A2'", columns=cols, sort=sort, page_size=2)
    monkeypatch.setattr(export, "WALK_INDEX_ABOVE", 0)
    export_csv(conn, walked, where="barcode != 'A2'", columns=cols, sort=sort, page_size=2)
    assert planned.read_bytes() == walked.read_bytes() and len(read(walked, "utf-8")) == 11
    rows = list(export.iter_rows(conn, columns=["id"], sort=sort, walk_index=True))
    assert len(rows) == 11
