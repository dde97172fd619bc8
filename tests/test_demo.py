"""The demo district generator, the `demo` subcommand, and the sample CSV files."""

from __future__ import annotations

import csv
import importlib.util
import io
import re
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from patron_tui.cli import main as cli_main
from patron_tui.services.demo import (
    DEMO_SITES,
    REFERENCE_DATE,
    UNKNOWN_SITE_CODES,
    DemoExists,
    build_demo,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"
N = 2000

# tables the demo fills, with a column order to compare them by
DEMO_TABLES = ("sites", "titles", "title_media", "title_subjects", "notes", "charges", "checkouts",
               "holds", "patron_history", "reviews", "patron_profiles", "profile_subjects",
               "service_queue")


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return conn


def _content(path: Path) -> dict[str, list[tuple]]:
    """Everything the demo generated (the Unknown Patron's and the journal's wall-clock
    timestamps are Store.create's bookkeeping, not demo data)."""
    conn = _open(path)
    try:
        out = {"patrons": conn.execute("SELECT * FROM patrons WHERE is_system = 0 ORDER BY id").fetchall()}
        for table in DEMO_TABLES:
            out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        return out
    finally:
        conn.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("demo") / "district.db"
    messages: list[str] = []
    stats = build_demo(path, patrons=N, seed=1, progress=messages.append, operator="tester")
    stats["messages"] = messages
    return path, stats


@pytest.fixture()
def db(demo) -> sqlite3.Connection:
    conn = _open(demo[0])
    yield conn
    conn.close()


# -- determinism ----------------------------------------------------------------------------------
def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = _content(Path(build_demo(tmp_path / "a.db", patrons=600, seed=7, operator="x")["path"]))
    b = _content(Path(build_demo(tmp_path / "b.db", patrons=600, seed=7, operator="y")["path"]))
    c = _content(Path(build_demo(tmp_path / "c.db", patrons=600, seed=8, operator="x")["path"]))
    assert len(a["patrons"]) == 600
    assert a == b
    assert a["patrons"] != c["patrons"]
    assert a["notes"] != c["notes"]


def test_no_wall_clock_in_the_data(db):
    # every generated timestamp lies on or before the reference date (due dates and
    # expirations may lie after it, but never near the real 'now' by accident of the clock)
    latest = db.execute("SELECT max(created_at), max(updated_at) FROM patrons WHERE is_system = 0").fetchone()
    ref = REFERENCE_DATE.isoformat()
    assert all(v[:10] <= ref for v in latest)


# -- counts and shape -----------------------------------------------------------------------------
def test_counts_and_stats(demo, db):
    path, stats = demo
    assert stats["patrons"] == N
    assert isinstance(stats["seconds"], float)
    assert db.execute("SELECT count(*) FROM patrons").fetchone()[0] == N + 1
    system = db.execute("SELECT id, last_name, is_system FROM patrons WHERE is_system = 1").fetchall()
    assert system == [(1, "Unknown Patron", 1)]
    for table, n in stats["rows"].items():
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] >= n
    # dependants scale with the patrons
    assert 0.2 * N < stats["rows"]["notes"] < 0.5 * N
    assert 0.25 * N < stats["rows"]["charges"] < 0.6 * N
    assert 0.35 * N < stats["rows"]["checkouts"] < 0.8 * N
    assert stats["rows"]["titles"] == 300
    assert any(m.startswith("patrons:") for m in stats["messages"])


def test_sites_exist_and_union_site_used(db):
    sites = {r[0] for r in db.execute("SELECT code FROM sites")}
    assert {code for code, _ in DEMO_SITES} <= sites
    used = {r[0] for r in db.execute("SELECT DISTINCT site FROM patrons")}
    assert used <= sites
    union = db.execute("SELECT code FROM sites WHERE is_union = 1").fetchone()[0]
    n_union = db.execute("SELECT count(*) FROM patrons WHERE site = ? AND is_system = 0", (union,)).fetchone()[0]
    assert 1 <= n_union <= 0.02 * N
    assert not set(UNKNOWN_SITE_CODES) & sites


def test_reference_codes_come_from_the_reference_tables(db):
    for column, table in (("grade", "grades"), ("policy", "policies"), ("security_group", "security_groups"),
                          ("patron_type", "patron_types"), ("access_level", "access_levels"),
                          ("persona", "personas"), ("status", "statuses")):
        bad = db.execute(
            f"SELECT DISTINCT {column} FROM patrons WHERE is_system = 0 AND {column} != ''"
            f" AND {column} NOT IN (SELECT code FROM {table})").fetchall()
        assert bad == [], (column, bad)
    for table in ("title_media", "patron_profiles"):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE medium NOT IN (SELECT code FROM media)").fetchone()[0] == 0
    for table in ("title_subjects", "profile_subjects"):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE subject NOT IN (SELECT code FROM subjects)").fetchone()[0] == 0


def test_students_grades_years_and_birthdates_agree(db):
    levels = {"PK": -1, "K": 0, **{str(n): n for n in range(1, 13)}}
    rows = db.execute("SELECT grade, graduation_year, birthdate FROM patrons WHERE patron_type = 'Student'").fetchall()
    grades = {g for g, _, _ in rows}
    assert {"PK", "K", "1", "6", "12", "GRAD"} <= grades
    for grade, year, born in rows:
        if grade == "GRAD":
            assert year <= REFERENCE_DATE.year
            continue
        level = levels[grade]
        assert year == 2026 + 13 - level
        born = date.fromisoformat(born)
        assert date(2026 - 6 - level, 9, 1) <= born <= date(2026 - 5 - level, 8, 31), (grade, born)
    share = db.execute("SELECT avg(patron_type IN ('Teacher', 'Staff')) FROM patrons WHERE is_system = 0").fetchone()[0]
    assert 0.05 < share < 0.12


def test_statuses_and_inactive_since(db):
    statuses = dict(db.execute("SELECT status, count(*) FROM patrons WHERE is_system = 0 GROUP BY status"))
    assert set(statuses) == {"Active", "Inactive", "Restricted", "Suspended", "Transferred"}
    assert statuses["Active"] > 0.85 * N
    assert db.execute("SELECT count(*) FROM patrons WHERE is_system = 0 AND status IN ('Inactive', 'Transferred')"
                      " AND inactive_since IS NULL").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM patrons WHERE status = 'Active' AND inactive_since IS NOT NULL"
                      ).fetchone()[0] == 0


def test_identifiers_unique(db):
    for column in ("barcode", "district_id", "username"):
        total, distinct = db.execute(
            f"SELECT count({column}), count(DISTINCT {column}) FROM patrons").fetchone()
        assert total == distinct and total > 0, column
    assert db.execute("SELECT count(*) FROM patrons WHERE barcode IS NOT NULL").fetchone()[0] == N


def test_awkward_names_and_missing_emails(db):
    last = {r[0] for r in db.execute("SELECT DISTINCT last_name FROM patrons")}
    first = {r[0] for r in db.execute("SELECT DISTINCT first_name FROM patrons")}
    assert any("'" in n for n in last)
    assert any("-" in n for n in last)
    assert any(not n.isascii() for n in last)
    assert any(not n.isascii() for n in first)
    names = last | first
    assert {"José", "Zoë", "Müller"} & names
    assert db.execute("SELECT count(*) FROM patrons WHERE nickname != ''").fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM patrons WHERE email = '' AND is_system = 0").fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM patrons WHERE picture IS NOT NULL").fetchone()[0] > 0


def test_dependants(db):
    types = {r[0] for r in db.execute("SELECT DISTINCT note_type FROM notes")}
    assert types == {"Contact", "General", "Alert", "Category"}
    assert db.execute("SELECT max(length(text)) FROM notes").fetchone()[0] <= 500
    kinds = {r[0] for r in db.execute("SELECT DISTINCT kind FROM patron_history")}
    assert kinds == {"payment", "renewal", "lost", "refund", "return", "lexile"}
    assert db.execute("SELECT count(*) FROM patron_history WHERE kind = 'lexile' AND lexile IS NOT NULL").fetchone()[0] > 0
    charge_kinds = {r[0] for r in db.execute("SELECT DISTINCT kind FROM charges")}
    assert charge_kinds == {"lost", "overdue", "other"}
    assert db.execute("SELECT count(*) FROM charges WHERE forgiven_at IS NOT NULL").fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM charges WHERE accumulating = 1 AND kind = 'overdue'").fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM charges WHERE balance_cents > amount_cents OR balance_cents < 0"
                      ).fetchone()[0] == 0
    ref = REFERENCE_DATE.isoformat()
    overdue = db.execute("SELECT count(*) FROM checkouts WHERE due_at < ?", (ref,)).fetchone()[0]
    total = db.execute("SELECT count(*) FROM checkouts").fetchone()[0]
    assert 0 < overdue < total
    assert {r[0] for r in db.execute("SELECT DISTINCT kind FROM holds")} == {"hold", "reservation"}
    assert db.execute("SELECT count(*) FROM reviews").fetchone()[0] > 0
    profiled = db.execute("SELECT count(DISTINCT patron_id) FROM patron_profiles").fetchone()[0]
    assert 0.08 * N < profiled < 0.25 * N
    assert db.execute("SELECT count(*) FROM profile_subjects").fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM service_queue").fetchone()[0] > 0
    # the service queue only holds titles the profile's medium has
    assert db.execute(
        "SELECT count(*) FROM service_queue q JOIN patron_profiles p ON p.id = q.profile_id"
        " WHERE NOT EXISTS (SELECT 1 FROM title_media m WHERE m.title_id = q.title_id AND m.medium = p.medium)"
    ).fetchone()[0] == 0
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_written_through_the_changeset_writer(db):
    rows = db.execute("SELECT row_key, operator FROM change_journal WHERE table_name = 'patrons'"
                      " AND op = 'insert_range'").fetchall()
    assert rows == [(f"2..{N + 1}", "tester")]


# -- replacing, refusing, cleaning up -------------------------------------------------------------
def test_demo_exists_without_replace(tmp_path):
    path = tmp_path / "d.db"
    build_demo(path, patrons=50, operator="x")
    with pytest.raises(DemoExists) as info:
        build_demo(path, patrons=50, operator="x")
    assert str(path) in str(info.value) and "--force" in str(info.value)
    stats = build_demo(path, patrons=80, replace=True, operator="x")
    assert stats["patrons"] == 80
    conn = _open(path)
    assert conn.execute("SELECT count(*) FROM patrons WHERE is_system = 0").fetchone()[0] == 80
    conn.close()


def test_failed_build_leaves_nothing_behind(tmp_path):
    path = tmp_path / "broken.db"

    def progress(msg: str) -> None:
        if msg.startswith("patrons:"):
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        build_demo(path, patrons=100, progress=progress, operator="x")
    assert not any(tmp_path.iterdir())


def test_zero_patrons(tmp_path):
    stats = build_demo(tmp_path / "empty.db", patrons=0, operator="x")
    assert stats["patrons"] == 0
    conn = _open(tmp_path / "empty.db")
    assert conn.execute("SELECT count(*) FROM patrons").fetchone()[0] == 1
    conn.close()


def test_cli_demo(tmp_path, capsys):
    path = tmp_path / "cli.db"
    assert cli_main(["demo", "--patrons", "300", "--db", str(path)]) == 0
    assert "300 patrons" in capsys.readouterr().out
    conn = _open(path)
    assert conn.execute("SELECT count(*) FROM patrons WHERE is_system = 0").fetchone()[0] == 300
    conn.close()
    assert cli_main(["demo", "--patrons", "300", "--db", str(path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli_main(["demo", "--patrons", "120", "--seed", "3", "--force", "--db", str(path)]) == 0


# -- the sample CSV files -------------------------------------------------------------------------
def _read(name: str, encoding: str) -> tuple[bytes, list[dict[str, str]]]:
    raw = (SAMPLES / name).read_bytes()
    return raw, list(csv.DictReader(io.StringIO(raw.decode(encoding), newline="")))


def _check_common(rows: list[dict[str, str]], school_col: str = "School") -> None:
    assert 50 <= len(rows) <= 200
    schools = {r[school_col] for r in rows}
    known = {code for code, _ in DEMO_SITES}
    assert schools - set(UNKNOWN_SITE_CODES) <= known
    assert schools & set(UNKNOWN_SITE_CODES)
    dates = [r["Birthdate"] for r in rows]
    assert all(re.fullmatch(r"\d\d/\d\d/\d{4}", d) for d in dates)


def test_students_windows1252():
    raw, rows = _read("students_windows1252.csv", "cp1252")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") == raw.count(b"\n") == len(rows) + 1
    assert list(rows[0]) == ["Student ID", "Student Barcode", "Last Name", "First Name", "Nickname", "Grade",
                             "School", "Homeroom", "Graduation Year", "Birthdate", "Email"]
    _check_common(rows)
    names = {r["First Name"] for r in rows} | {r["Last Name"] for r in rows}
    for name in ("José", "Zoë", "François", "Müller", "Ñuñez", "O'Brien", "D'Angelo", "Smith-Jones",
                 "Carter, Jr.", "O\u2019Neil"):
        assert name in names, name
    assert any(r["Email"] == "" for r in rows)


def test_staff_utf8_bom():
    raw, rows = _read("staff_utf8_bom.csv", "utf-8-sig")
    assert raw.startswith(b"\xef\xbb\xbf")
    assert list(rows[0])[0] == "Employee ID"
    _check_common(rows)
    names = {r["First Name"] for r in rows} | {r["Last Name"] for r in rows}
    for name in ("Ngọc", "Łukasz", "Nguyễn", "Wiśniewski"):
        assert name in names, name
        with pytest.raises(UnicodeEncodeError):
            name.encode("cp1252")
    assert {r["Patron Type"] for r in rows} == {"Teacher", "Staff"}


def test_sample_files_match_their_generator():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.samples()
    assert set(made) == {"students_windows1252.csv", "staff_utf8_bom.csv"}
    for name, (content, rows, from_demo) in made.items():
        assert content == (SAMPLES / name).read_bytes(), \
            f"sample_data/{name} is stale: run .venv/bin/python sample_data/make_samples.py"
        assert from_demo > 0
    # the rows taken from the demo district really are patrons of the default demo
    students, _ = module.demo_patrons()
    _, rows = _read("students_windows1252.csv", "cp1252")
    assert rows[0]["Student ID"] == students[0]["district_id"]
    assert rows[0]["Student Barcode"] == students[0]["barcode"]
