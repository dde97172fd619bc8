"""The bad-input corpus through the whole import: a clear message naming file,
line and field for each, and where the run fails, a database byte-for-byte unchanged."""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services.imports.engine import run_import
from patron_tui.services.imports.properties import PropertiesError, load_properties
from patron_tui.services.imports.summary import load_summary
from patron_tui.store import ChangesetWriter, Store

from .test_import_engine import dump

CORPUS = Path(__file__).parent / "data" / "imports"


@pytest.fixture
def store(tmp_path):
    store = Store.create(tmp_path / "district.db", operator="tester")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for code in ("HS", "MS"):
            w.insert("sites", {"code": code, "name": code})
    conn.close()
    return store


def run(store, csv_path, props=CORPUS / "basic.properties", **kw):
    engine = RunEngine(store, pool_size=2)
    try:
        handle = engine.execute("import", "Import", lambda ctx: run_import(
            ctx, path=csv_path, properties_path=props, **kw))
    finally:
        engine.shutdown()
    conn = store.connect()
    try:
        messages = load_summary(conn, handle.run_id)["messages"]
    finally:
        conn.close()
    return handle, messages


@pytest.mark.parametrize("name, needle", [
    ("empty.csv", "empty"),
    ("header_only.csv", "header"),
    ("binary.csv", "not a text CSV file"),
    ("missing_column.csv", "Last"),
])
def test_file_level_faults_fail_the_run_and_change_nothing(store, name, needle):
    before = dump(store.path)
    handle, _ = run(store, CORPUS / name)
    assert handle.status.value == "failed"
    assert str(CORPUS / name) in handle.error and needle.lower() in handle.error.lower(), handle.error
    assert dump(store.path) == before


def test_wrong_encoding_names_line_and_byte_and_the_encoding_that_fits(store, tmp_path):
    handle, messages = run(store, CORPUS / "windows1252.csv")  # read as UTF-8 by basic.properties
    undecodable = [m for m in messages if m["code"] == "undecodable"]
    assert undecodable, messages
    text = undecodable[0]["text"]
    assert undecodable[0]["line"] is not None and "byte" in text and "windows-1252" in text


def test_ragged_rows_embedded_newlines_and_duplicates_are_skipped_or_kept_by_line(store):
    _, ragged = run(store, CORPUS / "ragged.csv")
    assert any(m["code"] == "ragged_row" and m["line"] == 3 for m in ragged), ragged
    _, embedded = run(store, CORPUS / "embedded.csv")
    conn = store.connect()
    try:
        names = {r[0] for r in conn.execute("SELECT first_name FROM patrons WHERE is_system = 0")}
        lasts = {r[0] for r in conn.execute("SELECT last_name FROM patrons WHERE is_system = 0")}
    finally:
        conn.close()
    assert "Line one\nline two" in names and 'Say "hi"' in lasts and "Carter, Jr." in lasts
    _, dups = run(store, CORPUS / "duplicates.csv")
    assert any(m["code"] in ("duplicate_in_file", "barcode_conflict") and m["line"] == 3 for m in dups), dups


def test_a_10_mb_field_is_skipped_naming_the_column(store, tmp_path):
    path = tmp_path / "huge.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("ID,Barcode,Last,First,School,Birthdate\n")
        f.write("1,B1,Ames,Ann,HS,01/02/2010\n")
        f.write("2,B2," + "x" * (10 * 1024 * 1024) + ",Bo,HS,01/02/2010\n")
    handle, messages = run(store, path)
    assert handle.status.value == "succeeded"
    too_long = [m for m in messages if m["code"] == "field_too_long"]
    assert too_long and too_long[0]["line"] == 3 and "Last" in too_long[0]["text"]
    assert handle.summary["added"] == 1


def test_a_properties_file_with_a_typo_fails_before_anything_is_read(store):
    with pytest.raises(PropertiesError) as err:
        load_properties(CORPUS / "typo.properties")
    text = "\n".join(err.value.messages)
    assert "typo.properties:3:" in text and "field.barcode" in text
    before = dump(store.path)
    handle, _ = run(store, CORPUS / "ragged.csv", props=CORPUS / "typo.properties")
    assert handle.status.value == "failed" and "typo.properties:3" in handle.error
    assert dump(store.path) == before


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "windows-1252", "mac-roman", "iso-8859-1", "utf-16"])
def test_every_listed_encoding_arrives_intact(store, tmp_path, encoding):
    names = ["José", "Zoë", "François", "Müller", "Ñuñez", "Søren"]
    path = tmp_path / "enc.csv"
    text = "ID,Barcode,Last,First,School,Birthdate\n" + "".join(
        f"{i},B{i},{n},Kim,HS,01/02/2010\n" for i, n in enumerate(names))
    path.write_bytes(text.encode(codecs.lookup(encoding.replace("mac-roman", "mac_roman")).name))
    props = tmp_path / "enc.properties"
    shutil.copy(CORPUS / "basic.properties", props)
    props.write_text(props.read_text(encoding="utf-8").replace("encoding=utf-8", f"encoding={encoding}"),
                     encoding="utf-8")
    handle, _ = run(store, path, props=props)
    assert handle.summary["added"] == len(names), handle.summary
    conn = store.connect()
    try:
        stored = {r[0] for r in conn.execute("SELECT last_name FROM patrons WHERE is_system = 0")}
    finally:
        conn.close()
    assert stored == set(names)
