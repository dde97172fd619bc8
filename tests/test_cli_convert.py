"""`patron-tui convert`: the Import Converter's headless twin."""

from __future__ import annotations

import json
from pathlib import Path

from patron_tui import cli
from patron_tui.services.imports.properties import load_properties

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


def test_convert_writes_a_valid_properties_file(tmp_path, capsys):
    out = tmp_path / "students.properties"
    assert cli.main(["convert", str(SAMPLES / "students_windows1252.csv"), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encoding"] == "windows-1252" and report["delimiter"] == ","
    mapping = load_properties(out)
    assert mapping.encoding_label == "windows-1252"
    assert mapping.fields["last_name"] == "Last Name" and mapping.fields["barcode"] == "Student Barcode"
    assert report["preview_problems"] == []  # the first twenty records are clean


def test_convert_previews_problems_of_the_first_records(tmp_path, capsys):
    src = tmp_path / "kids.csv"
    src.write_text("Student ID,Student Barcode,Last Name,First Name,School,Birthdate\n"
                   "S1,B1,Lee,Ann,HS,01/31/2010\nS2,,Ng,Bo,HS,02/30/2010\n", encoding="utf-8")
    assert cli.main(["convert", str(src), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    problems = " | ".join(p["problem"] for p in report["preview_problems"])
    assert "02/30/2010" in problems and "barcode" in problems
    assert (tmp_path / "kids.properties").exists()


def test_convert_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "staff.properties"
    out.write_text("keep me", encoding="utf-8")
    assert cli.main(["convert", str(SAMPLES / "staff_utf8_bom.csv"), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "keep me"
    assert cli.main(["convert", str(SAMPLES / "staff_utf8_bom.csv"), "--out", str(out), "--force"]) == 0
    assert load_properties(out).encoding_label == "utf-8-sig"


def test_convert_of_a_missing_file_says_so(tmp_path, capsys):
    assert cli.main(["convert", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
