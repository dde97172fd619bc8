"""Import conflicts (services/imports/conflicts.py) and their CLI twins, on real SQLite stores:
conflicts made by a real import, resolved by real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patron_tui.cli import main
from patron_tui.runs import RunEngine
from patron_tui.services.imports.conflicts import (
    CONFLICT_KIND,
    list_conflicts,
    resolve_conflict,
    resolve_title,
)
from patron_tui.services.imports.engine import run_import
from patron_tui.store import ChangesetWriter, Store

from tests.conftest import allow_login, district, patron_where
from tests.jobs_helpers import write_import



@pytest.fixture
def store(tmp_path: Path) -> Store:
    return district(tmp_path / "district.db", [
        {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS", "grade": "9"},
        {"district_id": "D2", "barcode": "B2", "last_name": "Baker", "first_name": "Bob", "site": "HS", "grade": "3"},
        {"district_id": "D5", "barcode": "B5", "last_name": "Fifth", "first_name": "Fay", "site": "HS", "grade": "5"},
    ], sites=(("HS", "High School"),))


@pytest.fixture
def engine(store: Store):
    eng = RunEngine(store, pool_size=2)
    yield eng
    eng.shutdown()


def do_import(engine: RunEngine, tmp_path: Path, rows: list[str]) -> int:
    csv_path, props = write_import(tmp_path, rows, grade="Grade")
    h = engine.execute("import", "Import", lambda ctx: run_import(ctx, path=csv_path, properties_path=props))
    assert h.status.value == "succeeded", h.error
    return h.run_id


def resolve(engine: RunEngine, conflict_id: int, action: str, value: str | None = None):
    return engine.execute(CONFLICT_KIND, resolve_title(conflict_id, action),
                          lambda ctx: resolve_conflict(ctx, conflict_id, action, value))


patron = patron_where


def conflicts(store: Store, run_id: int, status: str | None = None):
    conn = store.connect()
    try:
        return list_conflicts(conn, run_id, status)
    finally:
        conn.close()


def journal(store: Store, run_id: int) -> list[dict]:
    conn = store.connect()
    try:
        return [dict(r) for r in conn.execute(
            "SELECT table_name, row_key, op, before, after, operator FROM change_journal WHERE run_id = ? ORDER BY id",
            (run_id,))]
    finally:
        conn.close()


def patron_count(store: Store) -> int:
    conn = store.connect()
    try:
        return conn.execute("SELECT count(*) FROM patrons").fetchone()[0]
    finally:
        conn.close()


# a stored patron (D2) and a new one (D9) both claim Ann's barcode B1
ROWS = ["D2,B1,Baker,Bob,HS,4", "D9,B1,Newman,Nia,HS,2"]


def test_list_carries_both_patrons(store, engine, tmp_path):
    run_id = do_import(engine, tmp_path, ROWS)
    found = conflicts(store, run_id)
    assert [(c.line, c.field, c.value, c.status) for c in found] == [(2, "barcode", "B1", "open"),
                                                                       (3, "barcode", "B1", "open")]
    existing, new = found
    ann = patron(store, district_id="D1")
    assert existing.holder["id"] == ann["id"] and existing.original_holder["id"] == ann["id"]
    assert existing.target["district_id"] == "D2" and existing.incoming["grade"] == "4"
    assert new.target is None and new.incoming["last_name"] == "Newman"
    assert new.incoming_patron()["barcode"] == "B1"
    assert conflicts(store, run_id, "kept") == []


def test_keep_changes_no_patron(store, engine, tmp_path):
    run_id = do_import(engine, tmp_path, ROWS)
    before = [patron(store, district_id=d) for d in ("D1", "D2")]
    c = conflicts(store, run_id)[0]
    h = resolve(engine, c.id, "keep")
    assert h.status.value == "succeeded", h.error
    assert [patron(store, district_id=d) for d in ("D1", "D2")] == before
    (done,) = conflicts(store, run_id, "kept")
    assert (done.id, done.resolved_by, done.resolution_run_id) == (c.id, "tester", h.run_id)
    assert done.resolved_at
    rows = journal(store, h.run_id)
    assert [(r["table_name"], r["op"]) for r in rows] == [("import_conflicts", "update")]


def test_move_to_a_new_patron_flags_the_holder(store, engine, tmp_path):
    run_id = do_import(engine, tmp_path, ROWS)
    ann_id = patron(store, district_id="D1")["id"]
    c = conflicts(store, run_id)[1]  # Newman, a new patron
    h = resolve(engine, c.id, "move")
    assert h.status.value == "succeeded", h.error
    ann = patron(store, district_id="D1")
    assert ann["barcode"] is None
    assert ann["flagged"] == f"barcode B1 moved to Newman, Nia by import conflict {c.id}"
    nia = patron(store, district_id="D9")
    assert (nia["barcode"], nia["last_name"], nia["grade"], nia["site"]) == ("B1", "Newman", "2", "HS")
    assert nia["import_fingerprint"] == c.fingerprint and nia["last_seen_import_at"]
    assert h.summary["patron_id"] == nia["id"] and h.summary["moved_from"] == ann_id
    rows = journal(store, h.run_id)
    assert {(r["table_name"], r["row_key"], r["op"]) for r in rows} == {
        ("patrons", str(ann_id), "update"), ("patrons", str(nia["id"]), "insert"),
        ("import_conflicts", str(c.id), "update")}
    assert all(r["operator"] == "tester" for r in rows)
    # the other conflict on B1 now finds its value with Nia
    other = conflicts(store, run_id, "open")[0]
    assert other.holder["id"] == nia["id"] and other.original_holder["id"] == ann_id


def test_move_onto_the_matched_patron(store, engine, tmp_path):
    run_id = do_import(engine, tmp_path, ROWS)
    c = conflicts(store, run_id)[0]  # Bob D2 wants B1
    count = patron_count(store)
    h = resolve(engine, c.id, "move")
    assert h.status.value == "succeeded", h.error
    bob = patron(store, district_id="D2")
    assert (bob["barcode"], bob["grade"]) == ("B1", "4")
    assert patron(store, district_id="D1")["barcode"] is None
    assert patron_count(store) == count


def test_move_when_nobody_holds_the_value_any_more(store, engine, tmp_path):
    run_id = do_import(engine, tmp_path, ROWS)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("patrons", patron(store, district_id="D1")["id"], {"barcode": "B1X"})
    conn.close()
    c = conflicts(store, run_id)[1]
    assert c.holder is None and not c.still_held
    h = resolve(engine, c.id, "move")
    assert h.status.value == "succeeded", h.error
    assert patron(store, district_id="D9")["barcode"] == "B1"
    assert patron(store, district_id="D1")["flagged"] is None


def test_edit_applies_with_the_new_value(store, engine, tmp_path):
    run_id = do_import(engine, tmp_path, ROWS)
    c = conflicts(store, run_id)[1]
    h = resolve(engine, c.id, "edit", " B9 ")
    assert h.status.value == "succeeded", h.error
    assert patron(store, district_id="D9")["barcode"] == "B9"
    assert patron(store, district_id="D1")["barcode"] == "B1"
    (done,) = conflicts(store, run_id, "edited")
    assert done.new_value == "B9" and done.resolution_run_id == h.run_id


def test_edit_refuses_a_taken_or_blank_value(store, engine, tmp_path):
    run_id = do_import(engine, tmp_path, ROWS)
    c = conflicts(store, run_id)[1]
    count = patron_count(store)
    h = resolve(engine, c.id, "edit", "B5")
    assert h.status.value == "failed"
    assert "barcode B5 already belongs to Fifth, Fay" in h.error
    h = resolve(engine, c.id, "edit", "  ")
    assert h.status.value == "failed" and "blank" in h.error
    assert patron_count(store) == count
    assert conflicts(store, run_id)[1].status == "open"
    assert journal(store, h.run_id) == []


def test_resolving_twice_is_refused(store, engine, tmp_path):
    run_id = do_import(engine, tmp_path, ROWS)
    c = conflicts(store, run_id)[1]
    assert resolve(engine, c.id, "keep").status.value == "succeeded"
    h = resolve(engine, c.id, "move")
    assert h.status.value == "failed" and "already resolved (kept by tester" in h.error
    assert patron(store, district_id="D1")["barcode"] == "B1"
    assert patron(store, district_id="D9") is None
    h = resolve(engine, 999, "keep")
    assert h.status.value == "failed" and "no import conflict 999" in h.error


def test_cli_conflicts_and_resolve(store, engine, tmp_path, capsys):
    run_id = do_import(engine, tmp_path, ROWS)
    allow_login(store)   # the CLI acts as the login: resolving needs "manage patrons"
    db = str(store.path)
    assert main(["conflicts", str(run_id), "--db", db]) == 0
    out = capsys.readouterr().out
    assert "barcode B1" in out and "held by Able, Ann" in out and "Newman, Nia -> a new patron" in out
    assert main(["conflicts", str(run_id), "--db", db, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["status"] for c in listed] == ["open", "open"]
    first, second = listed
    assert main(["resolve", str(second["id"]), "edit", "--value", "B5", "--db", db]) == 2
    assert "already belongs to Fifth, Fay" in capsys.readouterr().err
    assert main(["resolve", str(second["id"]), "move", "--db", db, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "succeeded" and result["resolution"]["status"] == "moved"
    assert result["resolution"]["patron_id"] == patron(store, district_id="D9")["id"]
    assert patron(store, district_id="D1")["flagged"].startswith("barcode B1 moved to Newman, Nia")
    assert main(["resolve", str(first["id"]), "keep", "--db", db]) == 0
    assert "kept" in capsys.readouterr().out
    assert main(["conflicts", str(run_id), "--db", db]) == 0
    assert "no open import conflicts" in capsys.readouterr().out
    assert main(["conflicts", str(run_id), "--all", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "[moved]" in out and "[kept]" in out
    with pytest.raises(SystemExit):
        main(["resolve", str(first["id"]), "edit", "--db", db])
