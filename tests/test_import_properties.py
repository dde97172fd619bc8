"""Import properties files: Java syntax, validation with line numbers, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from patron_tui.services.imports.properties import (
    ImportMapping,
    PropertiesError,
    compile_template,
    dump_properties,
    load_properties,
    parse_entries,
    parse_properties,
    parse_template,
)

DATA = Path(__file__).parent / "data" / "imports"

ISSUE_EXAMPLE = """\
encoding=windows-1252          # utf-8, utf-8-sig, windows-1252, mac-roman, iso-8859-1, utf-16
delimiter=,                    # , ; tab |
header=true
match=district_id              # or barcode: how an incoming record finds its patron
date_format=%m/%d/%Y           # strftime pattern, or auto
field.barcode=Student Barcode  # field.<patron field>=<CSV column>
field.district_id=Student ID
field.site=School
field.last_name=Last Name
field.nickname=name_display
default.patron_type=Student    # default.<field>=<value> where the column is absent or blank
map.site.0101=HS               # map.<field>.<incoming value>=<stored value>
required=barcode,last_name,site
custom.name_display={First Name} {Last Name}      # join columns
custom.first_name=ISEMPTY({Nick},{First Name},{Nick})
protect=email,homeroom         # fields an import never overwrites once staff have set them
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(PropertiesError) as info:
        parse_properties(text, source="job.properties")
    return info.value.messages


def test_every_key_of_the_issue_example():
    m = parse_properties(ISSUE_EXAMPLE, source="s.properties")
    assert m.encoding == "cp1252" and m.encoding_label == "windows-1252"
    assert m.delimiter == "," and m.header is True and m.match == "district_id"
    assert m.date_format == "%m/%d/%Y"
    assert m.fields["barcode"] == "Student Barcode" and m.fields["nickname"] == "name_display"
    assert m.defaults == {"patron_type": "Student"}
    assert m.maps == {"site": {"0101": "HS"}}
    assert m.required == ("barcode", "last_name", "site")
    assert m.custom["name_display"] == "{First Name} {Last Name}"
    assert m.protect == ("email", "homeroom")
    assert m.lines["field.site"] == 8 and m.where("protect") == "s.properties:16"
    assert set(m.csv_columns()) == {"Student Barcode", "Student ID", "School", "Last Name", "First Name", "Nick"}


@pytest.mark.parametrize(("written", "codec"), [
    ("utf-8", "utf-8"), ("UTF8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("windows-1252", "cp1252"),
    ("cp1252", "cp1252"), ("mac-roman", "mac_roman"), ("MacRoman", "mac_roman"),
    ("iso-8859-1", "latin-1"), ("utf-16", "utf-16"),
])
def test_encodings_normalized(written, codec):
    assert parse_properties(f"encoding={written}\nfield.district_id=ID\n").encoding == codec


@pytest.mark.parametrize(("written", "delim"), [(",", ","), (";", ";"), ("|", "|"), ("tab", "\t"), ("\\t", "\t")])
def test_delimiters(written, delim):
    assert parse_properties(f"delimiter={written}\nfield.district_id=ID\n").delimiter == delim


def test_java_syntax_separators_comments_escapes_continuation():
    text = (
        "# comment\n"
        "! also a comment\n"
        "   \n"
        "a=1\n"
        "b:2\n"
        "c 3\n"
        "d = spaced value   \n"
        "key\\ with\\=odd\\:chars = v\n"
        "tabs=x\\ty\\nz\n"
        "uni=Jos\\u00e9\n"
        "long=one, \\\n"
        "      two, \\\n"
        "      three\n"
        "hash=before # a note\n"
        "literal=a \\# b\n"
        "nospace=a#b\n"
        "keep=trailing\\ \n"
        "back=c:\\\\dir\n"
        "last=x"
    )
    entries = {e.key: (e.value, e.line) for e in parse_entries(text)}
    assert entries["a"] == ("1", 4)
    assert entries["b"] == ("2", 5)
    assert entries["c"] == ("3", 6)
    assert entries["d"] == ("spaced value", 7)
    assert entries["key with=odd:chars"] == ("v", 8)
    assert entries["tabs"] == ("x\ty\nz", 9)
    assert entries["uni"] == ("José", 10)
    assert entries["long"] == ("one, two, three", 11)
    assert entries["hash"] == ("before", 14)
    assert entries["literal"] == ("a # b", 15)
    assert entries["nospace"] == ("a#b", 16)
    assert entries["keep"] == ("trailing ", 17)
    assert entries["back"] == ("c:\\dir", 18)
    assert entries["last"] == ("x", 19)


def test_bad_unicode_escape_names_line():
    msgs = problems_of("field.district_id=ID\nfield.last_name=\\u00zz\n")
    assert len(msgs) == 1 and msgs[0].startswith("job.properties:2: malformed \\u escape")


def test_typo_file_reports_every_problem_with_line_and_suggestion():
    with pytest.raises(PropertiesError) as info:
        load_properties(DATA / "typo.properties")
    msgs = info.value.messages
    src = str(DATA / "typo.properties")
    assert f"{src}:3: unknown key 'feild.barcode' (did you mean 'field.barcode'?)" in msgs
    assert f"{src}:5: field.last_nme: 'last_nme' is not a patron field (did you mean 'last_name'?)" in msgs
    assert any(m.startswith(f"{src}:7: required field 'barcode' is not mapped") for m in msgs)
    assert any(m.startswith(f"{src}:7: required field 'last_name' is not mapped") for m in msgs)
    assert str(info.value).count("\n") == len(msgs) - 1


def test_validation_errors():
    msgs = problems_of(
        "encoding=utf9\n"              # 1
        "delimiter=/\n"                # 2
        "header=maybe\n"               # 3
        "match=barcod\n"               # 4
        "field.district_id=ID\n"       # 5
        "field.district_id=ID2\n"      # 6
        "custom.first_name={First\n"   # 7
        "custom.last_name=First}\n"    # 8
        "custom.middle_name=ISEMPTY({A},{B})\n"  # 9
        "date_format=mdy\n"            # 10
        "protect=emial\n"              # 11
        "colour=red\n"                 # 12
        "map.site=HS\n"                # 13
        "custom.fullname={A} {B}\n"    # 14
        "date_formt=auto\n"            # 15
    )
    text = "\n".join(msgs)
    assert "job.properties:1: unknown encoding 'utf9' (did you mean 'utf-8'?)" in text
    assert "job.properties:2: unknown delimiter '/'" in text
    assert "job.properties:3: header must be true or false, not 'maybe'" in text
    assert "job.properties:4: match must be district_id or barcode, not 'barcod' (did you mean 'barcode'?)" in text
    assert "job.properties:6: duplicate key 'field.district_id' (first set on line 5)" in text
    assert "job.properties:7: custom.first_name: unbalanced braces" in text
    assert "job.properties:8: custom.last_name: unbalanced braces" in text
    assert "job.properties:9: custom.middle_name: ISEMPTY at position 1 needs 3 arguments" in text
    assert "job.properties:10: date_format 'mdy' has no %-directive" in text
    assert "job.properties:11: protect: 'emial' is not a patron field (did you mean 'email'?)" in text
    assert "job.properties:12: unknown key 'colour'" in text
    assert "job.properties:13: incomplete key 'map.site'" in text
    assert "job.properties:14: custom.fullname: 'fullname' is not a patron field" in text
    assert "job.properties:15: unknown key 'date_formt' (did you mean 'date_format'?)" in text
    assert [m.split(":")[1] for m in msgs] == sorted((m.split(":")[1] for m in msgs), key=int)


def test_match_field_must_be_mapped():
    msgs = problems_of("match=barcode\nfield.district_id=ID\n")
    assert msgs == ["job.properties:1: match=barcode but no field.barcode (or custom.barcode) line maps it"]


def test_required_with_default_is_fine_and_map_needs_a_field():
    m = parse_properties("field.district_id=ID\ndefault.site=HS\nrequired=site\n")
    assert m.required == ("site",)
    msgs = problems_of("field.district_id=ID\nmap.grade.01=1\n")
    assert msgs == ["job.properties:2: map.grade.*: 'grade' is not mapped (no field.grade)"]


def test_field_and_custom_for_one_field_conflict():
    msgs = problems_of("field.district_id=ID\nfield.first_name=First\ncustom.first_name={Nick}\n")
    assert "job.properties:3: custom.first_name: 'first_name' is also set by field.first_name (line 2)" in msgs[0]


def test_header_false_uses_column_numbers():
    m = parse_properties("header=false\nfield.district_id=1\nfield.last_name=3\n")
    assert m.header is False and m.fields == {"district_id": "1", "last_name": "3"}
    msgs = problems_of("header=false\nfield.district_id=ID\n")
    assert "job.properties:2: field.district_id: with header=false, columns are numbered from 1" in msgs[0]


def test_templates():
    fn = compile_template(parse_template("{First Name} {Last Name}"))
    assert fn({"First Name": "Ann", "Last Name": "Ames"}) == "Ann Ames"
    fn = compile_template(parse_template("ISEMPTY({Nick},{First Name},{Nick})"))
    assert fn({"Nick": "  ", "First Name": "Ann"}) == "Ann"
    assert fn({"Nick": "Annie", "First Name": "Ann"}) == "Annie"
    fn = compile_template(parse_template("Dr. ISEMPTY({Nick},{First},{Nick}) (x)"))
    assert fn({"Nick": "", "First": "Bo"}) == "Dr. Bo (x)"


def test_round_trip_dump_parse():
    m = parse_properties(ISSUE_EXAMPLE + "map.site.Lincoln\\ High=HS\nmap.grade.#1=1\n".replace("map.grade", "field.grade=Grade\nmap.grade"),
                         source="s.properties")
    text = dump_properties(m)
    again = parse_properties(text, source="s.properties")
    assert again.model_dump(exclude={"lines"}) == m.model_dump(exclude={"lines"})
    assert again.maps["site"]["Lincoln High"] == "HS" and again.maps["grade"]["#1"] == "1"
    tab = ImportMapping(delimiter="tab", fields={"district_id": "ID"}, defaults={"status": "lead, #x \\ b"})
    back = parse_properties(dump_properties(tab))
    assert back.delimiter == "\t" and back.defaults == {"status": "lead, #x \\ b"}
    modified = parse_properties("field.district_id=ID\nlast_modified=Last Changed: Date\n")
    assert modified.last_modified == "Last Changed: Date"
    assert parse_properties(dump_properties(modified)).last_modified == "Last Changed: Date"
    assert modified.csv_columns()["Last Changed: Date"] == "last_modified"


def test_load_properties_reads_utf8_bom_and_latin1(tmp_path):
    p = tmp_path / "a.properties"
    p.write_bytes("\ufefffield.district_id=Élève ID\n".encode("utf-8"))
    assert load_properties(p).fields["district_id"] == "Élève ID"
    p.write_bytes("field.district_id=Élève ID\n".encode("latin-1"))
    assert load_properties(p).fields["district_id"] == "Élève ID"
    assert load_properties(p).source == str(p)


def test_empty_mapping_is_refused():
    assert problems_of("# nothing\n") == [
        "job.properties: match=district_id but no field.district_id (or custom.district_id) line maps it"
    ]
