"""Benchmark: undoing a big import (services/undo.py through the run engine) against one raw
`sqlite3` DELETE of the same patrons.

    .venv/bin/python bench/undo.py [--patrons N] [--repeat R]

A Full import of N patrons (default 200,000; bench/import.py's file and properties) into an
empty district, through the real `RunEngine`; the database is then copied, so every undo starts
from the same file. Per undo (the best of R, each on a fresh copy):

- row: `start_undo` called -> it returns (the undo's run row is written by then: issue 14
  item 6 asks for this first, before the plan, so a long plan is a running run everyone sees);
- lock: the undo's write transaction, `BEGIN IMMEDIATE` to COMMIT (every other writer waits
  this long; the plan's re-check inside it is one look at the journal above a mark);
- total: `start_undo` called -> the run has ended (succeeded);
against the raw baseline: `DELETE FROM patrons WHERE id BETWEEN first AND last` in one
`BEGIN IMMEDIATE` ... COMMIT (no journal, no plan). Prints the times and lock/raw, total/raw.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patron_tui.runs import RunEngine  # noqa: E402
from patron_tui.services import undo as U  # noqa: E402
from patron_tui.store import Store, changeset  # noqa: E402
from patron_tui.store.db import connect  # noqa: E402


def _bench_import():
    spec = importlib.util.spec_from_file_location("bench_import", Path(__file__).with_name("import.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(folder: Path, n: int) -> tuple[Path, int]:
    """A district with one Full import of n patrons: (its file, the import's run id)."""
    bi = _bench_import()
    props = folder / "district.properties"
    props.write_text(bi.PROPERTIES, encoding="utf-8")
    csv_path = bi.write_csv(folder / "district.csv", n)
    db = folder / "base.db"
    store = bi.setup_store(db)
    engine = RunEngine(store)
    try:
        handle = engine.execute("import", "bench import", lambda ctx: bi.run_import(
            ctx, path=csv_path, properties_path=props, mode="full", summary_errors_only=True))
    finally:
        engine.shutdown()
    if handle.status.value != "succeeded":
        raise SystemExit(f"import failed: {handle.error}")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db, handle.run_id


def fresh(base: Path, folder: Path, name: str) -> Path:
    path = folder / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(base, path)
    return path


def engine_undo(db: Path, run_id: int) -> tuple[float, float, float, dict]:
    """(row, lock, total) seconds of one undo of `run_id` and its summary."""
    store = Store(db, operator="bench")
    held: dict[str, float] = {}
    enter, leave = changeset.ChangesetWriter.__enter__, changeset.ChangesetWriter.__exit__

    def timed_enter(self):   # the undo's writer: the one write with a run id while it runs
        out = enter(self)
        if self.run_id is not None and self.run_id != run_id:
            held.setdefault("begin", time.perf_counter())
        return out

    def timed_exit(self, *exc):
        try:
            return leave(self, *exc)
        finally:
            if self.run_id is not None and self.run_id != run_id:
                held["end"] = time.perf_counter()

    changeset.ChangesetWriter.__enter__, changeset.ChangesetWriter.__exit__ = timed_enter, timed_exit
    engine = RunEngine(store, pool_size=1)
    try:
        started = time.perf_counter()
        handle = U.start_undo(engine, store, "bench", run_id, on_conflict="skip")
        row = time.perf_counter() - started
        handle.wait()
        total = time.perf_counter() - started
    finally:
        engine.shutdown(cancel_running=False)
        changeset.ChangesetWriter.__enter__, changeset.ChangesetWriter.__exit__ = enter, leave
    if handle.status.value != "succeeded":
        raise SystemExit(f"undo failed: {handle.error}")
    return row, held["end"] - held["begin"], total, handle.summary


def raw_delete(db: Path, first: int, last: int) -> float:
    conn = connect(db)
    try:
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM patrons WHERE id BETWEEN ? AND ?", (first, last))
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patrons", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-undo-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        base, run_id = build(folder, args.patrons)
        conn = sqlite3.connect(base)
        first, last = conn.execute("SELECT min(id), max(id) FROM patrons").fetchone()
        conn.close()
        print(f"built: a Full import of {args.patrons:,} patrons (run {run_id}) in {time.perf_counter() - t0:.1f} s")
        best: dict[str, float] = {}
        summary: dict = {}
        for i in range(args.repeat):
            raw = raw_delete(fresh(base, folder, "raw.db"), first, last)
            row, lock, total, summary = engine_undo(fresh(base, folder, "undo.db"), run_id)
            for name, value in (("raw", raw), ("row", row), ("lock", lock), ("total", total)):
                best[name] = min(best.get(name, value), value)
            print(f"  round {i + 1}: raw {raw:.2f} s · row {row:.3f} s · lock {lock:.2f} s · total {total:.2f} s")
        print(f"undo of run {run_id}: deleted {summary.get('deleted', 0):,}, conflicts {summary.get('conflicts', 0):,}")
        print(f"raw DELETE         {best['raw']:.2f} s")
        print(f"undo: run row      {best['row']:.3f} s after start_undo was called")
        print(f"undo: write lock   {best['lock']:.2f} s   ({best['lock'] / best['raw']:.1f}x raw)")
        print(f"undo: whole run    {best['total']:.2f} s   ({best['total'] / best['raw']:.1f}x raw)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
