"""A small talking-book district for the batch update and queue filler tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from patron_tui.runs import RunEngine
from patron_tui.services import batch
from patron_tui.store import ChangesetWriter, Store

from .conftest import district

#: patrons P01..P10; P09 and P10 have no DB profile (P10 has an LP one)
PATRONS = [
    {"barcode": f"P{i:02d}", "district_id": f"D{i:02d}", "site": "HS", "last_name": last, "first_name": first,
     "grade": "5" if i <= 6 else "6"}
    for i, (last, first) in enumerate([
        ("Baker", "Ann"), ("adams", "Bo"), ("Baker", "Cy"), ("Cole", "Di"), ("Abel", "Ed"),
        ("Dunn", "Flo"), ("Evans", "Gus"), ("Fox", "Hal"), ("Gray", "Ida"), ("Hale", "Jo")], start=1)
]

#: mixed starting values, one tuple per patron with a DB profile (P01..P08)
_PROFILE_VALUES = [
    # status, max, per shipment, frequency, next service date, dup, auto, nightly, queue length
    ("Active", 3, 1, "Weekly", "2026-10-01", 0, 1, 0, 4),
    ("Suspended", 5, 2, "Monthly", None, 1, 0, 1, 3),
    ("Active", 2, 1, "Weekly", "2026-10-08", 0, 1, 1, 5),
    ("On hold", 7, 3, "Biweekly", "2026-11-01", 0, 0, 0, 2),
    ("Active", 3, 1, "Weekly", None, 1, 1, 0, 6),
    ("Inactive", 9, 4, "On request", "2026-12-24", 0, 1, 1, 3),
    ("Active", 4, 2, "Weekly", "2026-10-15", 0, 1, 0, 4),
    ("Active", 3, 1, "Monthly", None, 0, 0, 1, 2),
]
PROFILE_COLUMNS = ("status_of_service", "max_items_out", "items_per_shipment", "service_frequency",
                   "next_service_date", "duplication_circulation", "auto_select", "nightly_debug", "queue_length")


def build(path: Path, *, operator: str = "tester") -> Store:
    store = district(path, PATRONS)
    conn = store.connect()
    ids = {r["barcode"]: r["id"] for r in conn.execute("SELECT id, barcode FROM patrons WHERE barcode IS NOT NULL")}
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for i, values in enumerate(_PROFILE_VALUES, start=1):
            pid = w.insert("patron_profiles", {"patron_id": ids[f"P{i:02d}"], "medium": "DB",
                                               **dict(zip(PROFILE_COLUMNS, values))})
            w.insert("profile_subjects", {"profile_id": pid, "subject": "MYS" if i % 2 else "BIO"})
        w.insert("patron_profiles", {"patron_id": ids["P10"], "medium": "LP", "max_items_out": 6})
        if operator != "tester":
            w.insert("operators", {"login_name": operator, "security_level": 0, "may_use_batch_tools": 1,
                                   "created_at": "2026-01-01T00:00:00Z"})
    conn.close()
    store.operator = operator
    return store


def add_catalog(store: Store, n: int = 12) -> list[int]:
    """Titles "Title 1".."Title n": odd ones MYS, even ones BIO, every third also SCI;
    DB for all but every fourth (LP)."""
    conn = store.connect()
    ids = []
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for i in range(1, n + 1):
            tid = w.insert("titles", {"code": f"T{i}", "title": f"Title {i}"})
            ids.append(tid)
            w.insert("title_media", {"title_id": tid, "medium": "LP" if i % 4 == 0 else "DB"})
            w.insert("title_subjects", {"title_id": tid, "subject": "MYS" if i % 2 else "BIO"})
            if i % 3 == 0:
                w.insert("title_subjects", {"title_id": tid, "subject": "SCI"})
    conn.close()
    return ids


def profiles(conn: sqlite3.Connection, medium: str = "DB") -> dict[str, dict]:
    """barcode -> the patron's profile of `medium` (every column)."""
    return {r["barcode"]: {k: r[k] for k in r.keys() if k != "barcode"} for r in conn.execute(
        "SELECT p.barcode, pp.* FROM patron_profiles pp JOIN patrons p ON p.id = pp.patron_id"
        " WHERE pp.medium = ? ORDER BY p.barcode", (medium,))}


def dump(conn: sqlite3.Connection, *tables: str) -> dict[str, list[tuple]]:
    tables = tables or ("patron_profiles", "profile_subjects", "service_queue", "queue_fill_requests",
                        "change_journal")
    return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}


def run_batch(store: Store, update: batch.BatchUpdate, *, statement: str = "", set_name: str | None = None,
              operator: str | None = None, engine: RunEngine | None = None):
    own = engine is None
    engine = engine or RunEngine(store, pool_size=1)
    try:
        conn = store.connect()
        try:
            tgt = batch.target(conn, set_name=set_name, statement=None if set_name else statement)
        finally:
            conn.close()
        handle = batch.start_batch_update(engine, store, operator or store.operator, tgt, update)
        handle.wait(30)
        return handle
    finally:
        if own:
            engine.shutdown()
