"""The audit trail and the journal's retention (services/audit.py): a patron's history answers who
changed it, when, in which run, from what to what, including its notes, charges and profiles,
the stamps and bulk loads that cover it, and after it was deleted; filters; pruning old runs'
journals; migration 8 on an existing database."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services.audit import AuditError, history, prune_preview, resolve_patron, start_prune
from patron_tui.services.removal import delete_patrons
from patron_tui.services.undo import plan_undo
from patron_tui.services import batch
from patron_tui.services.utilities.base import set_rows
from patron_tui.store import ChangesetWriter, Store, changeset, runlog
from patron_tui.store.schema import migrate

from tests import batch_helpers
from tests.conftest import district

NOW = "2024-01-01T00:00:00Z"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return district(tmp_path / "d.db", [
        {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS",
         "email": "ann@old"},
        {"district_id": "D2", "barcode": "B2", "last_name": "Baker", "first_name": "Bob", "site": "ELM"},
    ])


@pytest.fixture
def engine(store: Store):
    eng = RunEngine(store, pool_size=1)
    yield eng
    eng.shutdown()


def in_run(engine: RunEngine, title: str, body, kind: str = "test"):
    def fn(ctx):
        with ctx.writer() as w:
            body(w)
        return {}
    h = engine.execute(kind, title, fn)
    assert h.status.value == "succeeded", h.error
    return h


def hist(store: Store, **kw):
    conn = store.connect()
    try:
        return history(conn, **kw)
    finally:
        conn.close()


def pid_of(store: Store, barcode: str) -> int:
    conn = store.connect()
    try:
        return resolve_patron(conn, barcode)
    finally:
        conn.close()


def test_a_patrons_history_with_dependants_stamps_and_field_changes(store, engine):
    p1, p2 = pid_of(store, "B1"), pid_of(store, "D2")
    holder = {}
    edit = in_run(engine, "Edit Ann", lambda w: w.update("patrons", p1, {"email": "ann@new", "grade": "5"}),
                  kind="utility")
    note = in_run(engine, "Add note", lambda w: holder.setdefault("note", w.insert("notes", {
        "patron_id": p1, "note_type": "Alert", "text": "call home", "created_at": NOW})))
    in_run(engine, "Charge Bob", lambda w: w.insert("charges", {
        "patron_id": p2, "kind": "other", "amount_cents": 100, "balance_cents": 100, "transaction_date": "2024-01-01"}))
    stamp = in_run(engine, "Import", lambda w: w.stamp("patrons", "last_seen_import_at", "2024-02-02", [p1, p2]),
                   kind="import")
    entries = hist(store, patron="B1")
    assert [(e.run_id, e.table, e.op) for e in entries[:3]] == [
        (stamp.run_id, "patrons", "update"), (note.run_id, "notes", "insert"), (edit.run_id, "patrons", "update")]
    s, n, e = entries[:3]
    assert [(c.field, c.before, c.after) for c in s.changes] == [("last_seen_import_at", None, "2024-02-02")]
    assert s.key == str(p1) and s.run_title == "Import" and s.run_kind == "import" and s.patron_id == p1
    assert {(c.field, c.after) for c in n.changes} >= {("text", "call home"), ("note_type", "Alert")}
    assert n.key == str(holder["note"]) and n.patron_id == p1
    assert sorted((c.field, c.before, c.after) for c in e.changes) == [
        ("email", "ann@old", "ann@new"), ("grade", "", "5")]
    assert e.operator == "tester" and e.ts and e.run_title == "Edit Ann"
    assert entries[-1].op == "insert" and entries[-1].run_id is None     # created by the fixture
    assert not any(x.table == "charges" for x in entries)                 # Bob's charge is Bob's
    assert [x.table for x in hist(store, patron="D2") if x.run_id is not None] == ["patrons", "charges"]
    js = e.to_json()
    assert js["changes"][0].keys() == {"field", "before", "after"} and js["run_id"] == edit.run_id


def test_a_bulk_load_and_a_deleted_patron(store, engine):
    load = in_run(engine, "Load", lambda w: w.insert_values(
        "patrons", ["barcode", "site", "last_name", "created_at", "updated_at"],
        [("N1", "HS", "New", NOW, NOW), ("N2", "HS", "Newer", NOW, NOW)]), kind="import")
    n2 = pid_of(store, "N2")
    e, = hist(store, patron="N2")
    assert (e.run_id, e.op, e.key) == (load.run_id, "insert", str(n2))
    assert ("last_name", None, "Newer") in [(c.field, c.before, c.after) for c in e.changes]
    in_run(engine, "Note", lambda w: w.insert("notes", {"patron_id": n2, "note_type": "General", "text": "x",
                                                         "created_at": NOW}))
    gone = in_run(engine, "Remove", lambda w: delete_patrons(w, [n2]), kind="utility")
    entries = hist(store, patron="N2")                                     # found through the journal
    assert [(x.run_id, x.table, x.op) for x in entries[:2]] == [(gone.run_id, "patrons", "delete"),
                                                                (gone.run_id, "notes", "delete")]
    assert ("barcode", "N2", None) in [(c.field, c.before, c.after) for c in entries[0].changes]
    with pytest.raises(AuditError, match="No patron has the barcode or district ID 'NOPE'"):
        hist(store, patron="NOPE")


def test_filters_and_paging(store, engine):
    p1 = pid_of(store, "B1")
    a = in_run(engine, "A", lambda w: w.update("patrons", p1, {"email": "a"}))
    b = in_run(engine, "B", lambda w: w.update("patrons", p1, {"email": "b"}))
    assert [e.run_id for e in hist(store, run_id=a.run_id)] == [a.run_id]
    assert [e.run_id for e in hist(store, patron="B1", run_id=b.run_id)] == [b.run_id]
    assert {e.operator for e in hist(store, operator="tester")} == {"tester"}
    assert hist(store, operator="somebody") == []
    assert hist(store, since=dt.date.today() + dt.timedelta(days=1)) == []
    assert {e.run_id for e in hist(store, since=dt.date.today())} >= {a.run_id, b.run_id}
    assert {e.table for e in hist(store, table="notes")} <= {"notes"}
    everything = hist(store, limit=1000)
    assert [e.journal_id for e in hist(store, limit=2, offset=1)] == [e.journal_id for e in everything[1:3]]
    assert everything == sorted(everything, key=lambda e: -e.journal_id)


def _age(store: Store, run_id: int, days: int) -> None:
    when = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE runs SET created_at = ?, started_at = ?, finished_at = ? WHERE id = ?",
                 (when, when, when, run_id))
    conn.commit()
    conn.close()


def test_pruning_old_runs_journals(store, engine):
    p1 = pid_of(store, "B1")
    old = in_run(engine, "Old", lambda w: w.update("patrons", p1, {"email": "old"}))
    new = in_run(engine, "New", lambda w: w.update("patrons", p1, {"email": "new"}))
    _age(store, old.run_id, 401)
    conn = store.connect()
    assert "more than 400 days ago" in plan_undo(conn, old.run_id).refusal
    pv = prune_preview(conn)
    # the old run's row, and the district's seed rows written outside any run are still young
    assert (pv["runs"], pv["rows"], pv["run_ids"]) == (1, 1, [old.run_id])
    conn.close()
    h = start_prune(engine, store, "tester")
    h.wait()
    assert h.status.value == "succeeded", h.error
    assert (h.summary["runs"], h.summary["rows"]) == (1, 1)
    conn = store.connect()
    assert conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ?", (old.run_id,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ?", (new.run_id,)).fetchone()[0] == 1
    run = runlog.get_run(conn, old.run_id)
    assert run is not None and run["summary"]["journal_pruned"]
    refusal = plan_undo(conn, old.run_id).refusal
    assert "its journal was pruned" in refusal and "can no longer be undone" in refusal
    assert plan_undo(conn, new.run_id).refusal is None
    assert prune_preview(conn)["runs"] == 0
    conn.close()


def test_retention_setting_and_migration_8_on_an_existing_database(store):
    conn = store.connect()
    assert conn.execute("SELECT value FROM settings WHERE key = 'journal_retention_days'").fetchone()[0] == "400"
    # an existing database at version 7: no setting, no index
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.delete("settings", "journal_retention_days")
    conn.execute("DROP INDEX change_journal_ranges")
    conn.execute("PRAGMA user_version = 7")
    assert migrate(conn) == [8]
    assert conn.execute("SELECT value FROM settings WHERE key = 'journal_retention_days'").fetchone()[0] == "400"
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM change_journal WHERE table_name = 'patrons'"
        " AND (op = 'insert_range' OR substr(row_key, 1, 1) = '{')"))
    assert "change_journal_ranges" in plan
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "journal_retention_days", {"value": "30"})
    p1 = resolve_patron(conn, "B1")
    conn.close()
    eng = RunEngine(store, pool_size=1)
    try:
        old = in_run(eng, "Month old", lambda w: w.update("patrons", p1, {"email": "x"}))
        _age(store, old.run_id, 31)
        conn = store.connect()
        assert "more than 30 days ago" in plan_undo(conn, old.run_id).refusal
        assert prune_preview(conn)["retention_days"] == 30
        conn.close()
    finally:
        eng.shutdown()


def test_a_patrons_history_shows_a_columnar_batch_update(tmp_path, monkeypatch):
    # update_where journals column-wise from 2 changed rows on, 3 rows per journal row
    monkeypatch.setattr(changeset, "COLUMNAR_MIN", 2)
    monkeypatch.setattr(changeset, "COLUMNAR_SLICE", 3)
    store = batch_helpers.build(tmp_path / "d.db")
    eng = RunEngine(store, pool_size=1)
    try:
        spacing = batch.Spacing(start=dt.date(2026, 1, 5), every_days=7, group_size=3, order_by="barcode")
        h = batch_helpers.run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=7, spacing=spacing),
                                    engine=eng)
        assert h.status.value == "succeeded", h.error
        conn = store.connect()
        prof = {r[0]: r[1] for r in conn.execute(
            "SELECT p.barcode, pp.id FROM patron_profiles pp JOIN patrons p ON p.id = pp.patron_id"
            " WHERE pp.medium = 'DB'")}
        dates = {b: conn.execute("SELECT next_service_date FROM patron_profiles WHERE id = ?", (i,)).fetchone()[0]
                 for b, i in prof.items()}
        assert conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ? AND row_key LIKE '{\"$keys\"%'",
                            (h.run_id,)).fetchone()[0] == 3
        plan = " ".join(r[3] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT j.id FROM change_journal j, json_each(j.before, '$.\"$rows\".id') e"
            " WHERE j.table_name = 'patron_profiles' AND (op = 'insert_range' OR substr(row_key, 1, 1) = '{')"
            " AND e.value = 5"))
        assert "change_journal_ranges" in plan
        conn.close()
        emails = in_run(eng, "Emails", lambda w: set_rows(w, "patrons", [pid_of(store, "P01"), pid_of(store, "P02")],
                                                          {"email": "x@y"}))
        # P01's profile: its own old and new values out of the columnar rows (max 3 -> 7, no date -> a date);
        # its own patron row: the columnar email change
        entries = [e for e in hist(store, patron="P01") if e.run_id in (h.run_id, emails.run_id)]
        assert [(e.run_id, e.table, e.key, e.op) for e in entries] == [
            (emails.run_id, "patrons", str(pid_of(store, "P01")), "update"),
            (h.run_id, "patron_profiles", str(prof["P01"]), "update")]
        assert [(c.field, c.before, c.after) for c in entries[0].changes] == [("email", "", "x@y")]
        assert sorted((c.field, c.before, c.after) for c in entries[1].changes) == [
            ("max_items_out", 3, 7), ("next_service_date", "2026-10-01", dates["P01"])]
        assert entries[1].patron_id == pid_of(store, "P01") and entries[1].run_kind == "batch_update"
        # P06's max was 9 and Nightly Debug on (P01's off already): its entry holds what changed for it
        six = [e for e in hist(store, patron="P06") if e.run_id == h.run_id and e.table == "patron_profiles"]
        assert sorted((c.field, c.before, c.after) for c in six[0].changes) == [
            ("max_items_out", 9, 7), ("next_service_date", "2026-12-24", dates["P06"]), ("nightly_debug", 1, 0)]
        # P10 has no DB profile in the batch (it got one created: an insert, not a columnar update)
        assert [e.op for e in hist(store, patron="P10") if e.run_id == h.run_id and e.table == "patron_profiles"] \
            == ["insert"]
        # outside a patron's history a columnar row is one entry: the one-for-all values
        whole = [e for e in hist(store, run_id=h.run_id) if e.key.startswith("{")]
        assert len(whole) == 3 and all(
            [(c.field, c.after) for c in e.changes] == [("max_items_out", 7), ("nightly_debug", 0)] for e in whole)
    finally:
        eng.shutdown()
