"""Reading patron CSVs: encodings, the bad-input corpus, mapping, constant memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from patron_tui.services.imports.properties import load_properties, parse_properties
from patron_tui.services.imports.records import (
    ImportFileError,
    Problem,
    SourceRecord,
    map_record,
    read_records,
)

ROOT = Path(__file__).parent.parent
SAMPLES = ROOT / "sample_data"
DATA = Path(__file__).parent / "data" / "imports"

STUDENTS = parse_properties("""\
encoding=windows-1252
match=district_id
date_format=%m/%d/%Y
field.district_id=Student ID
field.barcode=Student Barcode
field.last_name=Last Name
field.first_name=First Name
field.nickname=Nickname
field.grade=Grade
field.site=School
field.homeroom=Homeroom
field.graduation_year=Graduation Year
field.birthdate=Birthdate
field.email=Email
default.patron_type=Student
map.site.ACAD=UNION
required=barcode,last_name,site
""", source="students.properties")

STAFF = parse_properties("""\
encoding=utf-8-sig
field.district_id=Employee ID
field.barcode=Staff Barcode
field.last_name=Last Name
field.first_name=First Name
field.nickname=Nickname
field.patron_type=Patron Type
field.site=School
field.homeroom=Room
field.email=Email
field.phone=Phone
field.birthdate=Birthdate
date_format=auto
""", source="staff.properties")

BASIC = load_properties(DATA / "basic.properties")


def read_all(path, mapping=BASIC, **kw):
    out = list(read_records(path, mapping, **kw))
    return [r for r in out if isinstance(r, SourceRecord)], [r for r in out if isinstance(r, Problem)]


def test_students_windows1252_keeps_accents_and_awkward_rows():
    records, problems = read_all(SAMPLES / "students_windows1252.csv", STUDENTS)
    assert problems == [] and len(records) == 120
    by_line = {r.line: map_record(STUDENTS, r) for r in records}
    names = {m.fields["last_name"] for m in by_line.values()} | {m.fields["first_name"] for m in by_line.values()}
    assert {"Carter, Jr.", "O\u2019Neil", "Gabriel", "Müller", "José", "Ñuñez"} <= names or "Carter, Jr." in names
    assert by_line[27].fields["last_name"] == "Carter, Jr."      # data row 26 = line 27
    assert by_line[28].fields["last_name"] == "O\u2019Neil"
    assert by_line[29].fields["first_name"] == "Gabriel"         # stray spaces trimmed
    assert by_line[30].fields["nickname"] == 'Jimmy "J.J."'
    assert by_line[42].fields["site"] == "UNION"                 # map.site.ACAD=UNION
    assert by_line[2].fields["patron_type"] == "Student"         # default
    assert by_line[2].fields["birthdate"] == "2015-12-17" and by_line[2].fields["graduation_year"] == 2034
    assert [(p.code, p.column) for p in by_line[52].problems] == [("bad_date", "Birthdate")]
    assert "'02/30/" in by_line[52].problems[0].message and by_line[52].problems[0].barcode
    assert [(p.code, p.field) for p in by_line[53].problems] == [("missing_required", "barcode")]
    assert "Student Barcode" in by_line[53].problems[0].message
    assert sum(1 for m in by_line.values() if m.ok) == 118


def test_staff_utf8_bom():
    records, problems = read_all(SAMPLES / "staff_utf8_bom.csv", STAFF)
    assert problems == [] and len(records) == 60
    assert "Employee ID" in records[0].values                    # BOM not in the column name
    text = " ".join(" ".join(r.values.values()) for r in records)
    assert "Nguyễn" in text and "Łukasz" in text and "小王" in text and "[b]Coach[/b]" in text
    # the same file with encoding=utf-8 still loses the BOM
    records8, _ = read_all(SAMPLES / "staff_utf8_bom.csv", STAFF, encoding="utf-8")
    assert records8[0].values == records[0].values


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "mac-roman", "iso-8859-1", "utf-8"])
def test_other_encodings_from_the_same_text(tmp_path, encoding):
    text = (SAMPLES / "students_windows1252.csv").read_bytes().decode("cp1252")
    if encoding in ("mac-roman", "iso-8859-1"):
        text = text.replace("\u2019", "'")   # neither can hold the curly apostrophe
    path = tmp_path / "students.csv"
    path.write_bytes(text.encode({"mac-roman": "mac_roman", "iso-8859-1": "latin-1"}.get(encoding, encoding)))
    records, problems = read_all(path, STUDENTS, encoding=encoding)
    assert problems == [] and len(records) == 120
    expected, _ = read_all(SAMPLES / "students_windows1252.csv", STUDENTS)
    assert [r.line for r in records] == [r.line for r in expected]
    assert records[25].values["Last Name"] == "Carter, Jr."
    assert any(r.values["First Name"] == "José" for r in records)


def test_job_encoding_overrides_the_properties_file():
    # the properties say windows-1252; the job says utf-8: line 8 fails, with a hint
    records, problems = read_all(SAMPLES / "students_windows1252.csv", STUDENTS, encoding="utf-8")
    assert problems and all(p.code == "undecodable" for p in problems)
    first = problems[0]
    assert first.line == 8 and first.byte_offset is not None
    assert "line 8: cannot decode byte 0x" in first.message and "as utf-8" in first.message
    assert "looks like windows-1252" in first.message
    raw = (SAMPLES / "students_windows1252.csv").read_bytes()
    assert raw[first.byte_offset] >= 0x80 and raw[:first.byte_offset].count(b"\n") == 7
    assert len(records) + len(problems) == 120                   # the rest is read on


def test_corpus_wrong_encoding_windows1252_read_as_utf8():
    records, problems = read_all(DATA / "windows1252.csv", BASIC)   # basic.properties says utf-8
    assert [r.line for r in records] == [2, 4]
    (p,) = problems
    assert p.code == "undecodable" and p.line == 3
    assert p.byte_offset == (DATA / "windows1252.csv").read_bytes().index("ü".encode("cp1252"))
    assert "windows-1252" in p.message


def test_corpus_utf8_read_as_utf16(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("ID,Barcode,Last,First,School,Birthdate\n1,B1,Ames,Ann,HS,01/02/2010\n", encoding="utf-8")
    with pytest.raises(ImportFileError) as info:
        read_all(path, BASIC, encoding="utf-16")
    assert str(path) in str(info.value)


def test_corpus_empty_file():
    with pytest.raises(ImportFileError) as info:
        read_all(DATA / "empty.csv")
    assert info.value.code == "empty_file"
    assert str(info.value) == f"{DATA / 'empty.csv'}: the file is empty: no header row and no records"


def test_corpus_header_only():
    with pytest.raises(ImportFileError) as info:
        read_all(DATA / "header_only.csv")
    assert info.value.code == "header_only" and info.value.line == 1
    assert "header_only.csv:1: the file has a header row but no records" in str(info.value)


def test_corpus_ragged_rows():
    records, problems = read_all(DATA / "ragged.csv")
    assert [r.line for r in records] == [2, 5]
    assert [(p.code, p.line) for p in problems] == [("ragged_row", 3), ("ragged_row", 4)]
    assert problems[0].message == "line 3: 5 fields, but the header has 6"
    assert "7 fields" in problems[1].message


def test_corpus_embedded_newlines_and_quotes():
    records, problems = read_all(DATA / "embedded.csv")
    assert problems == []
    assert [r.line for r in records] == [2, 4, 5]                # record 1 spans lines 2-3
    assert records[0].values["First"] == "Line one\nline two"
    assert records[0].values["Last"] == "Carter, Jr."
    assert records[1].values["Last"] == 'Say "hi"'


def test_corpus_duplicate_barcodes_come_through():
    records, problems = read_all(DATA / "duplicates.csv")
    assert problems == [] and [r.values["Barcode"] for r in records] == ["B1", "B1"]


def test_corpus_binary_garbage():
    with pytest.raises(ImportFileError) as info:
        read_all(DATA / "binary.csv")
    assert info.value.code == "binary_file"
    assert "binary.csv:3: not a text CSV file: a NUL byte at byte offset 8" in str(info.value)


def test_nul_later_in_the_file_skips_that_record(tmp_path):
    path = tmp_path / "late.csv"
    head = b"ID,Barcode,Last,First,School,Birthdate\n" + b"1,B1,Ames,Ann,HS,01/02/2010\n" * 3000
    path.write_bytes(head + b"2,B2,Be\x00ll,Bo,HS,01/02/2010\n3,B3,Cole,Cy,HS,01/02/2010\n")
    records, problems = read_all(path)
    assert len(records) == 3001 and [(p.code, p.line) for p in problems] == [("binary_data", 3002)]


def test_corpus_missing_mapped_column():
    with pytest.raises(ImportFileError) as info:
        read_all(DATA / "missing_column.csv")
    msg = str(info.value)
    assert info.value.code == "missing_column" and info.value.line == 1
    assert "column 'Last' (field.last_name, " in msg and "basic.properties:6)" in msg
    assert "column 'School' (field.site, " in msg
    assert "The header has: ID, Barcode, Last Name, First, Campus, Birthdate" in msg
    assert "did you mean 'Last Name'?" in msg


def test_header_matching_ignores_case_and_spacing(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("id , BARCODE,last,First,school,birthdate\n1,B1,Ames,Ann,HS,01/02/2010\n")
    records, _ = read_all(path)
    assert map_record(BASIC, records[0]).fields["last_name"] == "Ames"


def test_ten_megabyte_field(tmp_path):
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("ID,Barcode,Last,First,School,Birthdate\n1,B1,Ames,Ann,HS,01/02/2010\n")
        f.write('2,B2,"' + "x" * 10_000_000 + '",Bo,HS,01/02/2010\n3,B3,Cole,Cy,HS,01/02/2010\n')
    records, problems = read_all(path)
    assert [r.line for r in records] == [2, 4]
    (p,) = problems
    assert (p.code, p.line, p.column) == ("field_too_long", 3, "Last")
    assert "10,000,000 characters" in p.message


def test_typo_properties_file_is_refused_before_reading():
    from patron_tui.services.imports.properties import PropertiesError

    with pytest.raises(PropertiesError) as info:
        load_properties(DATA / "typo.properties")
    assert "typo.properties:3: unknown key 'feild.barcode' (did you mean 'field.barcode'?)" in str(info.value)


def test_semicolon_and_header_false(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("1;B1;Ames\n2;B2;Bell\n")
    m = parse_properties("delimiter=;\nheader=false\nfield.district_id=1\nfield.barcode=2\nfield.last_name=3\n")
    records, _ = read_all(path, m)
    assert [map_record(m, r).fields for r in records] == [
        {"district_id": "1", "barcode": "B1", "last_name": "Ames"},
        {"district_id": "2", "barcode": "B2", "last_name": "Bell"},
    ]


def test_map_record_rules():
    m = parse_properties(
        "field.district_id=ID\nfield.barcode=BC\nfield.first_name=nick_or_first\nfield.site=School\n"
        "custom.nick_or_first=ISEMPTY({Nick},{First},{Nick})\ncustom.last_name={Last}\n"
        "default.site=HS\ndefault.status=Active\nmap.site.0101=MS\nmap.site.elm=ELM1\n"
        "field.birthdate=Born\ndate_format=auto\nfield.email=Email\n"
    )
    rec = SourceRecord(7, {"ID": " 9 ", "BC": "", "Nick": "", "First": "Ann", "Last": "Ames",
                           "School": "0101", "Born": "3/4/09"}, [])
    out = map_record(m, rec)
    assert out.fields == {"district_id": "9", "barcode": "", "first_name": "Ann", "site": "MS",
                          "birthdate": "2009-03-04", "last_name": "Ames", "status": "Active"}
    assert "email" not in out.fields                             # column absent: stored value alone
    assert map_record(m, SourceRecord(8, {**rec.values, "School": " "}, [])).fields["site"] == "HS"
    assert map_record(m, SourceRecord(8, {**rec.values, "School": "ELM"}, [])).fields["site"] == "ELM1"
    for born, iso in [("2009-03-04", "2009-03-04"), ("12/31/2010", "2010-12-31"), ("1/2/75", "1975-01-02")]:
        assert map_record(m, SourceRecord(9, {**rec.values, "Born": born}, [])).fields["birthdate"] == iso
    bad = map_record(m, SourceRecord(9, {**rec.values, "Born": "31/12/2010", "BC": "B9"}, []))
    (p,) = bad.problems
    assert (p.code, p.column, p.barcode, p.line) == ("bad_date", "Born", "B9", 9)
    nodid = map_record(m, SourceRecord(10, {**rec.values, "ID": ""}, []), require_district_id=True)
    assert [p.code for p in nodid.problems] == ["missing_district_id"]
    ref = map_record(m, rec, reference={"status": {"Inactive"}})
    assert [(p.code, p.field) for p in ref.problems] == [("unknown_code", "status")]


def test_map_record_bad_number():
    m = parse_properties("field.district_id=ID\nfield.graduation_year=Year\n")
    out = map_record(m, SourceRecord(2, {"ID": "1", "Year": "20x8"}, []))
    assert [(p.code, p.column) for p in out.problems] == [("bad_number", "Year")]


def _write_rows(path: Path, rows: int) -> None:
    row = "1000000,2041700000000,Lastname,Firstname,HS,01/02/2010\n"
    with path.open("w") as f:
        f.write("ID,Barcode,Last,First,School,Birthdate\n")
        for _ in range(rows // 10_000):
            f.write(row * 10_000)


def test_streaming_keeps_memory_flat(tmp_path):
    # tracemalloc slows allocation-heavy code ~10x, so trace 20,000 rows (a 1.1 MB file):
    # a reader that held the file or its records would peak far above 512 KiB
    path = tmp_path / "big.csv"
    _write_rows(path, 20_000)
    assert path.stat().st_size > 1_000_000
    tracemalloc.start()
    try:
        count = 0
        for rec in read_records(path, BASIC):
            count += 1
            map_record(BASIC, rec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 512 * 1024, peak
