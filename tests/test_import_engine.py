"""The import engine (services/imports/engine.py) run on the real run engine and store."""

from __future__ import annotations

import json

import io
from pathlib import Path

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services.imports import engine as engine_mod
from patron_tui.services.imports.engine import run_import
from patron_tui.services.imports.summary import load_summary, messages_csv
from patron_tui.store import ChangesetWriter, Store

from tests.conftest import district, patron_where

SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"

PROPS = """\
encoding=utf-8
match=district_id
date_format=%m/%d/%Y
field.district_id=ID
field.barcode=Barcode
field.last_name=Last
field.first_name=First
field.site=School
field.grade=Grade
field.email=Email
field.birthdate=Birthdate
required=barcode,last_name
{extra}
"""
HEADER = "ID,Barcode,Last,First,School,Grade,Email,Birthdate\n"


ANN_AND_BOB = [
    {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS",
     "grade": "9", "email": "ann@old.example"},
    {"district_id": "D2", "barcode": "B2", "last_name": "Baker", "first_name": "Bob", "site": "ELM",
     "grade": "3", "email": ""},
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return district(tmp_path / "district.db", ANN_AND_BOB)


@pytest.fixture
def engine(store: Store):
    eng = RunEngine(store, pool_size=2)
    yield eng
    eng.shutdown()


def write(tmp_path: Path, rows: list[str], *, extra: str = "", name: str = "in.csv") -> tuple[Path, Path]:
    csv_path = tmp_path / name
    csv_path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    props = tmp_path / (name + ".properties")
    props.write_text(PROPS.format(extra=extra), encoding="utf-8")
    return csv_path, props


def run(engine: RunEngine, csv_path, props, **kw):
    handle = engine.execute("import", "Import", lambda ctx: run_import(
        ctx, path=csv_path, properties_path=props, **kw))
    return handle


patron = patron_where


def messages(store: Store, run_id: int, level: str | None = None) -> list[dict]:
    conn = store.connect()
    try:
        return [m for m in load_summary(conn, run_id)["messages"] if level is None or m["level"] == level]
    finally:
        conn.close()


def dump(path: Path) -> list[str]:
    import sqlite3
    conn = sqlite3.connect(path)
    try:
        # the run bookkeeping (runs, run_messages) is written on purpose; patron data must not be
        return [line for line in conn.iterdump()
                if not line.startswith(('INSERT INTO "runs"', 'INSERT INTO "run_messages"'))]
    finally:
        conn.close()


ROWS = [
    "D1,B1,Able,Ann,HS,10,ann@new.example,01/02/2010",   # update: grade, email, birthdate
    "D2,B2,Baker,Bob,ELM,3,,",                            # unchanged
    "D3,B3,Carter,Cleo,HS,9,cleo@example,03/04/2010",     # add
]


def test_full_adds_updates_and_unchanged(store, engine, tmp_path):
    csv_path, props = write(tmp_path, ROWS)
    h = run(engine, csv_path, props)
    assert h.status.value == "succeeded", h.error
    s = h.summary
    assert (s["read"], s["added"], s["updated"], s["unchanged"], s["skipped"]) == (3, 1, 1, 1, 0)
    assert s["mode"] == "full" and s["dry_run"] is False and s["conflicts"] == 0
    ann = patron(store, district_id="D1")
    assert (ann["grade"], ann["email"], ann["birthdate"]) == ("10", "ann@new.example", "2010-01-02")
    cleo = patron(store, district_id="D3")
    assert cleo["site"] == "HS" and cleo["status"] == "Active" and cleo["created_at"] and cleo["updated_at"]
    for did in ("D1", "D2", "D3"):
        assert patron(store, district_id=did)["last_seen_import_at"], did
    conn = store.connect()
    journal = conn.execute(
        "SELECT op, row_key FROM change_journal WHERE run_id = ? AND table_name = 'patrons'", (h.run_id,)
    ).fetchall()
    conn.close()
    ops = {(r["op"], r["row_key"]) for r in journal}
    # the adds are fresh consecutive ids: one insert_range row names them (undo deletes the span)
    assert ("insert_range", f"{cleo['id']}..{cleo['id']}") in ops and ("update", str(ann["id"])) in ops
    infos = messages(store, h.run_id, "info")
    assert {m["code"] for m in infos} >= {"added", "updated"}


def test_incremental_after_full_is_all_unchanged_then_a_change_updates(store, engine, tmp_path):
    csv_path, props = write(tmp_path, ROWS)
    assert run(engine, csv_path, props).status.value == "succeeded"
    before = {did: patron(store, district_id=did) for did in ("D1", "D2", "D3")}
    h = run(engine, csv_path, props, mode="incremental")
    assert (h.summary["unchanged"], h.summary["added"], h.summary["updated"]) == (3, 0, 0)
    for did, old in before.items():
        new = patron(store, district_id=did)
        assert new["last_seen_import_at"] >= old["last_seen_import_at"]
        assert {k: v for k, v in new.items() if k != "last_seen_import_at"} == \
               {k: v for k, v in old.items() if k != "last_seen_import_at"}
    csv2, props2 = write(tmp_path, [ROWS[0], "D2,B2,Baker,Robert,ELM,3,,", ROWS[2]], name="in2.csv")
    h = run(engine, csv2, props2, mode="incremental")
    assert (h.summary["unchanged"], h.summary["updated"]) == (2, 1)
    assert patron(store, district_id="D2")["first_name"] == "Robert"


def test_duplicate_key_in_file_first_wins(store, engine, tmp_path):
    csv_path, props = write(tmp_path, ["D5,B5,First,One,HS,,,", "D5,B6,Second,Two,HS,,,"])
    h = run(engine, csv_path, props)
    assert (h.summary["added"], h.summary["skipped"]) == (1, 1)
    assert patron(store, district_id="D5")["last_name"] == "First"
    (m,) = messages(store, h.run_id, "skipped")
    assert m["code"] == "duplicate_in_file" and m["line"] == 3 and "line 2" in m["text"]


def test_barcode_conflict_keeps_both_patrons(store, engine, tmp_path):
    ann_before = patron(store, district_id="D1")
    # an existing patron (D2) and a new one (D9) both claim Ann's barcode
    csv_path, props = write(tmp_path, ["D2,B1,Baker,Bob,ELM,3,,", "D9,B1,Newman,Nia,HS,,,"])
    h = run(engine, csv_path, props)
    assert (h.summary["skipped"], h.summary["conflicts"], h.summary["added"]) == (2, 2, 0)
    assert patron(store, district_id="D1") == ann_before
    assert patron(store, district_id="D2")["barcode"] == "B2"
    assert patron(store, district_id="D9") is None
    skipped = messages(store, h.run_id, "skipped")
    assert [m["code"] for m in skipped] == ["barcode_conflict"] * 2
    assert "Able, Ann" in skipped[1]["text"] and "line 3" in skipped[1]["text"]
    # both conflicts are kept whole for resolution from the job summary
    conn = store.connect()
    rows = conn.execute("SELECT line, field, value, holder_id, target_id, incoming, status FROM import_conflicts"
                        " WHERE run_id = ? ORDER BY line", (h.run_id,)).fetchall()
    conn.close()
    assert [(r[0], r[1], r[2], r[6]) for r in rows] == [(2, "barcode", "B1", "open"), (3, "barcode", "B1", "open")]
    assert rows[0][3] == rows[1][3] == ann_before["id"]
    assert rows[0][4] == patron(store, district_id="D2")["id"] and rows[1][4] is None
    incoming = json.loads(rows[1][5])
    assert incoming["fields"]["last_name"] == "Newman" and incoming["fields"]["barcode"] == "B1"


def test_dry_run_keeps_no_conflicts(store, engine, tmp_path):
    csv_path, props = write(tmp_path, ["D9,B1,Newman,Nia,HS,,,"])
    h = run(engine, csv_path, props, dry_run=True)
    assert h.summary["conflicts"] == 1
    conn = store.connect()
    assert conn.execute("SELECT count(*) FROM import_conflicts").fetchone()[0] == 0
    conn.close()


def test_barcode_conflict_inside_the_file(store, engine, tmp_path):
    csv_path, props = write(tmp_path, ["D7,B7,Seven,S,HS,,,", "D8,B7,Eight,E,HS,,,"])
    h = run(engine, csv_path, props)
    assert (h.summary["added"], h.summary["conflicts"]) == (1, 1)
    assert patron(store, district_id="D8") is None


def test_unknown_site_goes_to_union_site_with_a_warning(store, engine, tmp_path):
    csv_path, props = write(tmp_path, ["D4,B4,Dunn,Dee,ZZZ,,,"])
    h = run(engine, csv_path, props)
    assert h.summary["added"] == 1 and h.summary["warnings"] == 1
    assert patron(store, district_id="D4")["site"] == "UNION"
    (w,) = messages(store, h.run_id, "warning")
    assert w["code"] == "union_site" and w["barcode"] == "B4" and "ZZZ" in w["text"]


def test_skipped_reasons(store, engine, tmp_path):
    csv_path, props = write(tmp_path, [
        "D4,,Dunn,Dee,HS,,,",              # missing barcode (required)
        "D5,B5,Eve,E,HS,,,02/30/2010",     # bad date
        "D6,B6,Fox,F,HS,99,,",             # grade not in the grade table
        "D7,B7,Gray",                      # ragged row
    ])
    h = run(engine, csv_path, props)
    assert h.status.value == "succeeded"
    assert (h.summary["read"], h.summary["skipped"], h.summary["added"]) == (4, 4, 0)
    codes = [m["code"] for m in messages(store, h.run_id, "skipped")]
    assert codes == ["missing_required", "bad_date", "unknown_code", "ragged_row"]
    assert h.summary["by_code"]["bad_date"] == 1


def test_require_district_id_setting(store, engine, tmp_path):
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "require_district_id", {"value": "on"})
    conn.close()
    csv_path, props = write(tmp_path, [",B8,Hale,H,HS,,,", "D9,B9,Ives,I,HS,,,"])
    h = run(engine, csv_path, props)
    assert (h.summary["added"], h.summary["skipped"]) == (1, 1)
    assert messages(store, h.run_id, "skipped")[0]["code"] == "missing_district_id"


def test_without_district_id_a_record_matches_on_barcode(store, engine, tmp_path):
    csv_path, props = write(tmp_path, [",B2,Baker,Bobby,ELM,3,,"])
    h = run(engine, csv_path, props)
    assert h.summary["updated"] == 1
    bob = patron(store, barcode="B2")
    assert bob["first_name"] == "Bobby" and bob["district_id"] == "D2"


def test_protected_fields_are_only_filled_when_empty(store, engine, tmp_path):
    csv_path, props = write(tmp_path, [
        "D1,B1,Able,Ann,HS,9,ann@school.example,",
        "D2,B2,Baker,Bob,ELM,3,bob@school.example,",
    ], extra="protect=email")
    h = run(engine, csv_path, props)
    assert h.status.value == "succeeded"
    assert patron(store, district_id="D1")["email"] == "ann@old.example"    # staff's value stays
    assert patron(store, district_id="D2")["email"] == "bob@school.example"  # empty: filled


def test_columns_the_file_does_not_carry_are_left_alone(store, engine, tmp_path):
    csv_path = tmp_path / "narrow.csv"
    csv_path.write_text("ID,Barcode,Last,First\nD1,B1,Able,Annie\n", encoding="utf-8")
    props = tmp_path / "narrow.properties"
    props.write_text("match=district_id\nfield.district_id=ID\nfield.barcode=Barcode\n"
                     "field.last_name=Last\nfield.first_name=First\n", encoding="utf-8")
    h = run(engine, csv_path, props)
    assert h.summary["updated"] == 1
    ann = patron(store, district_id="D1")
    assert (ann["first_name"], ann["email"], ann["grade"], ann["site"]) == ("Annie", "ann@old.example", "9", "HS")


def test_dry_run_changes_nothing_and_reports_the_same(store, engine, tmp_path):
    rows = ROWS + ["D9,B1,Newman,Nia,HS,,,", "D4,B4,Dunn,Dee,ZZZ,,,", "D5,,x,y,HS,,,"]
    csv_path, props = write(tmp_path, rows)
    before = dump(store.path)
    dry = run(engine, csv_path, props, dry_run=True)
    assert dry.status.value == "succeeded"
    assert dump(store.path) == before
    real = run(engine, csv_path, props)
    keys = ("read", "added", "updated", "unchanged", "skipped", "conflicts", "warnings", "errors", "by_code")
    assert {k: dry.summary[k] for k in keys} == {k: real.summary[k] for k in keys}
    assert dry.summary["dry_run"] is True and real.summary["added"] == 2
    # the dry run's summary keeps its per-record lines, as the real run's does
    dry_lines = [(m["code"], m["line"]) for m in messages(store, dry.run_id) if m["code"] in ("added", "updated")]
    real_lines = [(m["code"], m["line"]) for m in messages(store, real.run_id) if m["code"] in ("added", "updated")]
    assert dry_lines == real_lines and len(real_lines) == 3


def test_a_rolled_back_import_keeps_its_problems_but_not_its_added_lines(store, engine, tmp_path, monkeypatch):
    """'added'/'updated' lines are written in the data transaction: a failed run never claims
    changes it did not make; its skipped records are still reported."""
    rows = ["D5,,x,y,HS,,,"] + [f"N{i},NB{i},Last{i},First{i},HS,,," for i in range(30)]
    csv_path, props = write(tmp_path, rows)
    real_apply = engine_mod._Import.apply
    calls = {"n": 0}

    def failing_apply(self, writer, chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real_apply(self, writer, chunk)

    monkeypatch.setattr(engine_mod._Import, "apply", failing_apply)
    h = run(engine, csv_path, props, chunk_size=10)
    assert h.status.value == "failed"
    codes = [m["code"] for m in messages(store, h.run_id)]
    assert "missing_required" in codes and calls["n"] == 3
    assert "added" not in codes


def test_a_missing_mapped_column_fails_and_changes_nothing(store, engine, tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("ID,Barcode,Last\nD3,B3,Carter\n", encoding="utf-8")
    _, props = write(tmp_path, [])
    before = dump(store.path)
    h = run(engine, csv_path, props)
    assert h.status.value == "failed"
    assert "bad.csv:1:" in h.error and "First" in h.error
    assert dump(store.path) == before


def test_an_exception_mid_write_rolls_everything_back(store, engine, tmp_path, monkeypatch):
    rows = [f"N{i},NB{i},Last{i},First{i},HS,,," for i in range(30)] + ROWS
    csv_path, props = write(tmp_path, rows)
    before = dump(store.path)
    real_apply = engine_mod._Import.apply
    calls = {"n": 0}

    def failing_apply(self, writer, chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real_apply(self, writer, chunk)

    monkeypatch.setattr(engine_mod._Import, "apply", failing_apply)
    h = engine.execute("import", "Import", lambda ctx: run_import(
        ctx, path=csv_path, properties_path=props, chunk_size=10))
    assert h.status.value == "failed" and "disk on fire" in h.error
    assert dump(store.path) == before
    conn = store.connect()
    assert conn.execute("SELECT status FROM runs WHERE id = ?", (h.run_id,)).fetchone()[0] == "failed"
    conn.close()


def test_cancel_rolls_back(store, engine, tmp_path, monkeypatch):
    rows = [f"N{i},NB{i},Last{i},First{i},HS,,," for i in range(30)]
    csv_path, props = write(tmp_path, rows)
    before = dump(store.path)
    real_apply = engine_mod._Import.apply

    def cancelling_apply(self, writer, chunk):
        real_apply(self, writer, chunk)
        self.ctx.cancel_event.set()

    monkeypatch.setattr(engine_mod._Import, "apply", cancelling_apply)
    h = engine.execute("import", "Import", lambda ctx: run_import(
        ctx, path=csv_path, properties_path=props, chunk_size=10))
    assert h.status.value == "cancelled"
    assert dump(store.path) == before


def test_errors_only_drops_the_per_patron_messages_and_csv_export(store, engine, tmp_path):
    csv_path, props = write(tmp_path, ROWS + ["D9,B1,Newman,Nia,HS,,,"])
    h = run(engine, csv_path, props, summary_errors_only=True)
    assert not [m for m in messages(store, h.run_id, "info") if m["code"] in ("added", "updated")]
    conn = store.connect()
    out = io.StringIO()
    n = messages_csv(conn, h.run_id, out, errors_only=True)
    conn.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "line,barcode,level,code,text" and n == 1
    assert lines[1].startswith("5,B1,skipped,barcode_conflict,")


def test_sample_files_arrive_intact_in_the_demo_district(tmp_path):
    from patron_tui.services.demo import build_demo

    db = tmp_path / "demo.db"
    build_demo(db, patrons=2000, seed=1)
    store = Store(db)
    students = tmp_path / "students.properties"
    students.write_text(
        "encoding=windows-1252\nmatch=district_id\ndate_format=%m/%d/%Y\n"
        "field.district_id=Student ID\nfield.barcode=Student Barcode\nfield.last_name=Last Name\n"
        "field.first_name=First Name\nfield.nickname=Nickname\nfield.grade=Grade\nfield.site=School\n"
        "field.homeroom=Homeroom\nfield.graduation_year=Graduation Year\nfield.birthdate=Birthdate\n"
        "field.email=Email\ndefault.patron_type=Student\nrequired=barcode,last_name,district_id\n",
        encoding="utf-8")
    staff = tmp_path / "staff.properties"
    staff.write_text(
        "encoding=utf-8-sig\nmatch=district_id\ndate_format=%m/%d/%Y\n"
        "field.district_id=Employee ID\nfield.barcode=Staff Barcode\nfield.last_name=Last Name\n"
        "field.first_name=First Name\nfield.nickname=Nickname\nfield.patron_type=Patron Type\n"
        "field.site=School\nfield.homeroom=Room\nfield.email=Email\nfield.phone=Phone\n"
        "field.birthdate=Birthdate\nrequired=barcode,last_name\n", encoding="utf-8")
    eng = RunEngine(store, pool_size=2)
    try:
        h1 = eng.execute("import", "Students", lambda ctx: run_import(
            ctx, path=SAMPLES / "students_windows1252.csv", properties_path=students))
        h2 = eng.execute("import", "Staff", lambda ctx: run_import(
            ctx, path=SAMPLES / "staff_utf8_bom.csv", properties_path=staff))
    finally:
        eng.shutdown()
    assert h1.status.value == "succeeded" and h2.status.value == "succeeded"
    s = h1.summary
    assert s["read"] == 120 and s["updated"] >= 1 and s["added"] >= 90
    assert s["conflicts"] == 1 and s["by_code"]["union_site"] == 3 and s["by_code"]["bad_date"] == 1
    assert s["read"] == s["added"] + s["updated"] + s["unchanged"] + s["skipped"]
    conn = store.connect()
    names = {(r[0], r[1]) for r in conn.execute("SELECT last_name, first_name FROM patrons")}
    nick = {r[0] for r in conn.execute("SELECT nickname FROM patrons")}
    conn.close()
    for name in [("Müller", "José"), ("Hernández", "Zoë"), ("St. John", "François"), ("Carter, Jr.", "Søren"),
                 ("O\u2019Neil", "Björn"), ("García-López", "Gabriel"),
                 ("Nguyễn", "Ngọc"), ("Wiśniewski", "Łukasz"), ("Łukaszewicz", "Małgorzata")]:
        assert name in names, name
    assert 'Jimmy "J.J."' in nick and "[b]Coach[/b]" in nick
    assert h2.summary["by_code"].get("union_site") == 1


MIXED = [
    "D1,B1,Able,Ann,HS,10,ann@new.example,01/02/2010",      # update
    "D2,B2,Baker,Bob,ELM,3,,",                               # unchanged
    "D3,B3,Cole,Cleo,ZZZ,4,,13/45/2011",                     # bad date
    "D4,B1,Dunn,Dee,HS,5,,",                                 # barcode conflict with Ann
    "D5,B5,\"Evans\nSmith\",Eve,HS,6,,",                     # a quoted name across two lines
    "D5,B6,Again,Eve,HS,6,,",                                # duplicate district ID
    "D6,B7,Fox,Fay,,7,,",                                    # no site: Union Site warning (if any)
    "D7,,Gray,Gus,HS,8,,",                                   # missing required barcode
]


def _snapshot(store: Store, run_id: int) -> tuple:
    conn = store.connect()
    try:
        patrons = [tuple(r) for r in conn.execute(
            "SELECT district_id, barcode, last_name, first_name, site, grade, email, birthdate, import_fingerprint"
            " FROM patrons ORDER BY district_id")]
        msgs = [tuple(r) for r in conn.execute(
            "SELECT level, code, line, barcode, text FROM run_messages WHERE run_id = ? ORDER BY id", (run_id,))]
        conflicts = [tuple(r) for r in conn.execute(
            "SELECT line, field, value, incoming FROM import_conflicts WHERE run_id = ? ORDER BY line", (run_id,))]
    finally:
        conn.close()
    return patrons, msgs, conflicts


def test_mapping_in_a_second_process_gives_the_same_import(tmp_path):
    """Big Full imports map in a child process (mapproc); its outcome is the threads' outcome,
    down to every message, conflict and fingerprint."""
    results = []
    for process in (False, True):
        folder = tmp_path / f"p{int(process)}"
        folder.mkdir()
        store = district(folder / "district.db", ANN_AND_BOB)
        csv_path, props = write(folder, MIXED)
        eng = RunEngine(store, pool_size=2)
        try:
            h = eng.execute("import", "Import", lambda ctx: run_import(
                ctx, path=csv_path, properties_path=props, process=process, chunk_size=3))
        finally:
            eng.shutdown()
        assert h.status.value == "succeeded", h.error
        counts = {k: h.summary[k] for k in ("read", "added", "updated", "unchanged", "skipped", "conflicts")}
        results.append((counts, _snapshot(store, h.run_id)))
        conn = store.connect()
        lines = [m["line"] for m in load_summary(conn, h.run_id)["messages"]]
        conn.close()
        # the job summary reads in file order (a chunk reports its problems before its decisions)
        assert lines[:-1] == sorted(lines[:-1]) and lines[-1] is None and len(lines) > 5
    (threads_counts, threads_state), (proc_counts, proc_state) = results
    assert threads_counts == {"read": 8, "added": 2, "updated": 1, "unchanged": 1, "skipped": 4, "conflicts": 1}
    assert proc_counts == threads_counts
    assert proc_state == threads_state
    patrons = {p[0]: p for p in proc_state[0]}
    assert patrons["D5"][2] == "Evans\nSmith" and patrons["D1"][6] == "ann@new.example"
    assert all(p[8] is not None for p in proc_state[0] if p[0] in ("D1", "D2", "D5", "D6"))


def test_mapping_process_reports_a_file_problem_as_the_run_error(store, engine, tmp_path):
    # a header and no records: the child finds it at the end of the file and says so
    csv_path, props = write(tmp_path, [])
    before = _snapshot(store, 0)[0]
    h = run(engine, csv_path, props, process=True)
    assert h.status.value == "failed" and "header row but no records" in h.error and str(csv_path) in h.error
    assert _snapshot(store, 0)[0] == before


def test_incremental_honours_a_mapped_last_modified_column(store, engine, tmp_path):
    header = HEADER.strip() + ",Modified\n"
    props = tmp_path / "m.properties"
    props.write_text(PROPS.format(extra="last_modified=Modified"), encoding="utf-8")
    first = tmp_path / "first.csv"
    first.write_text(header + "D1,B1,Able,Ann,HS,9,ann@old.example,,2020-01-01\n"
                     "D2,B2,Baker,Bob,ELM,3,,,2020-01-01\n", encoding="utf-8")
    assert run(engine, first, props).status.value == "succeeded"
    # both records differ now; only Bob's says it changed since the last import
    second = tmp_path / "second.csv"
    second.write_text(header + "D1,B1,Able,Ann,HS,10,ann@old.example,,2020-01-01\n"
                      "D2,B2,Baker,Bob,ELM,4,,,2099-06-30T08:00:00\n", encoding="utf-8")
    h = run(engine, second, props, mode="incremental")
    assert (h.summary["unchanged"], h.summary["updated"]) == (1, 1), h.summary
    assert patron(store, district_id="D1")["grade"] == "9"
    assert patron(store, district_id="D2")["grade"] == "4"
    # Full ignores the column: every record is compared
    h = run(engine, second, props)
    assert h.summary["updated"] == 1 and patron(store, district_id="D1")["grade"] == "10"


def test_last_modified_column_must_be_in_the_header(store, engine, tmp_path):
    csv_path, props = write(tmp_path, ["D1,B1,Able,Ann,HS,10,,"], extra="last_modified=Changed On")
    h = run(engine, csv_path, props, mode="incremental")
    assert h.status.value == "failed" and "Changed On" in h.error and "last_modified" in h.error


def test_a_mapping_process_that_dies_fails_the_run_and_changes_nothing(store, engine, tmp_path, monkeypatch):
    csv_path, props = write(tmp_path, ["D1,B1,Able,Ann,HS,10,,", "D9,B9,Nine,Nia,HS,4,,"])
    before = _snapshot(store, 0)[0]
    monkeypatch.setattr("sys.executable", "/bin/false")   # the child cannot even start Python
    h = run(engine, csv_path, props, process=True)
    assert h.status.value == "failed" and "mapping process ended (exit status 1)" in h.error
    assert _snapshot(store, 0)[0] == before


@pytest.mark.parametrize("process", [False, True])
def test_a_later_chunk_names_the_line_that_added_the_patron(tmp_path, process):
    """Adds are remembered per range of ids (consecutive lines) or per patron (a gap): a
    later record for the same patron, or taking its barcode, names the line that added it."""
    store = district(tmp_path / "district.db", [])
    csv_path, props = write(tmp_path, [
        "N1,NB1,One,Ann,HS,,,", "N2,NB2,Two,Bo,HS,,,", "N3,NB3,Three,Cy,HS,,,",   # lines 2-4: a range
        "N4,NB4,Four,Di,HS,,,", "N0,NB0,,Nobody,HS,,,", "N5,NB5,Five,Ed,HS,,,",   # lines 5, 7: a gap
        "N2,NB2,Two,Bo,HS,,,", "N5,NB5,Five,Ed,HS,,,", "N9,NB1,Nine,Flo,HS,,,",  # lines 8-10
    ])
    eng = RunEngine(store, pool_size=2)
    try:
        h = eng.execute("import", "Import", lambda ctx: run_import(
            ctx, path=csv_path, properties_path=props, chunk_size=3, process=process))
    finally:
        eng.shutdown()
    assert h.status.value == "succeeded", h.error
    assert (h.summary["added"], h.summary["skipped"]) == (5, 4)
    texts = {m["line"]: m["text"] for m in messages(store, h.run_id, "skipped")}
    assert "same patron as line 3 " in texts[8]
    assert "same patron as line 7 " in texts[9]
    assert "already taken by the record on line 2 of this file" in texts[10]
    assert patron(store, district_id="N5")["barcode"] == "NB5" and patron(store, district_id="N9") is None
    conn = store.connect()
    ranges = conn.execute("SELECT row_key FROM change_journal WHERE run_id = ? AND op = 'insert_range'",
                          (h.run_id,)).fetchall()
    conn.close()
    assert [r[0] for r in ranges] == [f"{a}..{b}" for a, b in ((2, 4), (5, 6))]   # id 1 is the Unknown Patron


def test_incremental_names_a_bad_byte_among_unchanged_lines_and_keeps_the_rest(store, engine, tmp_path):
    """Unchanged lines are dropped before they are decoded; a changed line with a byte the
    encoding cannot read is still skipped naming its line, and the changed lines around it
    (same block, same chunk) are updated; an identical line twice: the second is a duplicate."""
    rows = [f"N{i},NB{i},Last{i},First{i},HS,,," for i in range(40)]
    csv_path, props = write(tmp_path, rows)
    assert run(engine, csv_path, props).status.value == "succeeded"
    changed = list(rows)
    changed[5] = "N5,NB5,Last5,Fifi,HS,,,"
    changed[20] = "N20,NB20,Caf\udcff,First20,HS,,,"       # an invalid UTF-8 byte (0xFF)
    changed[30] = "N30,NB30,Last30,Thirty,HS,,,"
    changed.append(rows[10])                                 # line 42: line 12 again
    path2 = tmp_path / "in2.csv"
    path2.write_bytes((HEADER + "".join(r + "\n" for r in changed)).encode("utf-8", "surrogateescape"))
    h = run(engine, path2, props, mode="incremental")
    assert h.status.value == "succeeded", h.error
    assert (h.summary["read"], h.summary["unchanged"], h.summary["updated"], h.summary["skipped"]) == (41, 37, 2, 2)
    skipped = {m["line"]: m["text"] for m in messages(store, h.run_id, "skipped")}
    assert sorted(skipped) == [22, 42]
    assert "byte" in skipped[22] and "same patron" in skipped[42]
    assert patron(store, district_id="N5")["first_name"] == "Fifi"
    assert patron(store, district_id="N30")["first_name"] == "Thirty"
    assert patron(store, district_id="N20")["last_name"] == "Last20"
