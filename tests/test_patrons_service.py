"""services.patrons: keyset paging, jumps, sorts, one patron's details."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from patron_tui.services import patrons as svc
from patron_tui.store import ChangesetWriter, Store, utc_now

N = 257  # not a multiple of any page size used below


@pytest.fixture(scope="module")
def district(tmp_path_factory) -> Store:
    """N patrons with many equal names, sites, statuses and grades (ties decided by id)."""
    store = Store.create(tmp_path_factory.mktemp("patrons") / "district.db", operator="tester")
    rnd = random.Random(7)
    now = utc_now()
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("sites", {"code": "HS", "name": "High School"})
        w.insert_many("patrons", (
            {
                # some patrons have no barcode or district ID: sorts must still list them
                "barcode": None if i % 17 == 3 else f"B{i:05d}",
                "district_id": None if i % 13 == 5 else f"D{i:05d}",
                "homeroom": rnd.choice(["", "Room 1", "room 1", "Gym"]),
                "site": rnd.choice(["HS", "MS", "ELM", "Zeta", "élan"]),
                "last_name": rnd.choice(["Smith", "smith", "O'Hara", "Ng", "Ångström", ""]),
                "first_name": rnd.choice(["Ann", "Bo", "", "Zoë"]),
                "status": rnd.choice(["Active", "Inactive", "Restricted"]),
                "grade": rnd.choice(["K", "1", "10", "12", "PK"]),
                "email": rnd.choice([f"p{i}@example.org", ""]), "created_at": now, "updated_at": now,
            }
            for i in range(N)
        ))
    conn.close()
    return store


@pytest.fixture
def conn(district):
    c = district.connect()
    yield c
    c.close()


def expected(conn: sqlite3.Connection, sort: str, descending: bool) -> list[int]:
    rows = [dict(r) for r in conn.execute("SELECT * FROM patrons WHERE is_system = 0")]
    rows.sort(key=lambda r: svc.sort_key(r, sort), reverse=descending)
    return [r["id"] for r in rows]


def walk(conn, sort: str, descending: bool, limit: int) -> list[int]:
    ids: list[int] = []
    after = None
    while True:
        rows = svc.page(conn, sort=sort, descending=descending, after=after, limit=limit)
        ids.extend(r["id"] for r in rows)
        if len(rows) < limit:
            return ids
        after = svc.sort_key(rows[-1], sort)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", list(svc.SORTS))
def test_keyset_paging_lists_every_patron_once_in_order(conn, sort, descending):
    want = expected(conn, sort, descending)
    assert len(want) == N == svc.count_patrons(conn)
    for limit in (1, 10, 100, N + 5):
        got = walk(conn, sort, descending, limit)
        assert got == want, (sort, descending, limit)
        assert len(set(got)) == N


@pytest.mark.parametrize("sort", list(svc.SORTS))
def test_page_at_matches_the_order_from_either_end(conn, sort):
    for descending in (False, True):
        want = expected(conn, sort, descending)
        for offset in (0, 1, 99, 128, 129, 200, N - 1, N, N + 10):
            for limit in (1, 10, 100):
                for total in (None, N):
                    rows = svc.page_at(conn, offset, limit, sort=sort, descending=descending, total=total)
                    assert [r["id"] for r in rows] == want[offset:offset + limit], (offset, limit, total)


def test_rows_carry_the_list_columns(conn):
    row = svc.page(conn, limit=1)[0]
    assert list(row) == [c.name for c in svc.COLUMNS]
    assert {c.name for c in svc.COLUMNS} == {
        "id", "barcode", "district_id", "last_name", "first_name", "nickname", "site", "grade",
        "homeroom", "status", "patron_type", "email",
    }
    assert all(c.label and 0 < c.min_width <= c.width for c in svc.COLUMNS)


def test_system_patrons_are_never_listed(conn):
    system = conn.execute("SELECT id FROM patrons WHERE is_system = 1").fetchone()[0]
    assert system not in walk(conn, "id", False, 50)
    with pytest.raises(svc.PatronNotFound):
        svc.patron_detail(conn, system)
    with pytest.raises(svc.PatronNotFound):
        svc.patron_detail(conn, 10**9)


@pytest.mark.parametrize("bad", ["last_name; DROP TABLE patrons", "LAST_NAME", "password_hash", "", None, "id DESC"])
def test_a_sort_outside_the_allowlist_is_refused(conn, bad):
    with pytest.raises(svc.BadSort):
        svc.page(conn, sort=bad)
    with pytest.raises(svc.BadSort):
        svc.page_at(conn, 0, 10, sort=bad)
    with pytest.raises(svc.BadSort):
        svc.sort_key({"id": 1}, bad)
    assert conn.execute("SELECT count(*) FROM patrons").fetchone()[0] == N + 1


def test_a_key_of_the_wrong_shape_is_refused(conn):
    with pytest.raises(ValueError):
        svc.page(conn, sort="last_name", after=(1,))


@pytest.mark.parametrize("sort", sorted(svc.INDEXED_SORTS))
def test_every_indexed_sort_reads_through_an_index_without_a_temporary_sort(conn, sort):
    cols = svc.sort_columns(sort)
    key = tuple("x" if c != "id" else 1 for c in cols)
    for descending in (False, True):
        seen: list[str] = []
        real = conn.execute

        class Spy:
            def execute(self, sql, args=()):
                plan = " ".join(r[3] for r in real("EXPLAIN QUERY PLAN " + sql, args))
                seen.append(plan)
                return real(sql, args)

        svc.page(Spy(), sort=sort, descending=descending, after=key)  # type: ignore[arg-type]
        svc.page_at(Spy(), 10, 10, sort=sort, descending=descending, total=N)  # type: ignore[arg-type]
        svc.page_at(Spy(), 200, 10, sort=sort, descending=descending, total=N)  # type: ignore[arg-type]
        for plan in seen:
            assert "TEMP B-TREE" not in plan, (sort, plan)
        if sort != "id":
            assert all("USING INDEX" in plan for plan in seen), seen


def test_a_where_fragment_narrows_every_read(conn):
    where, params = "site = ? AND status = ?", ("HS", "Active")
    want = [r[0] for r in conn.execute(
        "SELECT id FROM patrons WHERE is_system = 0 AND site = 'HS' AND status = 'Active' ORDER BY id")]
    assert 0 < len(want) < N
    assert svc.count_patrons(conn, where=where, params=params) == len(want)
    got, after = [], None
    while rows := svc.page(conn, sort="id", after=after, limit=3, where=where, params=params):
        got += [r["id"] for r in rows]
        after = svc.sort_key(rows[-1], "id")
    assert got == want
    tail = svc.page_at(conn, len(want) - 2, 5, sort="id", total=len(want), where=where, params=params)
    assert [r["id"] for r in tail] == want[-2:]


def test_detail_has_every_field_and_the_dependants(tmp_path):
    store = Store.create(tmp_path / "d.db", operator="tester")
    conn = store.connect()
    now = utc_now()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        pid = w.insert("patrons", {
            "barcode": "B1", "district_id": "D1", "site": "HS", "last_name": "Ng", "first_name": "Ann",
            "password_hash": "secret-hash", "picture": b"\x89PNG....", "created_at": now, "updated_at": now,
        })
        other = w.insert("patrons", {"barcode": "B2", "site": "HS", "last_name": "Other",
                                     "created_at": now, "updated_at": now})
        w.insert("notes", {"patron_id": pid, "note_type": "Alert", "text": "Call home", "created_at": now})
        w.insert("notes", {"patron_id": other, "note_type": "General", "text": "not hers", "created_at": now})
        for amount, balance in ((500, 350), (200, 0)):
            w.insert("charges", {"patron_id": pid, "kind": "lost", "title": "Holes", "amount_cents": amount,
                                 "balance_cents": balance, "transaction_date": now})
        w.insert("checkouts", {"patron_id": pid, "item_barcode": "I1", "title": "Dune",
                               "checked_out_at": now, "due_at": "2031-01-01"})
        w.insert("holds", {"patron_id": pid, "kind": "hold", "title": "Emma", "placed_at": now})
        w.insert("patron_history", {"patron_id": pid, "kind": "return", "occurred_at": "2020-01-01", "title": "Old"})
        w.insert("patron_history", {"patron_id": pid, "kind": "lexile", "occurred_at": "2024-01-01", "lexile": 880})
        w.insert("reviews", {"patron_id": pid, "title": "Dune", "rating": 5, "created_at": now})
        prof = w.insert("patron_profiles", {"patron_id": pid, "medium": "DB"})
        w.insert("profile_subjects", {"profile_id": prof, "subject": "MYS"})
        w.insert("profile_subjects", {"profile_id": prof, "subject": "BIO"})
        for n in range(3):
            t = w.insert("titles", {"code": f"T{n}", "title": f"Title {n}"})
            w.insert("service_queue", {"profile_id": prof, "title_id": t, "position": n, "added_at": now})
    d = svc.patron_detail(conn, pid)
    conn.close()

    columns = {r[1] for r in sqlite3.connect(store.path).execute("PRAGMA table_info(patrons)")}
    assert columns - {"password_hash", "picture"} <= set(d)
    assert "password_hash" not in d and "picture" not in d
    assert d["has_password"] is True and d["picture_bytes"] == 8
    shown = {f for f, _ in svc.DETAIL_FIELDS}
    # import_fingerprint and flagged (schema v3): the import engine's bookkeeping, not shown yet
    assert columns - {"password_hash", "picture", "is_system", "import_fingerprint", "flagged"} <= shown
    assert (d["last_name"], d["barcode"]) == ("Ng", "B1")
    assert [n["text"] for n in d["notes"]] == ["Call home"]
    assert len(d["charges"]) == 2 and d["balance_cents"] == 350
    assert [c["title"] for c in d["checkouts"]] == ["Dune"]
    assert [h["title"] for h in d["holds"]] == ["Emma"]
    assert [h["kind"] for h in d["history"]] == ["lexile", "return"]  # newest first
    assert [r["rating"] for r in d["reviews"]] == [5]
    (profile,) = d["profiles"]
    assert profile["medium"] == "DB" and profile["subjects"] == ["BIO", "MYS"] and profile["queue_count"] == 3


def test_the_service_does_not_import_textual():
    code = "import sys, patron_tui.services.patrons; sys.exit('textual' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent).returncode == 0
