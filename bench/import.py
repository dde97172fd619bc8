"""Benchmark: the import engine (`run_import` on the real `RunEngine`) against raw baselines.

    .venv/bin/python bench/import.py [--rows N] [--memory-rows M] [--skip-1m] [--skip-memory]

Issue 4's acceptance line. A deterministic Windows-1252 CSV of N patrons (Student ID,
Student Barcode, Last Name, First Name, Grade, School, Homeroom, Graduation Year,
Birthdate MM/DD/YYYY, Email) and its properties file are written to a temp dir; every
figure below is measured in the same run:

- Full into an empty store, timed through `RunEngine(store).execute("import", ...)`, once
  with `summary_errors_only=True` and once with a per-record info message ("added ...")
  persisted to `run_messages`; against a raw `sqlite3` `executemany` upsert
  (`INSERT ... ON CONFLICT(district_id) WHERE district_id IS NOT NULL DO UPDATE SET ...`)
  of the same rows, already parsed (and, for reference, including the `csv` parsing).
  Target: within 2x, journal included.
- Full into a full store: the same file again (all unchanged) and a variant with 10% of the
  records changed, against the raw upsert of the same rows into the full table. Target 2x.
- Incremental with 1% changed, against a plain `csv.reader` pass over the same file
  (reading the file is the floor). Target: within 2x. Both take about half a second, where
  the machine's load alone moves a single timing by a third: each is the best of 5, taken in
  turns.
- Peak memory (VmHWM of a child process that runs one Full import into an empty store, plus
  the peak of the mapping process a big Full import starts, services/imports/mapproc.py)
  at N rows and at `--memory-rows` (default 1,000,000). Target: flat (the big peak is not
  anywhere near rows-ratio times the small one).

How the engine gets there (services/imports/engine.py): the file is read in 32 KiB blocks
decoded at once; the mapping is compiled to one Python function per header; a big Full import
reads and maps in a second process while the run thread decides and writes; a chunk that
names no stored patron is all adds; unchanged records in Full are one tuple comparison and a
set-based "last seen" stamp journalled per run of ids; in Incremental an unchanged line is
hashed and dropped before the csv reader sees it.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patron_tui.runs import RunEngine  # noqa: E402
from patron_tui.services.imports.engine import run_import  # noqa: E402
from patron_tui.store import ChangesetWriter, Store  # noqa: E402
from patron_tui.store.db import connect  # noqa: E402

ENCODING = "cp1252"
INCREMENTAL_REPEATS = 5
HEADER = ["Student ID", "Student Barcode", "Last Name", "First Name", "Grade", "School",
          "Homeroom", "Graduation Year", "Birthdate", "Email"]
SITES = [("HS", "High School"), ("MS", "Middle School"), ("ELM1", "Elm Elementary"),
         ("ELM2", "Oak Elementary")]
LAST = ["García", "O'Brien", "Smith-Jones", "Müller", "Lee", "Johnson", "D'Angelo", "Nuñez",
        "Brontë", "Kowalski", "Nguyen", "Fernández"]
FIRST = ["José", "Zoë", "Ann", "Bo", "Kim", "Liam", "Chloé", "Ava", "Renée", "Noah", "Mia", "Søren"]
GRADES = ["K"] + [str(n) for n in range(1, 13)]

PROPERTIES = """\
# bench/import.py: a district SIS export
encoding=windows-1252
delimiter=,
header=true
match=district_id
date_format=%m/%d/%Y
field.district_id=Student ID
field.barcode=Student Barcode
field.last_name=Last Name
field.first_name=First Name
field.grade=Grade
field.site=School
field.homeroom=Homeroom
field.graduation_year=Graduation Year
field.birthdate=Birthdate
field.email=Email
default.patron_type=Student
default.policy=STUDENT
default.security_group=STUDENT
default.status=Active
required=barcode,last_name,site
"""


# -- the data ---------------------------------------------------------------------------

def record(i: int, variant: int) -> list[str]:
    """Row i of the file. variant 0: the base; 10: 10% changed (homeroom); 11: variant 10
    plus another 1% changed (email), i.e. 1% different from variant 10."""
    h = (i * 2654435761) & 0xFFFFFFFF            # a cheap deterministic hash of i
    grade = GRADES[h % 13]
    site = "HS" if h % 13 >= 9 else "MS" if h % 13 >= 6 else SITES[2 + (h >> 8) % 2][0]
    year = 2026 + (12 - (h % 13))
    homeroom = f"Room {100 + (h >> 4) % 40}"
    email = f"s{i}@district.example" if (h >> 12) % 10 else ""
    if variant >= 10 and i % 10 == 3:
        homeroom = f"Room {200 + (h >> 4) % 40}"
    if variant >= 11 and i % 100 == 7:
        email = f"student{i}@new.example"
    return [
        f"S{i:08d}", f"2041700{i:07d}", LAST[(h >> 3) % len(LAST)], FIRST[(h >> 7) % len(FIRST)],
        grade, site, homeroom, str(year),
        f"{1 + (h >> 9) % 12:02d}/{1 + (h >> 13) % 28:02d}/{year - 19}", email,
    ]


def write_csv(path: Path, n: int, variant: int = 0) -> Path:
    with path.open("w", encoding=ENCODING, newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(record(i, variant) for i in range(n))
    return path


def setup_store(path: Path) -> Store:
    store = Store.create(path, operator="bench")
    conn = store.connect()
    with ChangesetWriter(conn, operator="bench", run_id=None) as w:
        for code, name in SITES:
            w.insert("sites", {"code": code, "name": name})
    conn.close()
    return store


# -- the raw baseline -------------------------------------------------------------------

RAW_COLS = ("district_id", "barcode", "last_name", "first_name", "grade", "site", "homeroom",
            "graduation_year", "email", "birthdate", "patron_type", "policy", "security_group", "status",
            "created_at", "updated_at", "last_seen_import_at")
_SKIP_ON_UPDATE = {"district_id", "created_at"}
UPSERT = (
    f"INSERT INTO patrons ({', '.join(RAW_COLS)}) VALUES ({', '.join('?' * len(RAW_COLS))})"
    " ON CONFLICT(district_id) WHERE district_id IS NOT NULL DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in RAW_COLS if c not in _SKIP_ON_UPDATE)
)


def parse_raw(path: Path, now: str) -> list[tuple]:
    """The same rows the import maps, as upsert parameters (a minimal hand-written mapping)."""
    out = []
    with path.open(encoding=ENCODING, newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for sid, bc, last, first, grade, site, room, year, bd, email in rows:
            m, d, y = bd.split("/")
            out.append((sid, bc, last, first, grade, site, room, int(year) if year else None, email,
                        f"{y}-{m}-{d}", "Student", "STUDENT", "STUDENT", "Active", now, now, now))
    return out


def raw_upsert(conn, params: list[tuple]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(UPSERT, params)
    conn.execute("COMMIT")


def csv_pass(path: Path) -> int:
    n = 0
    with path.open(encoding=ENCODING, newline="") as f:
        for _ in csv.reader(f):
            n += 1
    return n


# -- the engine -------------------------------------------------------------------------

def engine_import(store: Store, csv_path: Path, props: Path, *, mode: str = "full",
                  errors_only: bool = True) -> tuple[float, dict]:
    engine = RunEngine(store)
    try:
        started = time.perf_counter()
        handle = engine.execute("import", "bench import", lambda ctx: run_import(
            ctx, path=csv_path, properties_path=props, mode=mode, summary_errors_only=errors_only))
        elapsed = time.perf_counter() - started
    finally:
        engine.shutdown()
    if handle.status.value != "succeeded":
        raise SystemExit(f"import failed: {handle.error}")
    return elapsed, handle.summary


def counts(s: dict) -> str:
    return f"+{s['added']} ~{s['updated']} ={s['unchanged']} -{s['skipped']}"


# -- memory (child process) -------------------------------------------------------------

def _hwm_kib() -> int:
    """This process's peak RSS in KiB. Linux's VmHWM starts afresh at exec; ru_maxrss of an
    exec'd child keeps the forking parent's high-water mark, so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_memory(csv_path: Path, props: Path, db: Path) -> None:
    base = _hwm_kib()
    store = setup_store(db)
    elapsed, summary = engine_import(store, csv_path, props)
    peak = _hwm_kib()
    # a big Full import reads and maps in a process of its own (services/imports/mapproc.py):
    # its peak is the largest of this child's own children (Linux ru_maxrss, KiB)
    mapper = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{base} {peak} {elapsed:.3f} {summary['read']} {summary['added']} {mapper}")


def measure_memory(n: int, folder: Path, props: Path) -> tuple[float, float, float]:
    """(baseline MiB, peak MiB, seconds) of a child that imports n rows into an empty store."""
    csv_path = write_csv(folder / f"mem{n}.csv", n)
    out = subprocess.run(
        [sys.executable, __file__, "--child-memory", str(csv_path), str(props), str(folder / f"mem{n}.db")],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    csv_path.unlink()
    base, peak, secs, read, added, mapper = out
    if int(read) != n or int(added) != n:
        raise SystemExit(f"memory child imported {added}/{read} of {n}")
    return int(base) / 1024, int(peak) / 1024, float(secs), int(mapper) / 1024   # KiB -> MiB


# -- main -------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-1m", action="store_true", help="measure peak memory at --rows only")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child-memory", nargs=3, metavar=("CSV", "PROPS", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(*map(Path, args.child_memory))
        return 0

    n = args.rows
    results: list[tuple[str, float, float, str, float]] = []   # name, secs, baseline secs, baseline, target
    notes: list[str] = []
    print(f"bench/import.py: {n:,} patrons, {os.cpu_count()} CPUs, "
          f"worker pool {os.environ.get('PATRON_TUI_WORKERS') or os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        folder = Path(tmp)
        props = folder / "sis.properties"
        props.write_text(PROPERTIES, encoding="utf-8")
        t0 = time.perf_counter()
        base_csv = write_csv(folder / "sis.csv", n, 0)
        csv10 = write_csv(folder / "sis10.csv", n, 10)
        csv11 = write_csv(folder / "sis11.csv", n, 11)
        print(f"wrote 3 CSV files of {base_csv.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s")
        now = "2026-09-15T08:00:00.000000Z"

        # raw baselines: parse first (not timed), then time the executemany upsert
        raw_store = setup_store(folder / "raw.db")
        raw = connect(raw_store.path)
        t_parse_start = time.perf_counter()
        params0 = parse_raw(base_csv, now)
        t_parse = time.perf_counter() - t_parse_start
        params10 = parse_raw(csv10, now)
        started = time.perf_counter()
        raw_upsert(raw, params0)
        t_raw_empty = time.perf_counter() - started
        started = time.perf_counter()
        raw_upsert(raw, params0)
        t_raw_full = time.perf_counter() - started
        started = time.perf_counter()
        raw_upsert(raw, params10)
        t_raw_full10 = time.perf_counter() - started
        raw.close()
        del params0, params10

        # the engine
        store = setup_store(folder / "engine.db")
        t_full, s = engine_import(store, base_csv, props, errors_only=True)
        assert s["added"] == n, s
        notes.append(f"Full, empty, errors only: {counts(s)}")
        store_i = setup_store(folder / "engine-info.db")
        t_full_info, s = engine_import(store_i, base_csv, props, errors_only=False)
        assert s["added"] == n, s
        conn = store_i.connect()
        info_msgs = conn.execute("SELECT count(*) FROM run_messages WHERE code = 'added'").fetchone()[0]
        conn.close()
        notes.append(f"Full, empty, info messages: {counts(s)}, {info_msgs:,} 'added' messages persisted")
        t_same, s = engine_import(store, base_csv, props)
        assert s["unchanged"] == n, s
        notes.append(f"Full, full, unchanged: {counts(s)}")
        t_10, s = engine_import(store, csv10, props)
        assert s["updated"] == sum(1 for i in range(n) if i % 10 == 3), s
        notes.append(f"Full, full, 10% changed: {counts(s)}")
        # Incremental takes half a second: a single timing of it (or of its baseline) moves by a
        # third with the machine's load, so both are the best of INCREMENTAL_REPEATS, taken in
        # turns; between two, an untimed Incremental of the 10% file puts the 1% back
        t_inc = t_csv = float("inf")
        for repeat in range(INCREMENTAL_REPEATS):
            started = time.perf_counter()
            csv_pass(csv11)
            t_csv = min(t_csv, time.perf_counter() - started)
            t, s = engine_import(store, csv11, props, mode="incremental")
            assert s["updated"] == sum(1 for i in range(n) if i % 100 == 7), s
            t_inc = min(t_inc, t)
            if repeat < INCREMENTAL_REPEATS - 1:
                engine_import(store, csv10, props, mode="incremental")
        notes.append(f"Incremental, 1% changed: {counts(s)} (best of {INCREMENTAL_REPEATS}, "
                     f"as its csv.reader baseline)")
        conn = store.connect()
        journal = conn.execute("SELECT count(*) FROM change_journal WHERE table_name = 'patrons'"
                               " AND run_id IS NOT NULL").fetchone()[0]
        conn.close()

        results = [
            ("Full -> empty (errors only)", t_full, t_raw_empty, "raw upsert, parsed", 2.0),
            ("Full -> empty (info per record)", t_full_info, t_raw_empty, "raw upsert, parsed", 2.0),
            ("Full -> empty (errors only)", t_full, t_raw_empty + t_parse, "raw upsert + csv parse", None),
            ("Full -> full, unchanged", t_same, t_raw_full, "raw upsert, parsed", 2.0),
            ("Full -> full, 10% changed", t_10, t_raw_full10, "raw upsert, parsed", 2.0),
            ("Incremental, 1% changed", t_inc, t_csv, "csv.reader pass", 2.0),
        ]
        baselines = [
            ("raw upsert -> empty, parsed", t_raw_empty),
            ("csv parse for the raw upsert", t_parse),
            ("raw upsert -> full, unchanged", t_raw_full),
            ("raw upsert -> full, 10% changed", t_raw_full10),
            ("csv.reader pass", t_csv),
        ]

        header = f"{'scenario':34} {'seconds':>8} {'rec/s':>9} | {'baseline':24} {'seconds':>8} {'rec/s':>9} | {'ratio':>6} {'target':>7}  result"
        print()
        print(header)
        print("-" * len(header))
        misses = []
        for name, t, tb, bname, target in results:
            ratio = t / tb
            verdict = "-" if target is None else "met" if ratio <= target else "MISSED"
            if verdict == "MISSED":
                misses.append(f"{name} vs {bname}: {ratio:.2f}x")
            print(f"{name:34} {t:8.2f} {n / t:9,.0f} | {bname:24} {tb:8.2f} {n / tb:9,.0f} |"
                  f" {ratio:5.2f}x {'<= %.0fx' % target if target else '(info)':>7}  {verdict}")
        print()
        for name, tb in baselines:
            print(f"  baseline {name:34} {tb:7.2f} s  {n / tb:10,.0f} rec/s")
        for line in notes:
            print(f"  {line}")
        print(f"  change_journal rows for patrons written by the engine's runs on one store: {journal:,}")

        if not args.skip_memory:
            print()
            sizes = [n] + ([] if args.skip_1m or args.memory_rows <= n else [args.memory_rows])
            mem = []
            for size in sizes:
                base, peak, secs, mapper = measure_memory(size, folder, props)
                mem.append((size, base, peak + mapper))
                print(f"peak memory, Full -> empty, {size:>9,} rows: {peak:7.1f} MiB + mapping process {mapper:.1f} MiB "
                      f"(child at start, modules loaded: {base:.1f} MiB; import {secs:.1f} s, {size / secs:,.0f} rec/s)")
            if len(mem) == 2:
                (n1, b1, p1), (n2, b2, p2) = mem
                growth = p2 / p1   # both processes together
                # "flat": far from proportional to the rows (rows ratio 5x); allow < 1.5x
                flat = growth < 1.5
                print(f"peak ratio {n2:,} / {n1:,} rows: {growth:.2f}x (rows {n2 / n1:.0f}x; "
                      f"above the child's start {p1 - b1:.1f} -> {p2 - b2:.1f} MiB) -> "
                      f"{'met (flat)' if flat else 'MISSED (grows with the file)'}")
                if not flat:
                    misses.append(f"peak memory grows {growth:.2f}x from {n1:,} to {n2:,} rows")
        print()
        if misses:
            print("targets missed:")
            for m in misses:
                print(f"  - {m}")
        else:
            print("all targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
