"""Query sets: saved statements, live or frozen, and the writer's scoped bulk writes
that freezing uses (one journal row each, rolled back with the transaction)."""

from __future__ import annotations

import json
import re

import pytest

from patron_tui.services import query_sets as qsets
from patron_tui.services.patrons import count_patrons, page
from patron_tui.services.queries import StatementError
from patron_tui.store import ChangesetWriter, Store
from patron_tui.store.changeset import decode_image

from tests.conftest import add_patrons

# statements over the small_store district (12 patrons P0000..P0011):
HS = "site = HS"  # 8 patrons: i % 3 != 0
GRADE_5 = "grade = 5"  # 1 patron: P0004
BAD = "frobnicate = 1"  # no such field


@pytest.fixture
def conn(small_store: Store):
    c = small_store.connect()
    yield c
    c.close()


def journal(conn, **where) -> list[dict]:
    sql = "SELECT * FROM change_journal"
    if where:
        sql += " WHERE " + " AND ".join(f"{k} = ?" for k in where)
    return [dict(r) for r in conn.execute(sql + " ORDER BY id", list(where.values()))]


def barcodes(conn, where: str, params) -> list[str]:
    return sorted(r["barcode"] for r in page(conn, where=where, params=params, sort="id", limit=10_000))


def move(conn, barcode: str, **changes) -> None:
    pid = conn.execute("SELECT id FROM patrons WHERE barcode = ?", (barcode,)).fetchone()[0]
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("patrons", pid, changes)


# -- saving, naming -----------------------------------------------------------------


def test_save_and_get_a_set(conn):
    qs = qsets.save_set(conn, "alice", "  High school  ", HS)
    assert (qs.name, qs.statement, qs.created_by, qs.frozen, qs.member_count) == (
        "High school", HS, "alice", False, None)
    assert qsets.get_set(conn, "High school") == qs
    assert qsets.get_set(conn, "high SCHOOL") == qs  # names ignore case on lookup
    assert qsets.get_set(conn, qs.id) == qs
    [j] = journal(conn, table_name="query_sets")
    assert (j["op"], j["row_key"], j["operator"]) == ("insert", str(qs.id), "alice")


def test_list_sets_by_name(conn):
    for name in ("beta", "Alpha", "gamma"):
        qsets.save_set(conn, "alice", name, HS)
    assert [qs.name for qs in qsets.list_sets(conn)] == ["Alpha", "beta", "gamma"]


@pytest.mark.parametrize("name, message", [
    ("", "needs a name"),
    ("   ", "needs a name"),
    ("x" * 81, "at most 80"),
    ("bad\x1b[31mname", "control character U+001B"),
    ("rtl\u202eeman", "U+202E"),
])
def test_bad_names_are_refused_clearly(conn, name, message):
    with pytest.raises(qsets.BadSetName, match=re.escape(message)):
        qsets.save_set(conn, "alice", name, HS)
    assert qsets.list_sets(conn) == []


def test_eighty_characters_is_fine(conn):
    assert qsets.save_set(conn, "alice", "é" * 80, HS).name == "é" * 80


def test_duplicate_name_is_refused_unless_replaced(conn):
    first = qsets.save_set(conn, "alice", "Grade 5", GRADE_5)
    with pytest.raises(qsets.QuerySetExists, match="'Grade 5' already exists"):
        qsets.save_set(conn, "bob", "GRADE 5", HS)
    replaced = qsets.save_set(conn, "bob", "Grade 5", HS, replace=True)
    assert (replaced.id, replaced.statement, replaced.created_by) == (first.id, HS, "alice")
    assert len(qsets.list_sets(conn)) == 1
    [j] = journal(conn, table_name="query_sets", op="update")
    assert decode_image(j["before"])["statement"] == GRADE_5 and j["operator"] == "bob"


def test_replacing_with_the_same_statement_writes_nothing(conn):
    qsets.save_set(conn, "alice", "Grade 5", GRADE_5)
    before = journal(conn)
    qsets.save_set(conn, "alice", "Grade 5", GRADE_5, replace=True)
    assert journal(conn) == before


def test_a_bad_statement_is_not_saved(conn):
    with pytest.raises(StatementError) as info:
        qsets.save_set(conn, "alice", "Broken", BAD)
    assert "^" in info.value.caret()
    assert qsets.list_sets(conn) == []
    assert journal(conn, table_name="query_sets") == []


def test_rename(conn):
    a = qsets.save_set(conn, "alice", "A", HS)
    qsets.save_set(conn, "alice", "B", HS)
    with pytest.raises(qsets.QuerySetExists):
        qsets.rename_set(conn, "alice", "A", " b ")
    assert qsets.rename_set(conn, "alice", "A", "a").name == "a"  # a change of case only
    renamed = qsets.rename_set(conn, "alice", a.id, "  Seniors ")
    assert (renamed.id, renamed.name) == (a.id, "Seniors")
    with pytest.raises(qsets.BadSetName):
        qsets.rename_set(conn, "alice", "Seniors", "")
    with pytest.raises(qsets.QuerySetNotFound, match="no query set 'Nope'"):
        qsets.rename_set(conn, "alice", "Nope", "X")


def test_delete_removes_the_set_and_its_members_journalled(conn):
    qs = qsets.save_set(conn, "alice", "HS", HS)
    qsets.freeze_set(conn, "alice", "HS")
    deleted = qsets.delete_set(conn, "alice", "hs")
    assert deleted.id == qs.id and deleted.frozen
    assert qsets.list_sets(conn) == []
    assert conn.execute("SELECT count(*) FROM query_set_members").fetchone()[0] == 0
    [members] = journal(conn, table_name="query_set_members", op="delete")
    assert len(decode_image(members["before"])["$rows"]["patron_id"]) == 8
    [row] = journal(conn, table_name="query_sets", op="delete")
    assert decode_image(row["before"])["statement"] == HS
    with pytest.raises(qsets.QuerySetNotFound):
        qsets.delete_set(conn, "alice", "HS")


# -- live and frozen ----------------------------------------------------------------


def test_a_live_set_follows_the_data(conn):
    qs = qsets.save_set(conn, "alice", "HS", HS)
    where, params = qsets.set_filter(conn, qs)
    assert count_patrons(conn, where=where, params=params) == 8
    move(conn, "P0000", site="HS")
    where, params = qsets.set_filter(conn, qsets.get_set(conn, "HS"))
    assert count_patrons(conn, where=where, params=params) == 9
    assert "P0000" in barcodes(conn, where, params)


def test_a_frozen_set_does_not_drift(conn):
    qsets.save_set(conn, "alice", "HS", HS)
    frozen = qsets.freeze_set(conn, "alice", "HS")
    assert frozen.frozen and frozen.member_count == 8 and frozen.statement == HS
    where, params = qsets.set_filter(conn, frozen)
    assert params == (frozen.id,)
    members = barcodes(conn, where, params)
    move(conn, "P0000", site="HS")  # would join a live set
    move(conn, "P0001", site="ELM")  # would leave it
    again = qsets.get_set(conn, "HS")
    assert barcodes(conn, *qsets.set_filter(conn, again)) == members
    assert "P0001" in members and "P0000" not in members
    # freezing again takes the list anew
    refrozen = qsets.freeze_set(conn, "alice", "HS")
    new = barcodes(conn, *qsets.set_filter(conn, refrozen))
    assert "P0000" in new and "P0001" not in new and refrozen.member_count == 8


def test_freeze_journals_one_row_and_refreeze_one_delete_row(conn):
    qs = qsets.save_set(conn, "alice", "HS", HS)
    qsets.freeze_set(conn, "bob", "HS")
    [ins] = journal(conn, table_name="query_set_members")
    assert (ins["op"], ins["row_key"], ins["operator"], ins["before"], ins["after"]) == (
        "insert_range", json.dumps({"set_id": qs.id}, separators=(",", ":")), "bob", None, None)
    old_ids = sorted(r[0] for r in conn.execute(
        "SELECT patron_id FROM query_set_members WHERE set_id = ?", (qs.id,)))
    qsets.freeze_set(conn, "bob", "HS")
    entries = journal(conn, table_name="query_set_members")
    assert [e["op"] for e in entries] == ["insert_range", "delete", "insert_range"]
    image = decode_image(entries[1]["before"])
    assert image == {"$where": {"set_id": qs.id}, "$rows": {"patron_id": old_ids}}
    [update, *_] = journal(conn, table_name="query_sets", op="update")
    assert decode_image(update["before"])["frozen_at"] is None


def test_unfreeze_makes_the_set_live_again(conn):
    qsets.save_set(conn, "alice", "HS", HS)
    qsets.freeze_set(conn, "alice", "HS")
    move(conn, "P0000", site="HS")
    live = qsets.unfreeze_set(conn, "alice", "HS")
    assert not live.frozen and live.member_count is None
    assert conn.execute("SELECT count(*) FROM query_set_members").fetchone()[0] == 0
    assert count_patrons(conn, where=(f := qsets.set_filter(conn, live))[0], params=f[1]) == 9


def test_replacing_a_frozen_sets_statement_makes_it_live(conn):
    qsets.save_set(conn, "alice", "S", HS)
    qsets.freeze_set(conn, "alice", "S")
    qs = qsets.save_set(conn, "alice", "S", GRADE_5, replace=True)
    assert not qs.frozen and qs.statement == GRADE_5
    assert conn.execute("SELECT count(*) FROM query_set_members").fetchone()[0] == 0


def test_freeze_never_takes_system_patrons(conn):
    qsets.save_set(conn, "alice", "Everyone", "")
    qs = qsets.freeze_set(conn, "alice", "Everyone")
    assert qs.member_count == 12
    system = conn.execute("SELECT id FROM patrons WHERE is_system = 1").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM query_set_members WHERE patron_id = ?",
                        (system,)).fetchone()[0] == 0


def test_a_failed_freeze_leaves_the_old_list(conn, monkeypatch):
    qsets.save_set(conn, "alice", "HS", HS)
    before = qsets.freeze_set(conn, "alice", "HS")
    ids = conn.execute("SELECT patron_id FROM query_set_members ORDER BY patron_id").fetchall()
    move(conn, "P0000", site="HS")
    count = len(journal(conn))

    def boom(self, *a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ChangesetWriter, "update", boom)  # after the members were rewritten
    with pytest.raises(RuntimeError):
        qsets.freeze_set(conn, "alice", "HS")
    monkeypatch.undo()
    assert conn.execute("SELECT patron_id FROM query_set_members ORDER BY patron_id").fetchall() == ids
    assert qsets.get_set(conn, "HS") == before
    assert len(journal(conn)) == count


# -- selections -----------------------------------------------------------------------


def test_resolve_a_statement(conn):
    sel = qsets.resolve(conn, statement=HS)
    assert (sel.statement, sel.count, sel.frozen, sel.set_name) == (HS, 8, False, None)
    assert count_patrons(conn, where=sel.where, params=sel.params) == 8
    assert HS in sel.describe() and "8 patrons" in sel.describe()


def test_resolve_a_set_shows_its_statement(conn):
    qsets.save_set(conn, "alice", "HS", HS)
    live = qsets.resolve(conn, set_name="hs")
    assert (live.set_name, live.statement, live.count, live.frozen) == ("HS", HS, 8, False)
    qsets.freeze_set(conn, "alice", "HS")
    move(conn, "P0000", site="HS")
    frozen = qsets.resolve(conn, set_name="HS")
    assert (frozen.count, frozen.frozen) == (8, True) and frozen.frozen_at
    assert "'HS' (frozen" in frozen.describe() and HS in frozen.describe()


def test_resolve_needs_exactly_one_source(conn):
    with pytest.raises(ValueError):
        qsets.resolve(conn)
    with pytest.raises(ValueError):
        qsets.resolve(conn, set_name="x", statement=HS)
    with pytest.raises(qsets.QuerySetNotFound):
        qsets.resolve(conn, set_name="nope")
    with pytest.raises(StatementError):
        qsets.resolve(conn, statement=BAD)


def test_freezing_a_demo_district(tmp_path):
    from patron_tui.services.demo import build_demo

    path = tmp_path / "demo.db"
    build_demo(path, patrons=300, seed=3)
    conn = Store(path).connect()
    try:
        qsets.save_set(conn, "alice", "All", "")
        qs = qsets.freeze_set(conn, "alice", "All")
        assert qs.member_count == count_patrons(conn) > 250
        [j] = journal(conn, table_name="query_set_members")
        assert j["op"] == "insert_range"
    finally:
        conn.close()


# -- the writer's scoped bulk writes ----------------------------------------------------


@pytest.fixture
def set_id(conn) -> int:
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        return w.insert("query_sets", {"name": "S", "statement": "", "created_by": "tester",
                                       "created_at": "t", "updated_at": "t"})


def _fill(w: ChangesetWriter, set_id: int) -> int:
    return w.insert_select("query_set_members", ("set_id", "patron_id"),
                           "SELECT ?, id FROM patrons WHERE is_system = 0", (set_id,),
                           scope={"set_id": set_id})


def members(conn, set_id) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT patron_id FROM query_set_members WHERE set_id = ? ORDER BY patron_id", (set_id,))]


def test_insert_select_journals_one_insert_range_row(conn, set_id):
    with ChangesetWriter(conn, operator="alice", run_id=None) as w:
        assert _fill(w, set_id) == 12
        assert w.counts["insert"] == 12
    [j] = journal(conn, table_name="query_set_members")
    assert (j["op"], j["row_key"], j["before"], j["after"]) == (
        "insert_range", f'{{"set_id":{set_id}}}', None, None)
    assert len(members(conn, set_id)) == 12


def test_insert_select_rolls_back_with_the_transaction(conn, set_id):
    with pytest.raises(RuntimeError):
        with ChangesetWriter(conn, operator="alice", run_id=None) as w:
            _fill(w, set_id)
            raise RuntimeError("later failure")
    assert members(conn, set_id) == [] and journal(conn, table_name="query_set_members") == []


def test_insert_select_refuses_a_scope_that_holds_rows(conn, set_id):
    with ChangesetWriter(conn, operator="alice", run_id=None) as w:
        _fill(w, set_id)
    with pytest.raises(ValueError, match="already holds rows"):
        with ChangesetWriter(conn, operator="alice", run_id=None) as w:
            _fill(w, set_id)
    assert len(journal(conn, table_name="query_set_members")) == 1


def test_insert_select_refuses_rows_outside_its_scope(conn, set_id):
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        other = w.insert("query_sets", {"name": "T", "statement": "", "created_by": "tester",
                                        "created_at": "t", "updated_at": "t"})
    with pytest.raises(ValueError, match="outside scope"):
        with ChangesetWriter(conn, operator="alice", run_id=None) as w:
            w.insert_select("query_set_members", ("set_id", "patron_id"),
                            "SELECT ?, id FROM patrons", (other,), scope={"set_id": set_id})
    assert members(conn, other) == [] and journal(conn, table_name="query_set_members") == []


def test_insert_select_failing_midway_leaves_nothing(conn, set_id):
    with pytest.raises(Exception):  # the same patron twice: primary key violation
        with ChangesetWriter(conn, operator="alice", run_id=None) as w:
            w.insert_select("query_set_members", ("set_id", "patron_id"),
                            "SELECT ?, 1 FROM patrons", (set_id,), scope={"set_id": set_id})
    assert members(conn, set_id) == [] and journal(conn, table_name="query_set_members") == []


def test_delete_where_keeps_a_columnar_before_image_that_rebuilds_the_rows(conn, set_id):
    with ChangesetWriter(conn, operator="alice", run_id=None) as w:
        _fill(w, set_id)
    old = members(conn, set_id)
    with ChangesetWriter(conn, operator="alice", run_id=None) as w:
        assert w.delete_where("query_set_members", {"set_id": set_id}) == 12
        assert w.counts["delete"] == 12
    [j] = journal(conn, table_name="query_set_members", op="delete")
    assert j["row_key"] == f'{{"set_id":{set_id}}}' and j["after"] is None
    image = decode_image(j["before"])
    assert members(conn, set_id) == []
    # undo: the scope plus the i-th value of every list
    rows = [{**image["$where"], **dict(zip(image["$rows"], values))}
            for values in zip(*image["$rows"].values())]
    assert sorted(r["patron_id"] for r in rows) == old
    assert all(r["set_id"] == set_id for r in rows)


def test_delete_where_on_an_empty_scope_journals_nothing(conn, set_id):
    with ChangesetWriter(conn, operator="alice", run_id=None) as w:
        assert w.delete_where("query_set_members", {"set_id": set_id}) == 0
    assert journal(conn, table_name="query_set_members") == []


def test_delete_where_rolls_back_with_the_transaction(conn, set_id):
    with ChangesetWriter(conn, operator="alice", run_id=None) as w:
        _fill(w, set_id)
    with pytest.raises(RuntimeError):
        with ChangesetWriter(conn, operator="alice", run_id=None) as w:
            w.delete_where("query_set_members", {"set_id": set_id})
            raise RuntimeError("later failure")
    assert len(members(conn, set_id)) == 12
    assert [j["op"] for j in journal(conn, table_name="query_set_members")] == ["insert_range"]


def test_scoped_writes_check_their_arguments(conn, set_id):
    with ChangesetWriter(conn, operator="alice", run_id=None) as w:
        with pytest.raises(ValueError):
            w.delete_where("query_set_members", {})
        with pytest.raises(KeyError):
            w.delete_where("query_set_members", {"nope": 1})
        with pytest.raises(ValueError):
            w.delete_where("query_set_members", {"set_id": set_id, "patron_id": 1})
        with pytest.raises(KeyError):
            w.insert_select("query_set_members", ("set_id", "nope"), "SELECT 1, 2", (),
                            scope={"set_id": set_id})


def test_delete_where_images_blobs(tmp_path):
    store = Store.create(tmp_path / "d.db", operator="tester")
    add_patrons(store, [{"barcode": "B1", "site": "UNION", "picture": b"\x00\xff"},
                        {"barcode": "B2", "site": "UNION"}])
    conn = store.connect()
    try:
        with ChangesetWriter(conn, operator="alice", run_id=None) as w:
            assert w.delete_where("patrons", {"site": "UNION", "is_system": 0}) == 2
        [j] = journal(conn, table_name="patrons", op="delete")
        image = decode_image(j["before"])
        assert image["$where"] == {"is_system": 0, "site": "UNION"}
        pictures = dict(zip(image["$rows"]["barcode"], image["$rows"]["picture"]))
        assert pictures == {"B1": b"\x00\xff", "B2": None}
    finally:
        conn.close()


def test_a_big_frozen_list_filters_the_same_way(conn, monkeypatch):
    qsets.save_set(conn, "alice", "HS", HS)
    qs = qsets.freeze_set(conn, "alice", "HS")
    small = qsets.set_filter(conn, qs)
    monkeypatch.setattr(qsets, "SMALL_LIST", 2)  # 8 members: the EXISTS form
    big = qsets.set_filter(conn, qs)
    assert small[0] != big[0] and "EXISTS" in big[0] and small[1] == big[1] == (qs.id,)
    assert barcodes(conn, *small) == barcodes(conn, *big)
    assert count_patrons(conn, where=big[0], params=big[1]) == 8
