"""Benchmark: a batch profile update against one raw `sqlite3` UPDATE doing the same change.

    .venv/bin/python bench/batch.py [--patrons N] [--repeat R]

A district of N patrons (default 100,000), each with a DB profile, built with raw inserts,
then copied, so both sides start from the same file. On one copy, the Batch Update Patron
Profile run (services/batch.py through the run engine: the set resolved, the target table,
the before-images journalled, the UPDATE, the commit) sets status of service, maximum items
out and Nightly Debug on every DB profile; on the other, one raw UPDATE statement makes the
same change in one `BEGIN IMMEDIATE` ... COMMIT (no journal). Every profile changes on both
sides. Prints both times and the ratio; target (issue 7): within 3x, journal included (the
writer journals so big an update column-wise: one journal row per 50,000 profiles, see
store/changeset.py; the run checks that those rows hold every changed profile). A third line
times the floor of a per-row journal, which cannot meet the target: the raw UPDATE plus one raw
INSERT ... SELECT of one journal row per profile and nothing else. The best of R runs of each
(each on a fresh copy).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patron_tui.runs import RunEngine  # noqa: E402
from patron_tui.services import batch  # noqa: E402
from patron_tui.store import Store  # noqa: E402
from patron_tui.store.db import connect  # noqa: E402

NOW = "2026-09-15T08:00:00.000000Z"
STATUSES = ("Active", "Active", "Suspended", "On hold", "Inactive")


def build(path: Path, n: int) -> None:
    Store.create(path, operator="bench")
    conn = connect(path)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO patrons (id, barcode, district_id, site, last_name, first_name, status, created_at, updated_at)"
        " VALUES (?, ?, ?, 'UNION', ?, ?, 'Active', ?, ?)",
        ((i + 2, f"2041700{i:07d}", f"S{i:08d}", f"Last{i % 997}", f"First{i % 89}", NOW, NOW) for i in range(n)))
    conn.executemany(
        "INSERT INTO patron_profiles (patron_id, medium, status_of_service, max_items_out, items_per_shipment,"
        " service_frequency, next_service_date, nightly_debug) VALUES (?, 'DB', ?, ?, ?, 'Weekly', ?, ?)",
        ((i + 2, STATUSES[i % 5], 2 + i % 9, 1 + i % 4, f"2026-10-{1 + i % 28:02d}", i % 2) for i in range(n)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


UPDATE = batch.BatchUpdate(medium="DB", status_of_service="Restricted", max_items_out=12, nightly_debug=True)


def run_batch(path: Path) -> tuple[float, dict]:
    store = Store(path, operator="bench")
    engine = RunEngine(store, pool_size=1)
    try:
        conn = store.connect()
        target = batch.target(conn, statement="")
        conn.close()
        started = time.perf_counter()
        handle = batch.start_batch_update(engine, store, "bench", target, UPDATE)
        handle.wait()
        elapsed = time.perf_counter() - started
    finally:
        engine.shutdown()
    if handle.status.value != "succeeded":
        raise SystemExit(f"batch run failed: {handle.error}")
    return elapsed, handle.summary


def run_raw(path: Path) -> tuple[float, int]:
    conn = connect(path)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    cur = conn.execute(
        "UPDATE patron_profiles SET status_of_service = ?, max_items_out = ?, nightly_debug = ?"
        " WHERE medium = 'DB' AND patron_id IN (SELECT id FROM patrons WHERE is_system = 0)",
        ("Restricted", 12, 1))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, cur.rowcount


def run_raw_journal(path: Path) -> float:
    """The floor of a journalled update: the raw UPDATE plus ONE raw INSERT ... SELECT writing
    the same per-row journal rows (before/after JSON), nothing else (no run, no target table)."""
    conn = connect(path)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    where = "medium = 'DB' AND patron_id IN (SELECT id FROM patrons WHERE is_system = 0)"
    conn.execute(
        "INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op, before, after)"
        " SELECT NULL, 'bench', ?, 'patron_profiles', CAST(t.id AS TEXT), 'update',"
        " json_object('status_of_service', t.status_of_service, 'max_items_out', t.max_items_out,"
        " 'nightly_debug', t.nightly_debug), ? FROM patron_profiles t WHERE " + where,
        (NOW, '{"status_of_service":"Restricted","max_items_out":12,"nightly_debug":1}'))
    conn.execute("UPDATE patron_profiles SET status_of_service = ?, max_items_out = ?, nightly_debug = ?"
                 " WHERE " + where, ("Restricted", 12, 1))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patrons", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="patron-bench-batch-") as tmp:
        base = Path(tmp) / "base.db"
        started = time.perf_counter()
        build(base, args.patrons)
        print(f"district of {args.patrons:,} patrons with DB profiles built in {time.perf_counter() - started:.1f} s")
        best_batch = best_raw = best_floor = float("inf")
        summary: dict = {}
        rows = entries = 0
        for r in range(args.repeat):
            for name in ("raw", "floor", "batch"):
                copy = Path(tmp) / f"{name}{r}.db"
                shutil.copyfile(base, copy)
                if name == "raw":
                    t, rows = run_raw(copy)
                    best_raw = min(best_raw, t)
                elif name == "floor":
                    best_floor = min(best_floor, run_raw_journal(copy))
                else:
                    t, summary = run_batch(copy)
                    best_batch = min(best_batch, t)
                    check = sqlite3.connect(copy)
                    journalled, entries = check.execute(
                        "SELECT coalesce(sum(CASE WHEN substr(row_key, 1, 1) = '{'"
                        " THEN json_extract(row_key, '$.\"$n\"') ELSE 1 END), 0), count(*)"
                        " FROM change_journal WHERE table_name = 'patron_profiles' AND op = 'update'").fetchone()
                    check.close()
                    if journalled != summary["profiles_updated"]:
                        raise SystemExit(f"journal holds {journalled} before-images, expected "
                                         f"{summary['profiles_updated']}")
                copy.unlink()
        print(f"raw UPDATE:   {rows:,} profiles in {best_raw:.3f} s")
        print(f"batch update: {summary['profiles_updated']:,} profiles (+ {entries:,} columnar journal "
              f"row{'s' if entries != 1 else ''} holding their before-images) in {best_batch:.3f} s")
        print(f"raw UPDATE + one raw journal INSERT ... SELECT (the floor of a per-row journal): {best_floor:.3f} s"
              f" = {best_floor / best_raw:.2f}x raw")
        print(f"ratio batch/raw: {best_batch / best_raw:.2f}x (target <= 3x); batch/floor: "
              f"{best_batch / best_floor:.2f}x")


if __name__ == "__main__":
    main()
