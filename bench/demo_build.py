"""Benchmark: building the demo district, against a raw-sqlite3 baseline measured in the same run.

    .venv/bin/python bench/demo_build.py [--patrons N] [--seed S] [--keep DIR]

Prints
- the demo build: total seconds, seconds per 100k patrons, rows and seconds per table;
- the baseline: the same N patron rows (same columns, same generator) inserted with one raw
  `sqlite3.executemany` in one transaction into a fresh store (same schema and indexes, same
  connection pragmas), with no changeset writer. Both sides include generating the rows
  (about a third of the time); neither includes the final WAL checkpoint;
- the ratios: demo patrons phase / baseline (the writer's overhead on the patrons table) and
  whole demo build / baseline (the cost of the whole district relative to its patrons alone).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patron_tui.services.demo import _Builder, build_demo  # noqa: E402
from patron_tui.store import ChangesetWriter, Store  # noqa: E402


def baseline(path: Path, patrons: int, seed: int) -> tuple[float, int]:
    """Raw executemany of the demo's patron rows in one transaction; returns (seconds, rows)."""
    store = Store.create(path, operator="bench")
    conn = store.connect()
    conn.execute("PRAGMA cache_size = -262144")  # as build_demo does
    builder = _Builder(conn, patrons=patrons, seed=seed, say=lambda msg: None)
    # the demo's sites, so the generator finds its site codes (not timed)
    with ChangesetWriter(conn, operator="bench", run_id=None) as w:
        w.insert_many("sites", builder.gen_sites(), journal="range")
    builder.site_codes = [r[0] for r in conn.execute("SELECT code FROM sites ORDER BY id")]
    builder.first_patron_id = builder.next_id("patrons")
    rows = builder.gen_patrons()
    first = next(rows)
    cols = list(first)
    sql = f"INSERT INTO patrons ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

    def tuples():
        yield tuple(first.values())
        for row in rows:
            yield tuple(row.values())

    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, tuples())
    conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    count = conn.execute("SELECT count(*) FROM patrons WHERE is_system = 0").fetchone()[0]
    conn.close()
    return seconds, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patrons", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", metavar="DIR", help="build in DIR and keep the databases")
    args = parser.parse_args(argv)
    n = args.patrons
    per100k = max(n, 1) / 100_000

    with tempfile.TemporaryDirectory(prefix="patron-bench-") as tmp:
        where = Path(args.keep) if args.keep else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        print(f"demo build: {n:,} patrons, seed {args.seed}, in {where}")
        stats = build_demo(where / "demo.db", patrons=n, seed=args.seed, replace=True, operator="bench")
        total_rows = sum(stats["rows"].values())
        for table, rows in stats["rows"].items():
            print(f"  {table:18} {rows:>10,} rows {stats['timings'][table]:8.2f} s")
        demo_s = stats["seconds"]
        patrons_s = stats["timings"]["patrons"]
        print(f"demo total:            {demo_s:8.2f} s  ({total_rows:,} rows)")
        print(f"demo per 100k patrons: {demo_s / per100k:8.2f} s")
        print(f"demo patrons phase:    {patrons_s:8.2f} s  ({patrons_s / per100k:.2f} s per 100k)")

        for suffix in ("", "-wal", "-shm"):
            (where / f"baseline.db{suffix}").unlink(missing_ok=True)
        base_s, base_rows = baseline(where / "baseline.db", n, args.seed)
        print(f"baseline (raw executemany, {base_rows:,} patron rows, one transaction): {base_s:8.2f} s"
              f"  ({base_s / per100k:.2f} s per 100k)")
        if base_s > 0:
            print(f"ratio demo patrons phase / baseline: {patrons_s / base_s:6.2f}x")
            print(f"ratio demo total / baseline:         {demo_s / base_s:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
