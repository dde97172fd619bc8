"""The Import Converter service: sniffing, mapping guesses, properties text, preview."""

from __future__ import annotations

import importlib.util
from datetime import date
from pathlib import Path

import pytest

from patron_tui.services.imports.converter import (
    Guess,
    build_properties_text,
    escape_properties,
    guess_date_format,
    guess_mapping,
    normalise_name,
    preview,
    sniff,
)

SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"
STUDENTS = SAMPLES / "students_windows1252.csv"
STAFF = SAMPLES / "staff_utf8_bom.csv"
TODAY = date(2025, 1, 31)


# --------------------------------------------------------------------- a tiny Java reader

def java_properties(text: str) -> dict[str, str]:
    """Java's `Properties.load` rules, independent of the project's parser."""
    physical = text.splitlines()
    logical: list[str] = []
    buf = None
    for raw in physical:
        line = raw.lstrip(" \t\f")
        if buf is None and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            buf = (buf or "") + line[:-1]
            continue
        logical.append((buf or "") + line)
        buf = None
    if buf is not None:
        logical.append(buf)
    escapes = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}

    def unescape(s: str) -> str:
        out, i = [], 0
        while i < len(s):
            ch = s[i]
            if ch != "\\":
                out.append(ch)
                i += 1
            elif s[i + 1] == "u":
                out.append(chr(int(s[i + 2:i + 6], 16)))
                i += 6
            else:
                out.append(escapes.get(s[i + 1], s[i + 1]))
                i += 2
        # join UTF-16 surrogate pairs the way Java strings hold them
        return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")

    result: dict[str, str] = {}
    for line in logical:
        i = 0
        while i < len(line):
            if line[i] == "\\":
                i += 2
                continue
            if line[i] in "=: \t\f":
                break
            i += 1
        key = line[:i]
        rest = line[i:].lstrip(" \t\f")
        if rest[:1] in ("=", ":") and (i < len(line) and line[i] not in "=:"):
            rest = rest[1:].lstrip(" \t\f")
        elif i < len(line) and line[i] in "=:":
            rest = line[i + 1:].lstrip(" \t\f")
        result[unescape(key)] = unescape(rest)
    return result


# --------------------------------------------------------------------- sniffing

def test_sniff_windows_1252_sample():
    s = sniff(STUDENTS)
    assert s.encoding == "windows-1252"
    assert s.encoding_confidence >= 0.8
    assert s.bom is None
    assert s.delimiter == "," and s.delimiter_name == ","
    assert s.has_header
    assert s.header[:3] == ["Student ID", "Student Barcode", "Last Name"]
    assert len(s.header) == 11
    assert s.line_ending == "\r\n"
    assert len(s.sample_rows) == 20
    assert all(len(r) == 11 for r in s.sample_rows)


def test_sniff_windows_1252_keeps_accents_in_a_larger_sample():
    s = sniff(STUDENTS, sample_bytes=1 << 20)
    assert not s.truncated
    text = STUDENTS.read_bytes().decode("cp1252")
    assert "José" in text  # the sample file holds the names the checks below look for
    p = preview(STUDENTS, s, {"last_name": "Last Name", "first_name": "First Name"}, limit=200,
                required=())
    names = {r.values["last_name"] for r in p} | {r.values["first_name"] for r in p}
    assert "O\u2019Neil" in names
    assert any("é" in n or "ü" in n or "ë" in n for n in names)
    assert not any("\ufffd" in n for n in names)


def test_sniff_utf8_bom_sample():
    s = sniff(STAFF)
    assert s.encoding == "utf-8-sig"
    assert s.bom == "utf-8"
    assert s.encoding_confidence == 1.0
    assert s.header[0] == "Employee ID"  # no \ufeff
    assert s.delimiter == ","
    assert s.line_ending == "\n"
    assert s.has_header
    assert len(s.header) == 13


def _write(tmp_path: Path, name: str, text: str, encoding: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


ROWS = [
    ["Barcode", "Last Name", "First Name", "School", "Birthdate"],
    ["P001", "Müller", "José", "HS", "2010-04-03"],
    ["P002", "Hernández", "Zoë", "MS", "2011-12-24"],
    ["P003", "O’Brien", "François", "ELM1", "2012-01-15"],
    ["P004", "Ødegård", "Chloé", "HS", "2009-07-30"],
]


@pytest.mark.parametrize("delimiter,name", [(";", ";"), ("\t", "tab"), ("|", "|"), (",", ",")])
def test_sniff_delimiters(tmp_path, delimiter, name):
    text = "\n".join(delimiter.join(r) for r in ROWS) + "\n"
    s = sniff(_write(tmp_path, "f.csv", text, "utf-8"))
    assert s.delimiter == delimiter
    assert s.delimiter_name == name
    assert s.encoding == "utf-8"
    assert s.header == ROWS[0]
    assert s.sample_rows[0] == ROWS[1]


def test_semicolon_file_with_commas_in_values(tmp_path):
    rows = [["Barcode", "Last Name", "First Name", "School"],
            ["P1", "Carter, Jr.", "Sam", "HS"], ["P2", "Lee", "Ann, Marie", "MS"],
            ["P3", "Kim", "Bo", "HS"]]
    text = "\r\n".join(";".join(r) for r in rows) + "\r\n"
    s = sniff(_write(tmp_path, "f.csv", text, "utf-8"))
    assert s.delimiter == ";"
    assert s.line_ending == "\r\n"
    assert s.sample_rows[0][1] == "Carter, Jr."


@pytest.mark.parametrize("codec,bom", [("utf-16", None), ("utf-16-le", "le"), ("utf-16-be", "be")])
def test_sniff_utf16_with_bom(tmp_path, codec, bom):
    text = "\r\n".join(",".join(r) for r in ROWS) + "\r\n"
    raw = text.encode(codec)
    if bom == "le":
        raw = b"\xff\xfe" + raw
    elif bom == "be":
        raw = b"\xfe\xff" + raw
    path = tmp_path / "u16.csv"
    path.write_bytes(raw)
    s = sniff(path)
    assert s.encoding == "utf-16"
    assert s.bom in ("utf-16-le", "utf-16-be")
    assert s.header == ROWS[0]
    assert s.sample_rows[2][1] == "O’Brien"
    assert s.sample_rows[3][1] == "Ødegård"
    rows = preview(path, s, {"barcode": "Barcode", "last_name": "Last Name", "site": "School"})
    assert [r.values["last_name"] for r in rows] == [r[1] for r in ROWS[1:]]
    assert all(not r.problems for r in rows)


def test_sniff_mac_roman(tmp_path):
    rows = ROWS[:4] + [["P005", "Núñez", "Renée", "HS", "2009-07-30"],
                       ["P006", "Björn", "Søren", "MS", "2009-07-30"]]
    text = "\r".join(",".join(r) for r in rows) + "\r"
    path = _write(tmp_path, "mac.csv", text, "mac_roman")
    s = sniff(path)
    assert s.encoding == "mac-roman"
    assert s.line_ending == "\r"
    assert s.sample_rows[0][1:3] == ["Müller", "José"]
    assert s.sample_rows[2][1] == "O’Brien"


def test_sniff_windows_1252_not_mac_roman_nor_latin1(tmp_path):
    text = "\r\n".join(",".join(r) for r in ROWS[:4]) + "\r\n"  # ’ is 0x92 in cp1252
    s = sniff(_write(tmp_path, "w.csv", text, "cp1252"))
    assert s.encoding == "windows-1252"
    assert s.sample_rows[2][1] == "O’Brien"


def test_sniff_latin1_when_windows_1252_cannot_decode(tmp_path):
    # 0x81 is undefined in Windows-1252 but a (C1) character in ISO-8859-1
    raw = "Barcode,Last Name,School\nP1,Müller,HS\nP2,Gómez,MS\n".encode("latin-1") + b"P3,X\x81,HS\n"
    path = tmp_path / "l1.csv"
    path.write_bytes(raw)
    assert sniff(path).encoding in ("iso-8859-1", "mac-roman")


def test_sniff_without_header(tmp_path):
    text = "P001,Smith,John,HS,01/02/2010\nP002,Jones,Ann,MS,03/04/2011\n"
    s = sniff(_write(tmp_path, "nh.csv", text, "utf-8"))
    assert not s.has_header
    assert s.header == ["1", "2", "3", "4", "5"]
    assert len(s.sample_rows) == 2


def test_sniff_bounded_sample_drops_partial_line(tmp_path):
    lines = ["Barcode,Last Name,School"] + [f"P{i:05d},Name{i},HS" for i in range(5000)]
    path = _write(tmp_path, "big.csv", "\n".join(lines) + "\n", "utf-8")
    s = sniff(path, sample_bytes=1000)
    assert s.truncated
    assert len(s.sample_rows) == 20
    assert all(len(r) == 3 for r in s.sample_rows)


def test_utf8_split_multibyte_at_sample_edge(tmp_path):
    body = "".join(f"P{i},Müller{i},HS\n" for i in range(200))
    path = _write(tmp_path, "m.csv", "Barcode,Last Name,School\n" + body, "utf-8")
    raw = path.read_bytes()
    cut = raw.index("ü".encode()) + 1  # in the middle of ü
    assert sniff(path, sample_bytes=cut).encoding == "utf-8"


# --------------------------------------------------------------------- guessing

def test_normalise_name():
    assert normalise_name("Last Name") == normalise_name("last_name") == normalise_name("LastName")
    assert normalise_name("\ufeffLAST-NAME") == "lastname"
    assert normalise_name("Student #") == "studentnumber"


def test_guess_plain_student_sample():
    g = guess_mapping(sniff(STUDENTS).header)
    assert g.recognised_format == "plain"
    assert g.fields == {
        "district_id": "Student ID", "barcode": "Student Barcode", "site": "School",
        "last_name": "Last Name", "first_name": "First Name", "nickname": "Nickname",
        "grade": "Grade", "graduation_year": "Graduation Year", "homeroom": "Homeroom",
        "email": "Email", "birthdate": "Birthdate",
    }
    assert g.unmapped == []


def test_guess_plain_staff_sample():
    g = guess_mapping(sniff(STAFF).header)
    assert g.recognised_format == "plain"
    assert g.fields["district_id"] == "Employee ID"
    assert g.fields["barcode"] == "Staff Barcode"
    assert g.fields["patron_type"] == "Patron Type"
    assert g.fields["homeroom"] == "Room"
    assert g.fields["phone"] == "Phone"
    assert g.unmapped == ["Position", "Department"]


def test_guess_oneroster_users():
    header = ["sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role",
              "username", "userIds", "givenName", "familyName", "middleName", "identifier",
              "email", "sms", "phone", "agentSourcedIds", "grades", "password"]
    g = guess_mapping(header)
    assert g.recognised_format == "oneroster"
    assert g.format_confidence > 0.7
    assert g.fields == {
        "district_id": "sourcedId", "barcode": "identifier", "site": "orgSourcedIds",
        "last_name": "familyName", "first_name": "givenName", "middle_name": "middleName",
        "patron_type": "role", "grade": "grades", "username": "username", "email": "email",
        "phone": "phone",
    }
    assert "status" in g.unmapped and "password" in g.unmapped
    assert any("map.site" in n for n in g.notes)


def test_guess_clever_students():
    header = ["School_id", "Student_id", "SIS_ID", "Student_number", "State_id", "Last_name",
              "Middle_name", "First_name", "Grade", "Gender", "Graduation_year", "Dob",
              "Race", "Ell_status", "Student_email", "Username", "Password"]
    g = guess_mapping(header)
    assert g.recognised_format == "clever"
    assert g.fields["district_id"] == "SIS_ID"
    assert g.fields["barcode"] == "Student_number"
    assert g.fields["site"] == "School_id"
    assert g.fields["birthdate"] == "Dob"
    assert g.fields["email"] == "Student_email"
    assert g.fields["first_name"] == "First_name" and g.fields["last_name"] == "Last_name"
    assert g.fields["graduation_year"] == "Graduation_year"
    assert g.fields["username"] == "Username"
    assert "Student_id" in g.unmapped and "State_id" in g.unmapped
    assert any("Student_id" in n and "district_id" in n for n in g.notes)


def test_guess_powerschool():
    header = ["DCID", "ID", "Student_Number", "State_StudentNumber", "Last_Name", "First_Name",
              "Middle_Name", "Grade_Level", "SchoolID", "Home_Room", "DOB", "Gender",
              "Student_Web_ID", "Sched_YearOfGraduation", "Enroll_Status"]
    g = guess_mapping(header)
    assert g.recognised_format == "powerschool"
    assert g.fields["district_id"] == "Student_Number"
    assert g.fields["grade"] == "Grade_Level"
    assert g.fields["site"] == "SchoolID"
    assert g.fields["homeroom"] == "Home_Room"
    assert g.fields["birthdate"] == "DOB"
    assert g.fields["username"] == "Student_Web_ID"
    assert g.fields["graduation_year"] == "Sched_YearOfGraduation"
    assert "barcode" not in g.fields
    assert "ID" in g.unmapped and "DCID" in g.unmapped
    assert any("field.barcode=Student_Number" in n for n in g.notes)


def test_guess_koha_borrowers():
    header = ["borrowernumber", "cardnumber", "surname", "firstname", "othernames", "email",
              "emailpro", "phone", "dateofbirth", "branchcode", "categorycode", "dateenrolled",
              "dateexpiry", "sex", "userid", "password", "sort1", "sort2"]
    g = guess_mapping(header)
    assert g.recognised_format == "koha"
    assert g.fields == {
        "district_id": "borrowernumber", "barcode": "cardnumber", "site": "branchcode",
        "last_name": "surname", "first_name": "firstname", "nickname": "othernames",
        "patron_type": "categorycode", "grade": "sort1", "gender": "sex", "username": "userid",
        "email": "email", "email2": "emailpro", "phone": "phone", "birthdate": "dateofbirth",
        "account_expires": "dateexpiry",
    }
    assert set(g.unmapped) == {"dateenrolled", "password", "sort2"}


def test_guess_unknown_header():
    g = guess_mapping(["alpha", "beta", "gamma"])
    assert g.recognised_format is None
    assert g.fields == {}
    assert g.unmapped == ["alpha", "beta", "gamma"]


def test_duplicate_fields_keep_the_best_match():
    g = guess_mapping(["Surname", "Last Name", "Student ID", "ID", "Email", "E-mail Address"])
    assert g.fields["last_name"] == "Last Name"
    assert g.fields["district_id"] == "Student ID"
    assert g.fields["email"] == "Email"
    assert g.unmapped == ["Surname", "ID", "E-mail Address"]
    assert len(set(g.fields.values())) == len(g.fields)
    assert any("'Surname'" in n and "last_name" in n for n in g.notes)
    assert any("'ID'" in n for n in g.notes)


def test_prefixed_plain_names():
    g = guess_mapping(["Patron Barcode", "Student Email", "Student Last Name", "Building"])
    assert g.fields == {"barcode": "Patron Barcode", "email": "Student Email",
                        "last_name": "Student Last Name", "site": "Building"}


# --------------------------------------------------------------------- dates

@pytest.mark.parametrize("values,expected", [
    (["12/17/2015", "07/14/2020"], "%m/%d/%Y"),
    (["17/12/2015", "01/02/2020"], "%d/%m/%Y"),
    (["01/02/2015", "03/04/2020"], "auto"),
    (["2015-12-17", "2020-07-14"], "%Y-%m-%d"),
    (["2015-12-17", "07/14/2020"], "auto"),
    (["17/12/2015", "12/17/2015"], "auto"),
    (["17.12.2015"], "%d.%m.%Y"),
    (["20151217"], "%Y%m%d"),
    (["next tuesday"], "auto"),
    ([], "auto"),
])
def test_guess_date_format(values, expected):
    assert guess_date_format(values)[0] == expected


# --------------------------------------------------------------------- properties text

def test_escape_properties():
    assert escape_properties("Student #") == "Student \\#"
    assert escape_properties("a=b") == "a\\=b"
    assert escape_properties("a:b") == "a\\:b"
    assert escape_properties("  lead") == "\\ \\ lead"
    assert escape_properties("trail ") == "trail\\ "
    assert escape_properties("Größe") == "Gr\\u00f6\\u00dfe"
    assert escape_properties("小王") == "\\u5c0f\\u738b"
    assert escape_properties("\U0001f600") == "\\ud83d\\ude00"
    assert escape_properties("back\\slash") == "back\\\\slash"
    assert escape_properties("a b", key=True) == "a\\ b"
    assert escape_properties("tab\there") == "tab\\there"


def test_properties_text_for_students_sample():
    s = sniff(STUDENTS)
    text = build_properties_text(s, guess_mapping(s.header), today=TODAY)
    assert text.isascii()
    assert "# Source file: students_windows1252.csv" in text
    assert "# Date: 2025-01-31" in text
    props = java_properties(text)
    assert props["encoding"] == "windows-1252"
    assert props["delimiter"] == ","
    assert props["header"] == "true"
    assert props["match"] == "district_id"
    assert props["date_format"] == "%m/%d/%Y"
    assert props["required"] == "barcode,last_name,site"
    assert props["field.barcode"] == "Student Barcode"
    assert props["field.graduation_year"] == "Graduation Year"
    keys = [k for k in props if k.startswith("field.")]
    assert keys[:4] == ["field.district_id", "field.barcode", "field.site", "field.last_name"]
    assert "default.patron_type" not in props  # only suggested in a comment


def test_properties_text_escaping_round_trips(tmp_path):
    header = ["Student #", "a=b", "Größe", " Last Name", "名前", "Site:Code", "back\\slash"]
    path = _write(tmp_path, "odd.csv", ";".join(header) + "\n1;2;3;4;5;6;7\n", "utf-8")
    s = sniff(path)
    assert s.delimiter == ";"
    fields = {"barcode": "Student #", "homeroom": "a=b", "grade": "Größe",
              "last_name": "  Last Name ", "first_name": "名前", "site": "Site:Code",
              "policy": "back\\slash"}
    text = build_properties_text(s, guess_mapping(s.header), fields=fields,
                                 source_name="Schüler 名.csv", today=TODAY)
    assert text.isascii()
    props = java_properties(text)
    for fld, column in fields.items():
        assert props[f"field.{fld}"] == column
    assert props["delimiter"] == ";"
    assert props["match"] == "barcode"
    assert props["required"] == "barcode,last_name,site"
    assert "field.barcode=Student \\#" in text
    assert "\\u540d" in text  # the source name's Han character in the comment


def test_properties_text_tab_missing_required_and_unmapped(tmp_path):
    text = "\n".join("\t".join(r) for r in [["Last Name", "First Name", "Shoe Size"],
                                             ["Smith", "Ann", "7"], ["Jones", "Bo", "9"]])
    s = sniff(_write(tmp_path, "t.tsv", text + "\n", "utf-8"))
    out = build_properties_text(s, guess_mapping(s.header), today=TODAY)
    props = java_properties(out)
    assert props["delimiter"] == "tab"
    assert props["match"] == "barcode"
    assert props["required"] == "last_name"
    assert props["date_format"] == "auto"
    assert "# not mapped, so not required: barcode, site" in out
    assert "#   Shoe Size" in out


def test_properties_text_parses_with_project_parser(tmp_path):
    if importlib.util.find_spec("patron_tui.services.imports.properties") is None:
        pytest.skip("properties parser not written yet")
    mod = importlib.import_module("patron_tui.services.imports.properties")
    parse = getattr(mod, "parse_properties", None)
    if parse is None:
        pytest.skip("parse_properties not available yet")
    for path in (STUDENTS, STAFF):
        s = sniff(path)
        g = guess_mapping(s.header)
        m = parse(build_properties_text(s, g, today=TODAY))
        assert m.fields == g.fields
        assert m.header is True
        assert m.match == "district_id"
        assert m.date_format == "%m/%d/%Y"
        assert tuple(m.required) == ("barcode", "last_name", "site")
    header = ["Student #", "a=b", "Größe", "Last Name", "School"]
    s = sniff(_write(tmp_path, "odd.csv", "\t".join(header) + "\n1\t2\t3\t4\t5\n", "cp1252"))
    fields = {"barcode": "Student #", "homeroom": "a=b", "grade": "Größe",
              "last_name": "Last Name", "site": "School", "policy": "odd: #1",
              "homeroom": "Room\\Nr! 名"}
    m = parse(build_properties_text(s, Guess(fields, [], None), fields=fields, today=TODAY))
    assert m.fields == fields
    assert m.delimiter == "\t"
    assert m.match == "barcode"


# --------------------------------------------------------------------- preview

def test_preview_first_twenty_rows():
    s = sniff(STUDENTS)
    g = guess_mapping(s.header)
    rows = preview(STUDENTS, s, g.fields, date_format="%m/%d/%Y")
    assert len(rows) == 20
    assert [r.row for r in rows] == list(range(1, 21))
    assert rows[0].line == 2
    assert rows[0].values["barcode"] == s.sample_rows[0][1]
    assert all(not r.problems for r in rows)


def test_preview_awkward_rows():
    s = sniff(STUDENTS)
    g = guess_mapping(s.header)
    rows = {r.row: r for r in preview(STUDENTS, s, g.fields, limit=40, skip=20,
                                      date_format="%m/%d/%Y")}
    assert min(rows) == 21 and max(rows) == 60
    assert rows[26].values["last_name"] == "Carter, Jr."
    assert rows[27].values["last_name"] == "O\u2019Neil"
    assert rows[28].values["first_name"] == "Gabriel"
    assert rows[29].values["nickname"] == 'Jimmy "J.J."'
    assert rows[41].values["site"] == "ACAD" and rows[43].values["site"] == "ELM9"
    assert any("birthdate" in p and "02/30/" in p for p in rows[51].problems)
    assert "barcode is missing" in rows[52].problems
    with_problems = {n for n, r in rows.items() if r.problems}
    assert with_problems == {51, 52}
    assert rows[26].line == 27  # no embedded line breaks: line = row + header


def test_preview_reports_missing_columns_and_short_rows(tmp_path):
    text = "Barcode,Last Name,School,Grad\nP1,Smith,HS,2030\nP2,,MS\n,Lee,,20x1\n"
    path = _write(tmp_path, "p.csv", text, "utf-8")
    s = sniff(path)
    rows = preview(path, s, {"barcode": "Barcode", "last_name": "Last Name", "site": "School",
                             "graduation_year": "Grad", "email": "Mail"})
    assert rows[0].problems == ["email: no column 'Mail'"]
    assert "3 columns, the header has 4" in rows[1].problems
    assert "last_name is missing" in rows[1].problems
    assert "barcode is missing" in rows[2].problems and "site is missing" in rows[2].problems
    assert any("graduation_year" in p for p in rows[2].problems)


def test_preview_flags_wrong_encoding():
    s = sniff(STUDENTS)
    wrong = type(s)(**{**s.__dict__, "encoding": "utf-8"})
    rows = preview(STUDENTS, wrong, {"last_name": "Last Name", "first_name": "First Name"},
                   limit=200, required=())
    assert any("bytes that are not utf-8" in r.problems for r in rows)
