"""Undo (services/undo.py): undoing each kind of run puts the database back as it was before the
run, compared as full table dumps; undoing the undo redoes the run; rows a later run changed
again are listed as conflicts and are skipped or overwritten as asked; runs that cannot be
undone are refused with a sentence.

The dumps hold every table except the bookkeeping ones (`BOOKKEEPING`): `runs` and
`run_messages` are the history of what ran (an undo adds its own run and messages, on
purpose), `change_journal` grows with every write (an undo journals itself so it can be undone)
and `job_leases` is a job's lock, taken and released around a run outside the changeset writer.
Everything else, reference tables, settings, operators, patrons and all their dependants,
catalog, query sets, import conflicts and queue-fill requests, must come back exactly, ids
included.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from patron_tui.runs import RunEngine
from patron_tui.services import batch
from patron_tui.services import utilities as U
from patron_tui.services.imports.conflicts import CONFLICT_KIND, resolve_conflict, resolve_title
from patron_tui.services.imports.engine import run_import
from patron_tui.services.inactivation import DeleteInactive, InactivationRules, apply_rules
from patron_tui.services.queue_fill import start_filler
from patron_tui.services.undo import UndoRefused, plan_undo, start_undo, undone_by
from patron_tui.services.utilities import Selections
from patron_tui.store import ChangesetWriter, Store, changeset, runlog
from patron_tui.services.utilities.base import set_rows

from tests import batch_helpers
from tests.conftest import district
from tests.jobs_helpers import props_text, write_import

BOOKKEEPING = {"runs", "run_messages", "change_journal", "job_leases"}
NOW = "2024-01-01T00:00:00Z"


def dump(store: Store) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(store.path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: sorted((tuple(r) for r in conn.execute(f'SELECT * FROM "{t}"')), key=repr)
                for t in tables if t not in BOOKKEEPING}
    finally:
        conn.close()


def diff(a: dict, b: dict) -> dict:
    """Tables that differ, with the rows only in one side (for a readable failure)."""
    out = {}
    for t in sorted(set(a) | set(b)):
        x, y = set(a.get(t, [])), set(b.get(t, []))
        if x != y:
            out[t] = {"only_before": sorted(x - y, key=repr)[:5], "only_after": sorted(y - x, key=repr)[:5]}
    return out


@pytest.fixture
def engine_for():
    engines = []

    def make(store: Store) -> RunEngine:
        eng = RunEngine(store, pool_size=2)
        engines.append(eng)
        return eng

    yield make
    for eng in engines:
        eng.shutdown()


def undo(engine: RunEngine, store: Store, run_id: int, on_conflict: str = "skip"):
    handle = start_undo(engine, store, store.operator, run_id, on_conflict=on_conflict)
    handle.wait()
    assert handle.status.value == "succeeded", handle.error
    return handle


def plan(store: Store, run_id: int):
    conn = store.connect()
    try:
        return plan_undo(conn, run_id)
    finally:
        conn.close()


def in_run(engine: RunEngine, title: str, body, kind: str = "test"):
    """A run of our own whose one transaction is `body(writer)`."""
    def fn(ctx):
        with ctx.writer() as w:
            body(w)
        return {}
    handle = engine.execute(kind, title, fn)
    assert handle.status.value == "succeeded", handle.error
    return handle


def ids(store: Store) -> dict[str, int]:
    conn = store.connect()
    try:
        return {r[0]: r[1] for r in conn.execute("SELECT barcode, id FROM patrons WHERE barcode IS NOT NULL")}
    finally:
        conn.close()


def insert(store: Store, table: str, rows: list[dict]) -> list:
    conn = store.connect()
    try:
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            return [w.insert(table, r) for r in rows]
    finally:
        conn.close()


def round_trip(engine: RunEngine, store: Store, run_id: int, before: dict, after: dict) -> None:
    """Undo `run_id` -> `before`; undo the undo -> `after`; undo the run again -> `before`."""
    u = undo(engine, store, run_id)
    assert diff(dump(store), before) == {}
    u2 = undo(engine, store, u.run_id)
    assert diff(dump(store), after) == {}
    u3 = undo(engine, store, run_id)
    assert diff(dump(store), before) == {}
    conn = store.connect()
    try:
        assert undone_by(conn, run_id) == u3.run_id and undone_by(conn, u.run_id) == u2.run_id
    finally:
        conn.close()


# -- a district with every kind of dependant ------------------------------------------------------

def rich_district(path: Path) -> Store:
    """Patrons R1..R4 (Transferred / Inactive long ago) with notes, holds, profiles (subjects,
    service queue, a done queue-fill request), charges, history, reviews, checkouts and query-set
    memberships; KEEP (Active) stays."""
    store = district(path, [
        {"barcode": b, "district_id": "D" + b, "site": "HS", "last_name": "Last" + b, "first_name": "Pat",
         "status": "Inactive", "inactive_since": "2020-01-01T00:00:00Z", "username": "u" + b,
         "picture": bytes([0, 1, 2, 255]), "created_at": "2019-01-01T00:00:00Z"}
        for b in ("R1", "R2", "R3", "R4")] + [
        {"barcode": "KEEP", "site": "HS", "last_name": "Stays", "status": "Active", "username": "ukeep",
         "created_at": "2019-01-01T00:00:00Z", "last_seen_import_at": "2019-01-01T00:00:00Z"}])
    p = ids(store)
    t1, t2 = insert(store, "titles", [{"code": "T1", "title": "Dune"}, {"code": "T2", "title": "Emma"}])
    insert(store, "title_media", [{"title_id": t1, "medium": "DB"}, {"title_id": t2, "medium": "DB"}])
    for b in ("R1", "R2", "R3", "R4"):
        pid = p[b]
        insert(store, "notes", [{"patron_id": pid, "note_type": "General", "text": "note " + b, "created_at": NOW},
                                {"patron_id": pid, "note_type": "Alert", "text": "alert " + b, "created_at": NOW}])
        insert(store, "holds", [{"patron_id": pid, "kind": "hold", "title": "Dune", "placed_at": NOW}])
        prof, = insert(store, "patron_profiles", [{"patron_id": pid, "medium": "DB", "max_items_out": 4}])
        insert(store, "profile_subjects", [{"profile_id": prof, "subject": "MYS"}, {"profile_id": prof, "subject": "BIO"}])
        insert(store, "service_queue", [{"profile_id": prof, "title_id": t1, "position": 1, "added_at": NOW}])
        insert(store, "queue_fill_requests", [{"profile_id": prof, "requested_at": NOW, "done_at": NOW, "added": 1}])
        insert(store, "charges", [{"patron_id": pid, "kind": "other", "amount_cents": 500, "balance_cents": 0,
                                   "transaction_date": "2023-01-01"}])
        insert(store, "patron_history", [{"patron_id": pid, "kind": "payment", "occurred_at": NOW, "amount_cents": 500}])
        insert(store, "reviews", [{"patron_id": pid, "title": "Dune", "rating": 4, "text": "good", "created_at": NOW}])
    insert(store, "checkouts", [{"patron_id": p["R2"], "item_barcode": "I1", "title": "Dune", "checked_out_at": NOW,
                                 "due_at": "2024-01-15"}])
    insert(store, "charges", [{"patron_id": p["R2"], "kind": "overdue", "amount_cents": 300, "balance_cents": 300,
                               "transaction_date": "2023-06-01"}])
    qs, = insert(store, "query_sets", [{"name": "all", "statement": "", "created_by": "tester",
                                        "created_at": NOW, "updated_at": NOW, "frozen_at": NOW}])
    insert(store, "query_set_members", [{"set_id": qs, "patron_id": p[b]} for b in ("R1", "R2", "KEEP")])
    return store


def test_undo_of_inactivation_and_deletion_rules_brings_patrons_back_whole(tmp_path, engine_for):
    store = rich_district(tmp_path / "d.db")
    engine = engine_for(store)
    before = dump(store)
    rules = InactivationRules(inactivate_days=30, preface_username=True, set_homeroom_undefined=True,
                              delete_inactive=DeleteInactive(days=10, condition="regardless"))
    h = in_run(engine, "Job rules", lambda w: apply_rules(w, rules, dt.date(2025, 1, 1), allow_outstanding=True),
               kind="job")
    after = dump(store)
    assert {r[1] for r in after["patrons"]} == {None, "KEEP"}           # R1..R4 deleted
    assert after["notes"] == [] and after["service_queue"] == [] and after["checkouts"] == []
    keep = next(r for r in after["patrons"] if r[1] == "KEEP")
    assert "Inactive" in keep and "Inactive-ukeep" in keep              # inactivated
    p = plan(store, h.run_id)
    assert p.conflicts == [] and p.reinsert["patrons"] == 4 and p.restore["patrons"] == 1
    assert p.reinsert["notes"] == 8 and p.restore["reviews"] == 4
    round_trip(engine, store, h.run_id, before, after)


def test_undo_of_a_remove_patrons_utility_run(tmp_path, engine_for):
    store = rich_district(tmp_path / "d.db")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update_many("patrons", [(i, {"status": "Transferred"}) for b, i in ids(store).items() if b != "KEEP"])
    conn.close()
    engine = engine_for(store)
    before = dump(store)
    h = U.start_utility(engine, store, "tester", "remove-patrons", Selections(statuses=["Transferred"]),
                        {"remove_with_outstanding": True}, fingerprint=None)
    h.wait()
    assert h.status.value == "succeeded", h.error
    after = dump(store)
    assert {r[1] for r in after["patrons"]} == {None, "KEEP"}
    assert after["charges"] == [] and after["notes"] == []
    unknown = next(r[0] for r in after["patrons"] if r[1] is None)
    assert {r[1] for r in after["reviews"]} == {unknown}                 # reviews passed to the Unknown Patron
    round_trip(engine, store, h.run_id, before, after)


def test_undo_of_a_field_utility_run(tmp_path, engine_for):
    store = rich_district(tmp_path / "d.db")
    engine = engine_for(store)
    before = dump(store)
    h = U.start_utility(engine, store, "tester", "change-patron-status", Selections(statuses=["Inactive"]),
                        {"new_status": "Restricted"}, fingerprint=None)
    h.wait()
    assert h.status.value == "succeeded", h.error
    after = dump(store)
    assert after != before
    round_trip(engine, store, h.run_id, before, after)


def test_undo_of_an_add_notes_utility_run(tmp_path, engine_for):
    store = rich_district(tmp_path / "d.db")
    engine = engine_for(store)
    before = dump(store)
    h = U.start_utility(engine, store, "tester", "add-patron-notes", Selections(statuses=["Inactive"]),
                        {"note": "Call home", "note_type": "Alert", "replace_existing": True}, fingerprint=None)
    h.wait()
    assert h.status.value == "succeeded", h.error
    after = dump(store)
    assert sorted(r[3] for r in after["notes"]) == ["Call home"] * 4 + [f"note R{i}" for i in range(1, 5)]
    round_trip(engine, store, h.run_id, before, after)


# -- imports and conflict resolution --------------------------------------------------------------


def import_file(engine: RunEngine, tmp_path: Path, rows: list[str], name: str = "in.csv", mode: str = "full"):
    csv_path, props = write_import(tmp_path, rows, name=name, email="Email")
    h = engine.execute("import", f"Import {name}", lambda ctx: run_import(
        ctx, path=csv_path, properties_path=props, mode=mode))
    assert h.status.value == "succeeded", h.error
    return h


@pytest.fixture
def ann_bob(tmp_path: Path) -> Store:
    return district(tmp_path / "d.db", [
        {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS",
         "email": "ann@old.example"},
        {"district_id": "D2", "barcode": "B2", "last_name": "Baker", "first_name": "Bob", "site": "ELM"},
        {"district_id": "D9", "barcode": "B9", "last_name": "Nine", "first_name": "Nia", "site": "ELM",
         "last_seen_import_at": "2020-01-01T00:00:00Z"},
    ])


IMPORT_ROWS = [
    "D1,B1,Able,Ann,HS,ann@new.example",     # update
    "D2,B2,Baker,Bob,ELM,",                  # unchanged: only the "last seen" stamp
    "D9,B9,Nine,Nia,ELM,",                   # unchanged, stamped from another old value
    "D3,B3,Carter,Cleo,HS,cleo@example",     # add
    "D4,B4,Dunn,Di,ELM,",                    # add
    "D5,B2,Evans,Eve,HS,",                   # barcode conflict with Bob: kept in import_conflicts
]


def test_undo_of_an_import_adds_updates_stamps_and_conflicts(ann_bob, tmp_path, engine_for):
    engine = engine_for(ann_bob)
    before = dump(ann_bob)
    h = import_file(engine, tmp_path, IMPORT_ROWS)
    after = dump(ann_bob)
    assert len(after["patrons"]) == len(before["patrons"]) + 2 and len(after["import_conflicts"]) == 1
    p = plan(ann_bob, h.run_id)
    assert p.delete["patrons"] == 2 and p.delete["import_conflicts"] == 1
    assert p.restore["patrons"] >= 3 and p.conflicts == []
    round_trip(engine, ann_bob, h.run_id, before, after)


def test_undo_of_a_conflict_resolution(ann_bob, tmp_path, engine_for):
    engine = engine_for(ann_bob)
    import_file(engine, tmp_path, IMPORT_ROWS)
    conn = ann_bob.connect()
    cid = conn.execute("SELECT id FROM import_conflicts").fetchone()[0]
    conn.close()
    before = dump(ann_bob)
    h = engine.execute(CONFLICT_KIND, resolve_title(cid, "move"), lambda ctx: resolve_conflict(ctx, cid, "move"))
    assert h.status.value == "succeeded", h.error
    after = dump(ann_bob)
    eve = [r for r in after["patrons"] if "Evans" in r]
    assert len(eve) == 1 and eve[0][1] == "B2"          # the barcode moved from Bob to Eve
    round_trip(engine, ann_bob, h.run_id, before, after)


# -- batch update, queue filler ----------------------------------------------------------------------

def test_undo_of_a_batch_update_and_of_the_queue_filler(tmp_path, engine_for):
    store = batch_helpers.build(tmp_path / "d.db")
    batch_helpers.add_catalog(store)
    engine = engine_for(store)
    before = dump(store)
    h = batch_helpers.run_batch(store, batch.BatchUpdate(
        medium="DB", max_items_out=7, status_of_service="Active", add_subjects=["SCI"], fill_service_queues=True),
        engine=engine)
    assert h.status.value == "succeeded", h.error
    after = dump(store)
    assert after["queue_fill_requests"] and after != before
    filler = start_filler(engine, store, store.operator)
    filler.wait()
    assert filler.status.value == "succeeded", filler.error
    filled = dump(store)
    assert filled["service_queue"]
    # the filler first, then the batch: newest first, each back to what it found
    undo(engine, store, filler.run_id)
    assert diff(dump(store), after) == {}
    round_trip(engine, store, h.run_id, before, after)


# -- the journal's other shapes: scopes, rowid ranges, BLOBs ------------------------------------------

def test_undo_of_scoped_and_rowid_range_writes(ann_bob, engine_for):
    engine = engine_for(ann_bob)
    qs, = insert(ann_bob, "query_sets", [{"name": "s", "statement": "", "created_by": "tester",
                                          "created_at": NOW, "updated_at": NOW}])
    old, = insert(ann_bob, "query_sets", [{"name": "old", "statement": "", "created_by": "tester",
                                           "created_at": NOW, "updated_at": NOW}])
    insert(ann_bob, "query_set_members", [{"set_id": old, "patron_id": i} for i in (2, 3)])
    t, = insert(ann_bob, "titles", [{"code": "T1", "title": "Dune"}])
    before = dump(ann_bob)

    def body(w):
        w.insert_select("query_set_members", ["set_id", "patron_id"],
                        "SELECT ?, id FROM patrons WHERE is_system = 0", (qs,), scope={"set_id": qs})
        w.delete_where("query_set_members", {"set_id": old})
        w.insert_many("title_media", [{"title_id": t, "medium": m} for m in ("DB", "LP", "BR")], journal="range")
        w.insert_many("titles", [{"code": f"X{i}", "title": f"X {i}"} for i in range(3)], journal="range")
        w.update("patrons", 2, {"picture": b"\x00\xff\x10"})
        w.stamp("patrons", "last_seen_import_at", "2024-05-05T00:00:00Z", [2, 3, 4])

    h = in_run(engine, "Shapes", body)
    after = dump(ann_bob)
    assert after != before
    round_trip(engine, ann_bob, h.run_id, before, after)


# -- conflicts ----------------------------------------------------------------------------------------

def _email_run(engine, store, pid, email, title):
    return in_run(engine, title, lambda w: w.update("patrons", pid, {"email": email}))


def test_a_later_change_is_a_conflict_skip_leaves_it_overwrite_puts_it_back(ann_bob, tmp_path, engine_for):
    engine = engine_for(ann_bob)
    p = ids(ann_bob)
    a = in_run(engine, "First", lambda w: w.update_many("patrons", [
        (p["B1"], {"email": "a@first"}), (p["B2"], {"email": "b@first"})]))
    later = _email_run(engine, ann_bob, p["B1"], "a@later", "Later")
    pl = plan(ann_bob, a.run_id)
    assert len(pl.conflicts) == 1
    c = pl.conflicts[0]
    assert (c.table, c.key, c.reason) == ("patrons", str(p["B1"]), "changed_later")
    assert c.fields == [("email", "a@first", "a@later")]
    assert (c.later_run_id, c.later_run_title) == (later.run_id, "Later")
    assert (c.patron_id, c.barcode, c.name) == (p["B1"], "B1", "Able, Ann")
    assert "changed again by run" in c.describe()

    u = undo(engine, ann_bob, a.run_id, "skip")
    conn = ann_bob.connect()
    email = dict(conn.execute("SELECT barcode, email FROM patrons WHERE barcode IN ('B1', 'B2')").fetchall())
    assert email == {"B1": "a@later", "B2": ""}          # B1 left as the later run made it
    skipped = runlog.messages(conn, u.run_id, ["skipped"])
    assert len(skipped) == 1 and skipped[0]["barcode"] == "B1"
    conn.close()

    undo(engine, ann_bob, u.run_id)                       # redo, then overwrite
    undo(engine, ann_bob, a.run_id, "overwrite")
    conn = ann_bob.connect()
    email = dict(conn.execute("SELECT barcode, email FROM patrons WHERE barcode IN ('B1', 'B2')").fetchall())
    assert email == {"B1": "ann@old.example", "B2": ""}
    conn.close()


def test_a_later_stamp_on_another_column_is_no_conflict(ann_bob, engine_for):
    engine = engine_for(ann_bob)
    p = ids(ann_bob)
    a = _email_run(engine, ann_bob, p["B1"], "x@y", "Email")
    in_run(engine, "Stamp", lambda w: w.stamp("patrons", "last_seen_import_at", "2025-01-01", list(p.values())))
    assert plan(ann_bob, a.run_id).conflicts == []
    later = in_run(engine, "Stamp email", lambda w: w.stamp("patrons", "email", "z@z", [p["B1"], p["B2"]]))
    pl = plan(ann_bob, a.run_id)
    assert [(c.key, c.later_run_id, c.fields) for c in pl.conflicts] == [(str(p["B1"]), later.run_id,
                                                                          [("email", "x@y", "z@z")])]


def test_an_added_patron_with_later_dependants(ann_bob, engine_for):
    engine = engine_for(ann_bob)
    now = NOW
    holder = {}
    a = in_run(engine, "Add", lambda w: holder.setdefault("pid", w.insert("patrons", {
        "barcode": "NEW", "site": "HS", "last_name": "New", "created_at": now, "updated_at": now})))
    pid = holder["pid"]
    later = in_run(engine, "Note", lambda w: w.insert("notes", {
        "patron_id": pid, "note_type": "General", "text": "later", "created_at": now}))
    pl = plan(ann_bob, a.run_id)
    assert [(c.table, c.key, c.reason, c.later_run_id) for c in pl.conflicts] == [
        ("patrons", str(pid), "dependants", later.run_id)]
    undo(engine, ann_bob, a.run_id, "skip")
    conn = ann_bob.connect()
    assert conn.execute("SELECT count(*) FROM patrons WHERE id = ?", (pid,)).fetchone()[0] == 1
    conn.close()


def test_overwrite_deletes_later_dependants_through_the_writer(ann_bob, engine_for):
    engine = engine_for(ann_bob)
    holder = {}
    a = in_run(engine, "Add", lambda w: holder.setdefault("pid", w.insert("patrons", {
        "barcode": "NEW", "site": "HS", "last_name": "New", "created_at": NOW, "updated_at": NOW})))
    pid = holder["pid"]
    in_run(engine, "Note", lambda w: w.insert("notes", {
        "patron_id": pid, "note_type": "General", "text": "later", "created_at": NOW}))
    with_note = dump(ann_bob)
    u = undo(engine, ann_bob, a.run_id, "overwrite")
    conn = ann_bob.connect()
    assert conn.execute("SELECT count(*) FROM patrons WHERE id = ?", (pid,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
    assert conn.execute("SELECT op FROM change_journal WHERE run_id = ? AND table_name = 'notes'",
                        (u.run_id,)).fetchone()[0] == "delete"
    conn.close()
    undo(engine, ann_bob, u.run_id)                       # the undo of that undo brings both back
    assert diff(dump(ann_bob), with_note) == {}


def test_a_deleted_patrons_id_taken_again(ann_bob, engine_for):
    engine = engine_for(ann_bob)
    p = ids(ann_bob)
    top = max(p.values())
    a = in_run(engine, "Delete", lambda w: w.delete("patrons", top))
    later = in_run(engine, "Add", lambda w: w.insert("patrons", {
        "barcode": "TAKER", "site": "HS", "last_name": "Taker", "created_at": NOW, "updated_at": NOW}))
    pl = plan(ann_bob, a.run_id)
    assert [(c.key, c.reason, c.later_run_id) for c in pl.conflicts] == [(str(top), "key_taken", later.run_id)]
    assert ("barcode", None, "TAKER") in pl.conflicts[0].fields
    undo(engine, ann_bob, a.run_id, "skip")
    assert ids(ann_bob)["TAKER"] == top
    conn = ann_bob.connect()
    conn.execute("DELETE FROM runs WHERE kind = 'undo'")   # forget that undo: try the other choice
    conn.close()
    undo(engine, ann_bob, a.run_id, "overwrite")
    assert ids(ann_bob)["B9"] == top and "TAKER" not in ids(ann_bob)


def test_a_refused_row_is_skipped_or_fails_the_whole_undo(ann_bob, engine_for):
    engine = engine_for(ann_bob)
    p = ids(ann_bob)
    a = in_run(engine, "Delete", lambda w: w.delete("patrons", p["B1"]))
    # a later run gives B1's barcode to another patron: putting B1 back breaks the unique barcode
    in_run(engine, "Take barcode", lambda w: w.update("patrons", p["B2"], {"barcode": "B1"}))
    before = dump(ann_bob)
    h = start_undo(engine, ann_bob, "tester", a.run_id, on_conflict="overwrite")
    h.wait()
    assert h.status.value == "failed" and "nothing was changed" in h.error
    assert diff(dump(ann_bob), before) == {}
    h = undo(engine, ann_bob, a.run_id, "skip")
    assert h.summary["refused"] == 1 and diff(dump(ann_bob), before) == {}


# -- refusals ----------------------------------------------------------------------------------------------

def test_refusals(ann_bob, tmp_path, engine_for):
    engine = engine_for(ann_bob)
    conn = ann_bob.connect()
    queued = runlog.create_run(conn, kind="import", title="Queued", operator="tester")
    assert "still queued" in plan_undo(conn, queued).refusal
    assert plan_undo(conn, 999).refusal == "There is no run 999."
    conn.close()

    empty = engine.execute("test", "Nothing", lambda ctx: {})
    assert "wrote nothing" in plan(ann_bob, empty.run_id).refusal

    csv_path = tmp_path / "dry.csv"
    csv_path.write_text("ID,Barcode,Last,First,School,Email\nD7,B7,Seven,S,HS,\n", encoding="utf-8")
    (tmp_path / "dry.properties").write_text(props_text(email="Email"), encoding="utf-8")
    dry = engine.execute("import", "Dry", lambda ctx: run_import(
        ctx, path=csv_path, properties_path=tmp_path / "dry.properties", mode="full", dry_run=True),
        params={"dry_run": True})
    assert "dry run" in plan(ann_bob, dry.run_id).refusal

    a = _email_run(engine, ann_bob, ids(ann_bob)["B1"], "q@q", "Email")
    u = undo(engine, ann_bob, a.run_id)
    refusal = plan(ann_bob, a.run_id).refusal
    assert f"already undone by run {u.run_id}" in refusal
    with pytest.raises(UndoRefused, match="already undone"):
        start_undo(engine, ann_bob, "tester", a.run_id)
    conn = ann_bob.connect()
    far = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=401)
    assert "more than 400 days ago" in plan_undo(conn, u.run_id, now=far).refusal
    conn.close()


# -- a job run: its import and its inactivation / deletion rules, one run -----------------------------

def test_undo_of_a_job_run_with_its_rules(tmp_path, engine_for):
    from tests import test_job_inactivation as J

    store, csv_path = J.setup(tmp_path, J.RULES)
    assert J.run(store, csv_path, J.rows()).summary["added"] == 60
    J.backdate(store)
    before = dump(store)
    h = J.run(store, csv_path, J.rows(leave=("HS1", "HS2", "ELM3")))
    assert h.status.value == "succeeded", h.error
    assert h.summary["inactivation"]["inactivated"] == 3
    after = dump(store)
    round_trip(engine_for(store), store, h.run_id, before, after)


# -- the writer journals what SQLite would cascade ------------------------------------------------------

def test_a_cascading_delete_is_journalled_and_comes_back(tmp_path, engine_for):
    store = rich_district(tmp_path / "d.db")
    engine = engine_for(store)
    conn = store.connect()
    profiles = [r[0] for r in conn.execute("SELECT id FROM patron_profiles")]
    conn.close()
    before = dump(store)
    # only the profiles: their subjects, service queue and queue-fill requests are SQLite's
    # ON DELETE CASCADE, done (and journalled) by the writer first
    h = in_run(engine, "Drop profiles", lambda w: w.delete_many("patron_profiles", profiles))
    conn = store.connect()
    journalled = {r[0]: r[1] for r in conn.execute(
        "SELECT table_name, count(*) FROM change_journal WHERE run_id = ? GROUP BY table_name", (h.run_id,))}
    conn.close()
    assert journalled == {"patron_profiles": 4, "profile_subjects": 8, "service_queue": 4, "queue_fill_requests": 4}
    after = dump(store)
    assert after["queue_fill_requests"] == [] and after["profile_subjects"] == []
    round_trip(engine, store, h.run_id, before, after)


# -- a big set-based update, journalled column-wise ------------------------------------------------------

@pytest.fixture
def columnar(monkeypatch):
    """update_where journals column-wise from 2 changed rows on, 3 rows per journal row (slices)."""
    monkeypatch.setattr(changeset, "COLUMNAR_MIN", 2)
    monkeypatch.setattr(changeset, "COLUMNAR_SLICE", 3)


def _columnar_entries(store: Store, run_id: int, table: str = "patron_profiles") -> list[dict]:
    conn = store.connect()
    try:
        return [{"key": json.loads(r[0]), "before": changeset.decode_image(r[1]),
                 "after": changeset.decode_image(r[2])} for r in conn.execute(
            "SELECT row_key, before, after FROM change_journal WHERE run_id = ? AND table_name = ?"
            " AND op = 'update' AND row_key LIKE '{\"$keys\"%' ORDER BY id", (run_id, table))]
    finally:
        conn.close()


def _profile_ids(store: Store) -> dict[str, int]:
    conn = store.connect()
    try:
        return {b: p["id"] for b, p in batch_helpers.profiles(conn).items()}
    finally:
        conn.close()


def test_undo_of_a_big_batch_update_via_the_columnar_journal(tmp_path, engine_for, columnar):
    store = batch_helpers.build(tmp_path / "d.db")
    engine = engine_for(store)
    before = dump(store)
    spacing = batch.Spacing(start=dt.date(2026, 1, 5), every_days=7, group_size=3, order_by="last_name")
    h = batch_helpers.run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=7, status_of_service="Active",
                                                         spacing=spacing), engine=engine)
    assert h.status.value == "succeeded", h.error
    after = dump(store)
    entries = _columnar_entries(store, h.run_id)
    # 8 DB profiles changed: slices of 3, 3 and 2, each with the old values column-wise and the
    # new ones: one value for all (max, status) and the spaced dates row by row
    assert [e["key"]["$n"] for e in entries] == [3, 3, 2]
    assert sum(len(e["before"]["$rows"]["id"]) for e in entries) == h.summary["profiles_updated"] == 8
    assert all(e["after"]["max_items_out"] == 7 and len(e["after"]["$rows"]["next_service_date"]) == e["key"]["$n"]
               for e in entries)
    p = plan(store, h.run_id)
    assert p.restore == {"patron_profiles": 8} and p.conflicts == []
    u = undo(engine, store, h.run_id)
    assert diff(dump(store), before) == {}
    # the undo is a big set-based write too (one per set of columns put back): journalled
    # column-wise where a set holds enough rows, so it can be undone in turn
    conn = store.connect()
    per_row = conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ? AND op = 'update'"
                           " AND row_key NOT LIKE '{%'",
                           (u.run_id,)).fetchone()[0]
    conn.close()
    assert _columnar_entries(store, u.run_id)
    assert sum(e["key"]["$n"] for e in _columnar_entries(store, u.run_id)) + per_row == 8
    undo(engine, store, u.run_id)
    assert diff(dump(store), after) == {}
    undo(engine, store, h.run_id)
    assert diff(dump(store), before) == {}


def test_a_later_change_of_a_columnar_update_is_a_conflict(tmp_path, engine_for, columnar):
    store = batch_helpers.build(tmp_path / "d.db")
    engine = engine_for(store)
    prof = _profile_ids(store)
    h = batch_helpers.run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=7, status_of_service="Active"),
                                engine=engine)
    assert h.status.value == "succeeded", h.error
    assert _columnar_entries(store, h.run_id)
    # a later row-by-row change of P01's max, a later columnar change of P02's and P03's status
    # (P03 was Active already: the batch changed only its max, so no conflict) and a later change
    # of a column the batch did not set (P04's queue length: no conflict)
    one = in_run(engine, "One", lambda w: w.update("patron_profiles", prof["P01"], {"max_items_out": 99}))
    two = in_run(engine, "Two", lambda w: set_rows(w, "patron_profiles", [prof["P02"], prof["P03"]],
                                                   {"status_of_service": "On hold"}))
    assert _columnar_entries(store, two.run_id)
    in_run(engine, "Three", lambda w: w.update("patron_profiles", prof["P04"], {"queue_length": 11}))
    p = plan(store, h.run_id)
    found = {c.key: (c.reason, c.later_run_id, c.fields, c.barcode) for c in p.conflicts}
    assert found == {
        str(prof["P01"]): ("changed_later", one.run_id, [("max_items_out", 7, 99)], "P01"),
        str(prof["P02"]): ("changed_later", two.run_id, [("status_of_service", "Active", "On hold")], "P02"),
    }
    u = undo(engine, store, h.run_id, "skip")
    conn = store.connect()
    now = batch_helpers.profiles(conn)
    conn.close()
    assert now["P01"]["max_items_out"] == 99 and now["P01"]["status_of_service"] == "Active"   # left whole
    assert (now["P02"]["max_items_out"], now["P02"]["status_of_service"]) == (7, "On hold")   # left whole
    assert (now["P03"]["max_items_out"], now["P03"]["status_of_service"]) == (2, "On hold")   # max put back
    assert now["P04"]["max_items_out"] == 7 and now["P04"]["status_of_service"] == "On hold"   # put back
    assert now["P04"]["queue_length"] == 11 and now["P05"]["max_items_out"] == 3
    undo(engine, store, u.run_id)                          # redo, then overwrite
    undo(engine, store, h.run_id, "overwrite")
    conn = store.connect()
    now = batch_helpers.profiles(conn)
    conn.close()
    assert (now["P01"]["max_items_out"], now["P01"]["status_of_service"]) == (3, "Active")
    assert [now[b]["status_of_service"] for b in ("P02", "P03")] == ["Suspended", "On hold"]
    assert [now[b]["max_items_out"] for b in ("P02", "P03")] == [5, 2]
    assert now["P04"]["queue_length"] == 11


def test_a_refused_row_of_a_columnar_restore_is_skipped_or_fails_the_whole_undo(ann_bob, engine_for, columnar):
    engine = engine_for(ann_bob)
    p = ids(ann_bob)

    def rename(w):   # barcodes B1, B2, B9 -> N1, N2, N9: one columnar journal row
        w.conn.execute("CREATE TEMP TABLE _k (k INTEGER PRIMARY KEY, b TEXT)")
        w.conn.executemany("INSERT INTO temp._k VALUES (?, ?)", [(p[b], "N" + b[1:]) for b in ("B1", "B2", "B9")])
        assert w.update_where("patrons", {}, keys="_k", values={"barcode": "b"}) == 3
        w.conn.execute("DROP TABLE temp._k")

    a = in_run(engine, "Rename", rename)
    assert len(_columnar_entries(ann_bob, a.run_id, "patrons")) == 1
    # a later run gives B2 to a new patron: putting the old barcodes back breaks the unique barcode
    in_run(engine, "Take B2", lambda w: w.insert("patrons", {"barcode": "B2", "site": "HS", "last_name": "New",
                                                              "created_at": NOW, "updated_at": NOW}))
    before = dump(ann_bob)
    h = start_undo(engine, ann_bob, "tester", a.run_id, on_conflict="overwrite")
    h.wait()
    assert h.status.value == "failed" and "nothing was changed" in h.error
    assert diff(dump(ann_bob), before) == {}
    h = undo(engine, ann_bob, a.run_id, "skip")        # the set-based restore refused: row by row
    assert h.summary["refused"] == 1 and h.summary["restored"] == 2
    conn = ann_bob.connect()
    assert dict(conn.execute("SELECT id, barcode FROM patrons WHERE id IN (?, ?, ?)",
                             (p["B1"], p["B2"], p["B9"])).fetchall()) == {p["B1"]: "B1", p["B2"]: "N2", p["B9"]: "B9"}
    conn.close()
