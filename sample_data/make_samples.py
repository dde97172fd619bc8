"""Write the demo patron CSV files in this folder, the way schools really send them.

    .venv/bin/python sample_data/make_samples.py

Deterministic: the same code writes the same bytes (README.md describes the files).
Some rows match patrons of the default demo district (`patron-tui demo`, seed 1,
2000 patrons), so an import into that district updates some patrons and adds
others; the script builds that district in a temporary folder to find them.
Re-run it (and commit its output) whenever the demo generator changes.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path
from random import Random

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from patron_tui.services.demo import (  # noqa: E402
    DEMO_SITES,
    REFERENCE_DATE,
    SCHOOL_YEAR,
    UNKNOWN_SITE_CODES,
    ascii_fold,
    build_demo,
)

STUDENT_HEADER = ["Student ID", "Student Barcode", "Last Name", "First Name", "Nickname", "Grade",
                  "School", "Homeroom", "Graduation Year", "Birthdate", "Email"]
STAFF_HEADER = ["Employee ID", "Staff Barcode", "Last Name", "First Name", "Nickname", "Patron Type",
                "Position", "School", "Room", "Department", "Email", "Phone", "Birthdate"]

# Names a Windows-1252 file can hold (the mandatory awkward ones first).
CP1252_FIRST = ["José", "Zoë", "François", "Renée", "Chloé", "Søren", "Björn", "Siobhán", "Jürgen",
                "Inés", "Raúl", "Noémie", "Joaquín", "Ana Sofía", "Mary-Kate", "Jean-Luc", "Begoña",
                "Emma", "Liam", "Olivia", "Noah", "Ava", "Mateo", "Sophia", "Elijah", "Mia", "Lucas",
                "Isabella", "Aiden", "Amelia", "Ethan", "Harper", "Mason", "Evelyn", "Logan", "Aaliyah",
                "Diego", "Fatima", "Omar", "Priya", "Keisha", "Tyrone", "Hana", "Kenji"]
CP1252_LAST = ["Müller", "Ñuñez", "O'Brien", "D'Angelo", "Smith-Jones", "García-López", "Pérez",
               "Hernández", "Gómez", "Núñez", "Åberg", "Søndergaard", "de la Cruz", "van der Berg",
               "St. John", "Fernández", "Bouchard-Lévesque", "Zúñiga", "Smith", "Johnson", "Williams",
               "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Lopez", "Wilson",
               "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Lee", "Nguyen", "Kim", "Patel",
               "Okafor", "Cohen", "Yamamoto", "Reyes", "Cruz"]
# Names only Unicode holds: Vietnamese, Polish, Czech, Chinese (pinyin and Han).
UTF8_FIRST = ["Ngọc", "Łukasz", "Đức", "Thảo", "Małgorzata", "Hương", "Zoë", "José", "François",
              "Ömer", "Çağan", "Zoltán", "Fāng", "Xóchitl", "Dagný", "Sarah", "Michael", "Jennifer",
              "David", "Karen", "Robert", "Linda", "James", "Patricia", "Brian", "Susan", "Kevin",
              "Michelle", "Mark", "Laura", "Steven", "Amanda", "Paul", "Donna", "Gary"]
UTF8_LAST = ["Nguyễn", "Wiśniewski", "Dvořák", "Trần", "Łukaszewicz", "Phạm", "Ødegård", "Çelik",
             "Öztürk", "Lê", "Wáng", "Müller", "O'Connor", "Ó Súilleabháin", "Fitzgerald-O'Neil",
             "Smith", "Johnson", "Brown", "Davis", "Miller", "Wilson", "Moore", "Taylor", "Anderson",
             "Thomas", "Harris", "Martin", "Thompson", "Clark", "Lewis", "Walker", "Young", "Hall"]

SCHOOLS = [code for code, _ in DEMO_SITES if code not in ("DO", "TBL")]  # HS, MS, ELM1..3
ELEMENTARY = ["ELM1", "ELM2", "ELM3"]


def us_date(d: date) -> str:
    return f"{d.month:02d}/{d.day:02d}/{d.year:04d}"


def iso_to_us(text: str) -> str:
    return us_date(date.fromisoformat(text))


def grade_code(level: int) -> str:
    return "PK" if level < 0 else "K" if level == 0 else str(level)


def school_for(level: int, rng: Random) -> str:
    return ELEMENTARY[int(rng.random() * 3)] if level <= 5 else "MS" if level <= 8 else "HS"


def homeroom_for(school: str, level: int, rng: Random) -> str:
    if school == "HS":
        return f"Room {201 + int(rng.random() * 40)}"
    if school == "MS":
        return f"Room {101 + int(rng.random() * 30)}"
    if school in ELEMENTARY:
        return f"Room {100 + 10 * (min(level, 5) + 1) + 1 + int(rng.random() * 4)}"
    return ""


def birthdate_for(level: int, rng: Random) -> date:
    return date(SCHOOL_YEAR - 6 - level, 9, 1) + timedelta(days=int(rng.random() * 365))


def demo_patrons() -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
    """Some students and staff of the default demo district (seed 1, 2000 patrons)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        build_demo(db, patrons=2000, seed=1, operator="make_samples")
        conn = sqlite3.connect(db)
        conn.row_factory = sqlite3.Row
        students = conn.execute(
            "SELECT * FROM patrons WHERE patron_type = 'Student' AND status = 'Active'"
            " AND site IN ('HS', 'MS', 'ELM1', 'ELM2', 'ELM3') AND grade NOT IN ('PK', 'GRAD')"
            " ORDER BY id LIMIT 60").fetchall()
        staff = conn.execute(
            "SELECT * FROM patrons WHERE patron_type IN ('Teacher', 'Staff') AND status = 'Active'"
            " AND site IN ('HS', 'MS', 'ELM1', 'ELM2', 'ELM3') ORDER BY id LIMIT 30").fetchall()
        conn.close()

    def fits(row: sqlite3.Row) -> bool:
        try:
            f"{row['last_name']}{row['first_name']}{row['nickname']}".encode("cp1252")
        except UnicodeEncodeError:
            return False
        return True

    return [r for r in students if fits(r)][:20], list(staff)[:8]


def student_rows(existing: list[sqlite3.Row]) -> list[list[str]]:
    rng = Random("students_windows1252")
    r = rng.random
    rows: list[list[str]] = []
    # 1. existing demo students: mostly unchanged, some moved homeroom, one new email, one new name
    for k, p in enumerate(existing):
        homeroom = p["homeroom"]
        if k % 5 == 1:
            homeroom = homeroom_for(p["site"], int(p["grade"]), rng)
        last = p["last_name"]
        if k == 3:
            last = f"{last}-Jones"  # a hyphenated name after a custody change
        email = p["email"]
        if k == 7 and not email:
            email = f"{ascii_fold(p['first_name'])[:1]}{ascii_fold(last)}{p['district_id']}@students.lincoln.k12.example.us"
        rows.append([p["district_id"], p["barcode"], last, p["first_name"], p["nickname"], p["grade"],
                     p["site"], homeroom, str(p["graduation_year"]), iso_to_us(p["birthdate"]), email])
    # 2. new students (new district IDs in the 9,000,000 range, barcodes 2041790...)
    student_id = 9_000_000
    barcode = 90_000_000
    for k in range(100):
        student_id += 1 + int(r() * 3)
        barcode += 1 + int(r() * 3)
        first = CP1252_FIRST[k] if k < len(CP1252_FIRST) else CP1252_FIRST[int(r() * len(CP1252_FIRST))]
        last = CP1252_LAST[(k * 7) % len(CP1252_LAST)] if k < 30 else CP1252_LAST[int(r() * len(CP1252_LAST))]
        level = int(r() * 14) - 1  # PK..12
        school = school_for(level, rng)
        nickname = {"José": "Pepe", "Zoë": "Zo", "Joaquín": "Quino"}.get(first, "")
        email = ""
        if level >= 6 and r() < 0.8:
            email = f"{ascii_fold(first)[:1]}{ascii_fold(last)[:10]}{student_id}@students.lincoln.k12.example.us"
        rows.append([str(student_id), f"20417{barcode:09d}", last, first, nickname, grade_code(level),
                     school, homeroom_for(school, level, rng), str(SCHOOL_YEAR + 13 - level),
                     us_date(birthdate_for(level, rng)), email])
    # 3. the awkward rows an import has to cope with (README.md lists them)
    rows[25][2] = "Carter, Jr."                       # a comma: the field is quoted
    rows[26][2] = "O\u2019Neil"                       # a curly apostrophe (0x92 in Windows-1252)
    rows[27][3] = "  Gabriel "                        # stray spaces around a name
    rows[28][4] = 'Jimmy "J.J."'                      # quotes inside a field
    rows[40][6] = UNKNOWN_SITE_CODES[0]               # unknown school codes: the Union Site
    rows[41][6] = UNKNOWN_SITE_CODES[0]
    rows[42][6] = UNKNOWN_SITE_CODES[1]
    rows[40][7] = rows[41][7] = rows[42][7] = ""
    rows[50][9] = "02/30/" + rows[50][9][-4:]         # a date that does not exist
    rows[51][1] = ""                                  # no barcode yet
    rows[52][1] = existing[0]["barcode"] if existing else rows[53][1]  # barcode conflict
    return rows


def staff_rows(existing: list[sqlite3.Row]) -> list[list[str]]:
    rng = Random("staff_utf8_bom")
    r = rng.random
    rows: list[list[str]] = []
    for p in existing:
        position = "Teacher" if p["patron_type"] == "Teacher" else (
            "Librarian" if p["security_group"] == "LIBRARIAN" else "Secretary")
        rows.append([p["district_id"], p["barcode"], p["last_name"], p["first_name"], p["nickname"],
                     p["patron_type"], position, p["site"], p["homeroom"], p["location2"], p["email"],
                     p["phone"], iso_to_us(p["birthdate"])])
    positions = [("Teacher", "Teacher")] * 6 + [("Staff", "Paraprofessional"), ("Staff", "Secretary"),
                                                 ("Staff", "Librarian"), ("Staff", "Custodian"),
                                                 ("Staff", "Principal"), ("Staff", "Nurse")]
    departments = ["English", "Math", "Science", "Social Studies", "World Languages", "Special Education"]
    employee = 900_000
    barcode = 95_000_000
    for k in range(52):
        employee += 1 + int(r() * 2)
        barcode += 1 + int(r() * 3)
        first = UTF8_FIRST[k] if k < len(UTF8_FIRST) else UTF8_FIRST[int(r() * len(UTF8_FIRST))]
        last = UTF8_LAST[k] if k < len(UTF8_LAST) else UTF8_LAST[int(r() * len(UTF8_LAST))]
        ptype, position = positions[int(r() * len(positions))]
        school = SCHOOLS[int(r() * len(SCHOOLS))]
        room = homeroom_for(school, int(r() * 6), rng) if ptype == "Teacher" else {
            "Librarian": "Library", "Nurse": "Nurse's Office", "Principal": "Front Office",
            "Secretary": "Front Office"}.get(position, "")
        department = departments[int(r() * len(departments))] if ptype == "Teacher" and school in ("HS", "MS") else ""
        email = f"{ascii_fold(first)}.{ascii_fold(last)}@lincoln.k12.example.us" if r() < 0.9 else ""
        phone = f"x{4000 + int(r() * 6000)}" if r() < 0.7 else ""
        born = REFERENCE_DATE - timedelta(days=365 * 23 + int(r() * 365 * 40))
        rows.append([f"E{employee}", f"20417{barcode:09d}", last, first, "", ptype, position, school, room,
                     department, email, phone, us_date(born)])
    n = len(existing)
    rows[n + 10][2:5] = ["Wáng", "Fāng", "小王"]       # pinyin tone marks, a nickname in Han characters
    if rows[n + 10][10]:
        rows[n + 10][10] = "fang.wang@lincoln.k12.example.us"
    rows[n + 3][4] = "[b]Coach[/b]"                   # looks like console markup: must show literally
    rows[n + 20][7] = UNKNOWN_SITE_CODES[1]           # an unknown school code: the Union Site
    return rows


def render(header: list[str], rows: list[list[str]], *, encoding: str, newline: str) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode(encoding)


def samples() -> dict[str, tuple[bytes, int, int]]:
    """file name -> (content, data rows, rows taken from the demo district)."""
    students, staff = demo_patrons()
    srows = student_rows(students)
    trows = staff_rows(staff)
    return {
        "students_windows1252.csv": (
            render(STUDENT_HEADER, srows, encoding="cp1252", newline="\r\n"), len(srows), len(students)),
        "staff_utf8_bom.csv": (
            render(STAFF_HEADER, trows, encoding="utf-8-sig", newline="\n"), len(trows), len(staff)),
    }


def main() -> int:
    for name, (content, rows, from_demo) in samples().items():
        (HERE / name).write_bytes(content)
        print(f"{name}: {rows} rows ({from_demo} from the demo district)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
