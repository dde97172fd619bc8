"""Benchmark: the changeset writer's bulk path against raw `sqlite3.executemany`.

    .venv/bin/python bench/writer.py [--rows N]

Same rows, same schema and pragmas, one `BEGIN IMMEDIATE` transaction each, in the
same run. Prints rows/second and the ratio writer/raw for
- insert: `ChangesetWriter.insert_many(journal="full")` (a journal row with the
  after-image per patron) vs a raw INSERT executemany;
- update: `ChangesetWriter.update_many` (before-image read in batches + journal)
  vs a raw UPDATE executemany of the same changes;
- delete: `ChangesetWriter.delete_many` vs a raw DELETE executemany.
Target (issue 2): within 2x for insert, journal included.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patron_tui.store import ChangesetWriter, Store  # noqa: E402

NOW = "2026-09-15T08:00:00.000000Z"


def make_rows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    last = ["García", "O'Brien", "Smith-Jones", "Nguyễn", "Müller", "Lee", "Johnson", "D'Angelo"]
    first = ["José", "Zoë", "Ann", "Bo", "Kim", "Liam", "Ngọc", "Ava"]
    sites = ["HS", "MS", "ELM1", "ELM2"]
    return [
        {
            "id": i + 2,
            "barcode": f"2041700{i:07d}",
            "district_id": f"S{i:08d}",
            "site": rng.choice(sites),
            "last_name": rng.choice(last),
            "first_name": rng.choice(first),
            "patron_type": "Student",
            "grade": str(rng.randint(1, 12)),
            "homeroom": f"Room {rng.randint(100, 130)}",
            "policy": "STUDENT",
            "security_group": "STUDENT",
            "status": "Active",
            "email": f"s{i}@district.example" if rng.random() < 0.8 else "",
            "birthdate": f"20{rng.randint(8, 19):02d}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
            "created_at": NOW,
            "updated_at": NOW,
        }
        for i in range(n)
    ]


def fresh(folder: Path, name: str):
    store = Store.create(folder / f"{name}.db", operator="bench")
    return store, store.connect()


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    cols = list(rows[0])
    tuples = [tuple(r[c] for c in cols) for r in rows]
    insert_sql = f"INSERT INTO patrons ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    changes = [(r["id"], {"homeroom": "Room 200", "grade": "GRAD"}) for r in rows]
    update_params = [("Room 200", "GRAD", pid) for pid, _ in changes]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _, raw = fresh(folder, "raw")
        _, wconn = fresh(folder, "writer")

        def raw_insert():
            raw.execute("BEGIN IMMEDIATE")
            raw.executemany(insert_sql, tuples)
            raw.execute("COMMIT")

        def writer_insert():
            with ChangesetWriter(wconn, operator="bench", run_id=None) as w:
                w.insert_many("patrons", rows, journal="full")

        def raw_update():
            raw.execute("BEGIN IMMEDIATE")
            raw.executemany("UPDATE patrons SET homeroom = ?, grade = ? WHERE id = ?", update_params)
            raw.execute("COMMIT")

        def writer_update():
            with ChangesetWriter(wconn, operator="bench", run_id=None) as w:
                w.update_many("patrons", changes)

        def raw_delete():
            raw.execute("BEGIN IMMEDIATE")
            raw.executemany("DELETE FROM patrons WHERE id = ?", [(r["id"],) for r in rows])
            raw.execute("COMMIT")

        def writer_delete():
            with ChangesetWriter(wconn, operator="bench", run_id=None) as w:
                w.delete_many("patrons", [r["id"] for r in rows])

        for name, raw_fn, writer_fn in (
            ("insert", raw_insert, writer_insert),
            ("update", raw_update, writer_update),
            ("delete", raw_delete, writer_delete),
        ):
            t_raw = timed(raw_fn)
            t_writer = timed(writer_fn)
            results.append((name, t_raw, t_writer))
        journal = wconn.execute("SELECT count(*) FROM change_journal").fetchone()[0]
    n = args.rows
    print(f"changeset writer vs raw executemany, {n:,} patron rows, journal rows written: {journal:,}")
    for name, t_raw, t_writer in results:
        print(f"{name:7} raw {t_raw:6.2f} s ({n / t_raw:9,.0f} rows/s)   writer {t_writer:6.2f} s "
              f"({n / t_writer:9,.0f} rows/s)   ratio {t_writer / t_raw:4.2f}x")


if __name__ == "__main__":
    main()
