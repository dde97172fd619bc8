"""The changeset writer: every write is journalled with who, which run, and the
row's images; a failure leaves neither a partial write nor a journal row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from patron_tui.store import ChangesetWriter, Store, runlog, utc_now
from patron_tui.store.changeset import WriterClosed, decode_image, inserted_image

PICTURE = bytes(range(256)) + b"\x00\xff\x00"  # every byte value, NULs included


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "district.db", operator="tester")


@pytest.fixture
def conn(store: Store):
    c = store.connect()
    yield c
    c.close()


@pytest.fixture
def run_id(conn) -> int:
    return runlog.create_run(conn, kind="test", title="Test run", operator="tester")


def patron(barcode: str, **extra) -> dict:
    now = utc_now()
    return {"barcode": barcode, "district_id": f"D-{barcode}", "site": "UNION", "last_name": "Lee",
            "first_name": barcode, "grade": "5", "created_at": now, "updated_at": now, **extra}


def journal(conn, **where) -> list[dict]:
    sql = "SELECT * FROM change_journal"
    if where:
        sql += " WHERE " + " AND ".join(f"{k} = ?" for k in where)
    return [dict(r) for r in conn.execute(sql + " ORDER BY id", list(where.values()))]


def dump(conn) -> dict[str, list[tuple]]:
    """Every row of every table, to prove a failed transaction changed nothing."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    return {t: sorted((tuple(r) for r in conn.execute(f'SELECT * FROM "{t}"')), key=repr) for t in tables}


def writer(conn, run_id=None, operator="alice") -> ChangesetWriter:
    return ChangesetWriter(conn, operator=operator, run_id=run_id)


# -- small writes ----------------------------------------------------------------


def test_insert_journals_operator_run_table_key_and_after_image(conn, run_id):
    row = patron("B1", picture=PICTURE)
    with writer(conn, run_id) as w:
        pid = w.insert("patrons", row)
    [j] = journal(conn, table_name="patrons", op="insert", row_key=str(pid))
    assert (j["operator"], j["run_id"], j["before"], j["after"]) == ("alice", run_id, None, None)
    # the inserted image is the row itself while nothing changed it
    after = inserted_image(conn, "patrons", str(pid), j["id"])
    assert {k: after[k] for k in row} == row and after["id"] == pid
    assert isinstance(after["picture"], bytes) and after["picture"] == PICTURE
    stored = conn.execute("SELECT picture, barcode FROM patrons WHERE id=?", (pid,)).fetchone()
    assert (stored["picture"], stored["barcode"]) == (PICTURE, "B1")


def test_insert_with_composite_key_journals_the_key_as_a_list(conn):
    with writer(conn) as w:
        tid = w.insert("titles", {"code": "T1", "title": "Moby Dick"})
        w.insert("title_media", {"title_id": tid, "medium": "DB"})
    [j] = journal(conn, table_name="title_media")
    assert j["row_key"] == f'[{tid},"DB"]' and j["run_id"] is None
    assert inserted_image(conn, "title_media", j["row_key"], j["id"]) == {"title_id": tid, "medium": "DB"}


def test_update_journals_old_and_new_values_of_changed_columns(conn, run_id):
    with writer(conn) as w:
        pid = w.insert("patrons", patron("B1", picture=PICTURE))
    full_before = dict(conn.execute("SELECT * FROM patrons WHERE id=?", (pid,)).fetchone())
    with writer(conn, run_id, operator="bob") as w:
        returned = w.update("patrons", pid, {"grade": "6", "last_name": "Lee", "picture": b"\x01\x02"})
    assert returned == full_before
    [j] = journal(conn, op="update")
    assert (j["operator"], j["run_id"], j["table_name"], j["row_key"]) == ("bob", run_id, "patrons", str(pid))
    before = decode_image(j["before"])
    assert before == {"grade": "5", "picture": PICTURE}  # last_name did not change
    assert decode_image(j["after"]) == {"grade": "6", "picture": b"\x01\x02"}
    now = conn.execute("SELECT grade, picture FROM patrons WHERE id=?", (pid,)).fetchone()
    assert (now["grade"], now["picture"]) == ("6", b"\x01\x02")


def test_noop_update_writes_no_journal_row(conn):
    with writer(conn) as w:
        pid = w.insert("patrons", patron("B1", picture=PICTURE))
    before = dump(conn)
    with writer(conn) as w:
        assert w.update("patrons", pid, {"grade": "5", "barcode": "B1", "picture": PICTURE}) is not None
        assert w.counts["update"] == 0
    assert dump(conn) == before


def test_update_and_delete_of_a_missing_row_write_nothing(conn):
    before = dump(conn)
    with writer(conn) as w:
        assert w.update("patrons", 424242, {"grade": "1"}) is None
        assert w.delete("patrons", 424242) is None
    assert dump(conn) == before


def test_delete_journals_before_image_with_blob(conn, run_id):
    with writer(conn) as w:
        pid = w.insert("patrons", patron("B1", picture=PICTURE))
    full_before = dict(conn.execute("SELECT * FROM patrons WHERE id=?", (pid,)).fetchone())
    with writer(conn, run_id) as w:
        assert w.delete("patrons", pid) == full_before
    [j] = journal(conn, op="delete")
    assert (j["operator"], j["run_id"], j["row_key"], j["after"]) == ("alice", run_id, str(pid), None)
    assert decode_image(j["before"]) == full_before
    assert conn.execute("SELECT count(*) FROM patrons WHERE id=?", (pid,)).fetchone()[0] == 0


# -- bulk writes -------------------------------------------------------------------


def test_insert_many_full_journal_has_one_row_per_insert(conn, run_id):
    rows = [patron(f"B{i}") for i in range(7)]
    with writer(conn, run_id) as w:
        assert w.insert_many("patrons", rows) == 7
    stored = {r["barcode"]: r["id"] for r in conn.execute("SELECT id, barcode FROM patrons WHERE barcode LIKE 'B%'")}
    js = journal(conn, table_name="patrons", run_id=run_id)
    assert len(js) == 7 and all(j["op"] == "insert" and j["operator"] == "alice" for j in js)
    for j, row in zip(js, rows):
        pid = stored[row["barcode"]]
        assert j["row_key"] == str(pid)
        assert j["after"] is None
        after = inserted_image(conn, "patrons", j["row_key"], j["id"])
        assert after == dict(conn.execute("SELECT * FROM patrons WHERE id=?", (pid,)).fetchone())
        assert {k: after[k] for k in row} == row


def test_insert_many_range_journal_is_one_insert_range_row(conn, run_id):
    with writer(conn, run_id) as w:
        assert w.insert_many("patrons", (patron(f"B{i}") for i in range(10)), journal="range") == 10
    ids = [r[0] for r in conn.execute("SELECT id FROM patrons WHERE barcode LIKE 'B%' ORDER BY id")]
    [j] = journal(conn, table_name="patrons", run_id=run_id)
    assert (j["op"], j["row_key"], j["before"], j["after"]) == ("insert_range", f"{ids[0]}..{ids[-1]}", None, None)
    assert ids == list(range(ids[0], ids[0] + 10))


def test_update_many_journals_changed_rows_only(conn, run_id):
    with writer(conn) as w:
        ids = [w.insert("patrons", patron(f"B{i}")) for i in range(4)]
    befores = {i: dict(conn.execute("SELECT * FROM patrons WHERE id=?", (i,)).fetchone()) for i in ids}
    items = [(ids[0], {"grade": "9"}), (ids[1], {"grade": "5"}),  # no-op
             (ids[2], {"grade": "9", "status": "Inactive"}), (999_999, {"grade": "1"})]  # missing
    with writer(conn, run_id) as w:
        assert w.update_many("patrons", items) == 2
    js = journal(conn, op="update")
    assert [j["row_key"] for j in js] == [str(ids[0]), str(ids[2])]
    assert decode_image(js[0]["before"]) == {"grade": befores[ids[0]]["grade"]}
    assert decode_image(js[0]["after"]) == {"grade": "9"}
    assert decode_image(js[1]["before"]) == {"grade": "5", "status": "Active"}
    assert decode_image(js[1]["after"]) == {"grade": "9", "status": "Inactive"}
    grades = dict(conn.execute("SELECT id, grade FROM patrons WHERE id IN (?,?,?,?)", ids).fetchall())
    assert grades == {ids[0]: "9", ids[1]: "5", ids[2]: "9", ids[3]: "5"}


def test_delete_many_journals_each_before_image(conn, run_id):
    with writer(conn) as w:
        ids = [w.insert("patrons", patron(f"B{i}", picture=bytes([i]))) for i in range(3)]
    befores = {i: dict(conn.execute("SELECT * FROM patrons WHERE id=?", (i,)).fetchone()) for i in ids}
    with writer(conn, run_id) as w:
        assert w.delete_many("patrons", [ids[0], 888_888, ids[2]]) == 2
    js = journal(conn, op="delete")
    assert [j["row_key"] for j in js] == [str(ids[0]), str(ids[2])]
    assert [decode_image(j["before"]) for j in js] == [befores[ids[0]], befores[ids[2]]]
    left = [r[0] for r in conn.execute("SELECT id FROM patrons WHERE barcode LIKE 'B%'")]
    assert left == [ids[1]]


# -- failures leave nothing behind -------------------------------------------------------


def test_exception_inside_the_writer_leaves_no_write_and_no_journal_row(conn, run_id):
    with writer(conn) as w:
        keep = w.insert("patrons", patron("KEEP"))
    before = dump(conn)
    with pytest.raises(RuntimeError, match="half way"):
        with writer(conn, run_id) as w:
            w.insert("patrons", patron("NEW1"))
            w.insert_many("notes", [{"patron_id": keep, "note_type": "General", "text": f"n{i}",
                                     "created_at": utc_now()} for i in range(20)])
            w.update("patrons", keep, {"grade": "12"})
            w.delete("patrons", keep)
            raise RuntimeError("half way")
    assert not conn.in_transaction
    assert dump(conn) == before


def test_duplicate_barcode_inside_insert_many_rolls_back_everything(conn):
    with writer(conn) as w:
        w.insert("patrons", patron("DUP"))
    before = dump(conn)
    # more rows than one executemany batch, so earlier batches were already written
    rows = [patron(f"N{i}") for i in range(6_000)]
    rows.insert(5_500, patron("DUP", district_id="other"))
    with pytest.raises(sqlite3.IntegrityError):
        with writer(conn) as w:
            w.insert("sites", {"code": "HS", "name": "High School"})
            w.insert_many("patrons", rows)
    assert not conn.in_transaction
    assert dump(conn) == before


def test_interrupted_write_reports_the_real_error_and_keeps_nothing(conn):
    """SQLite rolls back by itself on an interrupt; the writer must not hide that error."""
    before = dump(conn)
    rows = [{"patron_id": 1, "note_type": "General", "text": "x", "created_at": utc_now()}] * 20_000
    calls = []

    def interrupt_after_a_while() -> int:  # lands inside the INSERTs, past the first reads
        calls.append(1)
        return int(len(calls) > 2_000)

    conn.set_progress_handler(interrupt_after_a_while, 5)
    try:
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            with writer(conn) as w:
                w.insert_many("notes", rows)
    finally:
        conn.set_progress_handler(None, 0)
    assert len(calls) > 2_000
    assert not conn.in_transaction
    assert dump(conn) == before
    with writer(conn) as w:  # the connection is still usable
        w.insert("sites", {"code": "HS", "name": "High School"})
    assert conn.execute("SELECT count(*) FROM sites WHERE code='HS'").fetchone()[0] == 1


def test_writes_outside_the_transaction_raise_writer_closed(conn):
    w = writer(conn)
    before = dump(conn)
    calls = [
        lambda: w.insert("sites", {"code": "X", "name": "X"}),
        lambda: w.update("sites", 1, {"name": "Y"}),
        lambda: w.delete("sites", 1),
        lambda: w.insert_many("sites", [{"code": "X", "name": "X"}]),
        lambda: w.update_many("sites", [(1, {"name": "Y"})]),
        lambda: w.delete_many("sites", [1]),
    ]
    for call in calls:  # before the `with`
        with pytest.raises(WriterClosed):
            call()
    with w:
        w.insert("sites", {"code": "IN", "name": "Inside"})
    for call in calls:  # after it
        with pytest.raises(WriterClosed):
            call()
    after = dump(conn)
    assert [r for r in after["sites"] if r not in before["sites"]] == [
        r for r in after["sites"] if r[1] == "IN"]
    assert len(after["change_journal"]) == len(before["change_journal"]) + 1


def test_writer_needs_an_operator(conn):
    with pytest.raises(ValueError):
        ChangesetWriter(conn, operator="", run_id=None)


def test_insert_many_range_journal_on_composite_key_uses_rowids(conn, run_id):
    with writer(conn) as w:
        tid = w.insert("titles", {"code": "T1", "title": "A title"})
    with writer(conn, run_id) as w:
        rows = ({"title_id": tid, "medium": m} for m in ("DB", "BR", "LP"))
        assert w.insert_many("title_media", rows, journal="range") == 3
    [j] = journal(conn, table_name="title_media", run_id=run_id)
    rowids = [r[0] for r in conn.execute("SELECT rowid FROM title_media ORDER BY rowid")]
    assert (j["op"], j["row_key"]) == ("insert_range", f"rowid {rowids[0]}..{rowids[-1]}")


def test_bulk_paths_journal_blobs_byte_for_byte(conn, run_id):
    rows = [patron(f"X{i}", picture=PICTURE + bytes([i])) for i in range(3)]
    with writer(conn, run_id) as w:
        w.insert_many("patrons", rows)
    ids = [r[0] for r in conn.execute("SELECT id FROM patrons WHERE barcode LIKE 'X%' ORDER BY id")]
    with writer(conn, run_id) as w:
        assert w.update_many("patrons", [(pid, {"picture": b"new"}) for pid in ids]) == 3
    with writer(conn, run_id) as w:
        assert w.delete_many("patrons", ids) == 3
    js = journal(conn, table_name="patrons", run_id=run_id)
    inserts = [inserted_image(conn, "patrons", j["row_key"], j["id"]) for j in js if j["op"] == "insert"]
    updates = [(decode_image(j["before"]), decode_image(j["after"])) for j in js if j["op"] == "update"]
    deletes = [decode_image(j["before"]) for j in js if j["op"] == "delete"]
    assert [a["picture"] for a in inserts] == [PICTURE + bytes([i]) for i in range(3)]
    assert [b for b, _ in updates] == [{"picture": PICTURE + bytes([i])} for i in range(3)]
    assert [a for _, a in updates] == [{"picture": b"new"}] * 3
    assert [d["picture"] for d in deletes] == [b"new"] * 3


def test_update_many_last_change_of_a_key_wins_and_noops_are_skipped(conn, run_id):
    with writer(conn) as w:
        pid = w.insert("patrons", patron("K1", grade="3"))
        other = w.insert("patrons", patron("K2", grade="4"))
    with writer(conn, run_id) as w:
        changed = w.update_many("patrons", [(pid, {"grade": "5"}), (pid, {"grade": "6"}), (other, {"grade": "4"})])
    assert changed == 1
    assert conn.execute("SELECT grade FROM patrons WHERE id=?", (pid,)).fetchone()[0] == "6"
    [j] = journal(conn, table_name="patrons", run_id=run_id)
    assert decode_image(j["before"])["grade"] == "3" and decode_image(j["after"]) == {"grade": "6"}


def test_inserted_image_survives_later_updates_and_delete(conn, run_id):
    row = patron("H1", grade="3", picture=PICTURE)
    with writer(conn, run_id) as w:
        pid = w.insert("patrons", row)
    [ins] = journal(conn, op="insert", table_name="patrons", row_key=str(pid))
    with writer(conn) as w:
        w.update("patrons", pid, {"grade": "4"})
        w.update("patrons", pid, {"grade": "5", "last_name": "Kim"})
    image = inserted_image(conn, "patrons", str(pid), ins["id"])
    assert (image["grade"], image["last_name"], image["picture"]) == ("3", "Lee", PICTURE)
    with writer(conn) as w:
        w.delete("patrons", pid)
    image = inserted_image(conn, "patrons", str(pid), ins["id"])
    assert {k: image[k] for k in row} == row


def test_stamp_journals_runs_of_keys_per_old_value_and_skips_rows_already_stamped(conn, run_id):
    import json

    rows = [patron(f"S{i}") for i in range(10)]
    with writer(conn) as w:
        w.insert_many("patrons", rows)
    ids = [r[0] for r in conn.execute("SELECT id FROM patrons WHERE barcode LIKE 'S%' ORDER BY id")]
    with writer(conn) as w:   # two old values: ids[0..4] seen on day 1, the rest never
        w.update_many("patrons", [(pid, {"last_seen_import_at": "day 1"}) for pid in ids[:5]])
    with writer(conn) as w:
        w.update("patrons", ids[9], {"last_seen_import_at": "day 2"})   # already holds the new value
    stamped = [pid for pid in ids if pid not in (ids[2],)]   # a gap: ids[2] is not stamped
    with writer(conn, run_id) as w:
        assert w.stamp("patrons", "last_seen_import_at", "day 2", stamped) == 8
    seen = dict(conn.execute("SELECT id, last_seen_import_at FROM patrons WHERE barcode LIKE 'S%'").fetchall())
    assert seen[ids[2]] == "day 1" and all(seen[p] == "day 2" for p in stamped)
    js = journal(conn, table_name="patrons", run_id=run_id)
    assert {j["op"] for j in js} == {"update"} and len(js) == 2   # one row per old value
    by_old = {json.loads(j["before"])["last_seen_import_at"]: json.loads(j["row_key"])["id"] for j in js}
    assert by_old == {"day 1": [[ids[0], ids[1]], [ids[3], ids[4]]], None: [[ids[5], ids[8]]]}
    assert all(json.loads(j["after"]) == {"last_seen_import_at": "day 2"} for j in js)


def test_insert_values_takes_consecutive_ids_and_journals_one_range(conn, run_id):
    now = utc_now()
    with ChangesetWriter(conn, operator="ann", run_id=run_id) as w:
        first = w.insert_values(
            "patrons", ("barcode", "last_name", "first_name"),
            [("P1", "O'Brien", "Zoë"), ("", "Lee", "Bo"), ("P3", "[b]x[/b]", "")],
            wrap={"barcode": "nullif(?, '')"},
            constants={"site": "UNION", "created_at": now, "updated_at": now})
    rows = conn.execute("SELECT id, barcode, last_name, first_name, created_at FROM patrons WHERE id >= ?"
                        " ORDER BY id", (first,)).fetchall()
    assert [tuple(r) for r in rows] == [(first, "P1", "O'Brien", "Zoë", now), (first + 1, None, "Lee", "Bo", now),
                                        (first + 2, "P3", "[b]x[/b]", "", now)]
    assert [(j["op"], j["row_key"], j["run_id"]) for j in journal(conn, table_name="patrons")
            if j["run_id"] == run_id] == [("insert_range", f"{first}..{first + 2}", run_id)]


def test_insert_values_quotes_constants_and_refuses_what_it_cannot_write(conn, run_id):
    with ChangesetWriter(conn, operator="ann", run_id=run_id) as w:
        first = w.insert_values("patrons", ("barcode", "last_name"), [("Q1", "Quote")],
                                constants={"first_name": "it's'); DROP TABLE patrons; --", "site": "UNION",
                                           "created_at": "x", "updated_at": "x"})
        with pytest.raises(TypeError):
            w.insert_values("patrons", ("barcode",), [("Q2",)], constants={"created_at": b"x"})
        with pytest.raises(ValueError):
            w.insert_values("profile_subjects", ("subject",), [("x",)])
    assert conn.execute("SELECT first_name FROM patrons WHERE id = ?", (first,)).fetchone()[0] == \
        "it's'); DROP TABLE patrons; --"


# -- update_where: per-row below COLUMNAR_MIN changed rows, column-wise from it on ----------------------

def _key_table(conn, ids, **columns) -> None:
    extra = "".join(f", {c}" for c in columns)
    conn.execute("DROP TABLE IF EXISTS temp.k")
    conn.execute(f"CREATE TEMP TABLE k (k INTEGER PRIMARY KEY{extra})")
    conn.executemany(f"INSERT INTO temp.k VALUES (?{', ?' * len(columns)})",
                     [(i, *(v[n] for v in columns.values())) for n, i in enumerate(ids)])


def test_update_where_journals_a_big_update_column_wise_in_slices(conn, run_id, monkeypatch):
    import json

    from patron_tui.store import changeset

    assert changeset.COLUMNAR_MIN == 1_000
    with writer(conn) as w:
        w.insert_many("patrons", [patron(f"C{i}", grade=str(i % 3)) for i in range(2_500)])
    ids = [r[0] for r in conn.execute("SELECT id FROM patrons WHERE barcode LIKE 'C%' ORDER BY id")]
    # 999 rows to change: one journal row each
    _key_table(conn, ids[:999])
    with writer(conn, run_id) as w:
        assert w.update_where("patrons", {"email": "a@b"}, keys="k") == 999
    assert len(journal(conn, run_id=run_id)) == 999
    # 2,500 rows, of which grade "0" rows (834) already hold grade "0": they change in email only;
    # the 999 holding email a@b already change in grade only (or not at all)
    monkeypatch.setattr(changeset, "COLUMNAR_SLICE", 1_000)
    run2 = runlog.create_run(conn, kind="test", title="Big", operator="tester")
    old = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, grade, email FROM patrons WHERE barcode LIKE 'C%'")}
    unchanged = [i for i in ids if old[i] == ("0", "a@b")]
    _key_table(conn, ids)
    with writer(conn, run2) as w:
        assert w.update_where("patrons", {"grade": "0", "email": "a@b"}, keys="k") == 2_500 - len(unchanged)
    js = journal(conn, run_id=run2)
    keys = [json.loads(j["row_key"]) for j in js]
    assert all(j["row_key"].startswith('{"$keys"') and j["op"] == "update" for j in js)
    assert [k["$n"] for k in keys] == [1_000, 1_000, 2_500 - len(unchanged) - 2_000]
    columns = [decode_image(j["before"])["$rows"] for j in js]
    got = [i for c in columns for i in c["id"]]
    assert got == sorted(set(ids) - set(unchanged))                    # key order, each row once
    assert [(k["$span"], k["$n"]) for k in keys] == [([c["id"][0], c["id"][-1]], len(c["id"])) for c in columns]
    for c in columns:
        assert list(c) == ["id", "grade", "email"]
        assert [(g, e) for g, e in zip(c["grade"], c["email"])] == [old[i] for i in c["id"]]
    assert all(json.loads(j["after"]) == {"grade": "0", "email": "a@b"} for j in js)
    assert {tuple(r) for r in conn.execute("SELECT grade, email FROM patrons WHERE barcode LIKE 'C%'")} == {("0", "a@b")}
    # the scope row_key puts the rows in the partial index of range and scope rows
    assert conn.execute("SELECT count(*) FROM change_journal INDEXED BY change_journal_ranges"
                        " WHERE table_name = 'patrons' AND (op = 'insert_range' OR substr(row_key, 1, 1) = '{')"
                        " AND run_id = ?", (run2,)).fetchone()[0] == 3


def test_update_where_column_wise_blobs_and_per_row_values(conn, run_id, monkeypatch):
    import json

    from patron_tui.store import changeset

    monkeypatch.setattr(changeset, "COLUMNAR_MIN", 3)
    with writer(conn) as w:
        w.insert_many("patrons", [patron("X0", picture=PICTURE, homeroom=""), patron("X1", picture=None, homeroom=""),
                                  patron("X2", picture=b"\x01", homeroom=""),
                                  patron("X3", picture=None, homeroom="Room X3")])
    ids = [r[0] for r in conn.execute("SELECT id FROM patrons WHERE barcode LIKE 'X%' ORDER BY id")]
    # per-row values, BLOBs among them; X3 already holds its values: not written, not journalled
    _key_table(conn, ids, home=[f"Room X{n}" for n in range(4)], pic=[b"\x00new", None, b"\xff", None])
    with writer(conn, run_id) as w:
        assert w.update_where("patrons", {"grade": "5"}, keys="k", values={"homeroom": "home", "picture": "pic"}) == 3
    j, = journal(conn, run_id=run_id)
    assert json.loads(j["row_key"]) == {"$keys": "id", "$span": [ids[0], ids[2]], "$n": 3}
    assert decode_image(j["before"]) == {"$rows": {"id": ids[:3], "grade": ["5", "5", "5"], "homeroom": ["", "", ""],
                                                   "picture": [PICTURE, None, b"\x01"]}}
    assert decode_image(j["after"]) == {"grade": "5", "$rows": {"homeroom": ["Room X0", "Room X1", "Room X2"],
                                                                "picture": [b"\x00new", None, b"\xff"]}}
    assert json.loads(j["before"])["$rows"]["picture"][2] == {"$hex": "01"}
    assert [tuple(r) for r in conn.execute("SELECT homeroom, picture FROM patrons WHERE barcode LIKE 'X%' ORDER BY id")] \
        == [("Room X0", b"\x00new"), ("Room X1", None), ("Room X2", b"\xff"), ("Room X3", None)]
    # no BLOB anywhere: the plain form; nothing to change: nothing written
    _key_table(conn, ids, home=["A", "B", "C", "D"])
    with writer(conn, run_id) as w:
        assert w.update_where("patrons", {}, keys="k", values={"homeroom": "home"}) == 4
        assert w.update_where("patrons", {}, keys="k", values={"homeroom": "home"}) == 0
    j2 = journal(conn, run_id=run_id)[1:]
    assert len(j2) == 1 and decode_image(j2[0]["after"]) == {"$rows": {"homeroom": ["A", "B", "C", "D"]}}
    with pytest.raises(ValueError), writer(conn, run_id) as w:
        w.update_where("patrons", {"id": 5}, keys="k")
