"""Shared helpers for the jobs and import tests: a district store with sites, a CSV and its
properties file."""

from __future__ import annotations

from pathlib import Path

from patron_tui.services.jobs import Job, parse_schedule, save_job
from patron_tui.store import ChangesetWriter, Store

#: the district CSVs' columns: patron field -> CSV column
COLUMNS = {"district_id": "ID", "barcode": "Barcode", "last_name": "Last", "first_name": "First", "site": "School"}


def props_text(**extra: str) -> str:
    """The properties file of a district CSV (`COLUMNS`, then `extra`: field -> column), UTF-8,
    matched on district_id, barcode and last name required."""
    fields = {**COLUMNS, **extra}
    return ("encoding=utf-8\nmatch=district_id\n" + "".join(f"field.{k}={v}\n" for k, v in fields.items())
            + "required=barcode,last_name\n")


def write_import(folder: Path, rows: list[str], *, name: str = "in.csv", props_name: str = "in.properties",
                 **extra: str) -> tuple[Path, Path]:
    """Write a district CSV (its header, then `rows`) and its properties file (`props_text(**extra)`)
    into `folder`: (csv path, properties path)."""
    csv_path = folder / name
    header = ",".join([*COLUMNS.values(), *extra.values()])
    csv_path.write_text(header + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    props = folder / props_name
    props.write_text(props_text(**extra), encoding="utf-8")
    return csv_path, props


PROPS = props_text()
HEADER = ",".join(COLUMNS.values()) + "\n"


def make_store(tmp_path: Path, operator: str = "tester") -> Store:
    store = Store.create(tmp_path / "district.db", operator=operator)
    conn = store.connect()
    with ChangesetWriter(conn, operator=operator, run_id=None) as w:
        w.insert("sites", {"code": "HS", "name": "High School"})
    conn.close()
    return store


def write_files(tmp_path: Path, rows: list[str], name: str = "students.csv") -> tuple[Path, Path]:
    folder = tmp_path / "sis"
    folder.mkdir(exist_ok=True)
    csv_path = folder / name
    csv_path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    props = tmp_path / "students.properties"
    props.write_text(PROPS, encoding="utf-8")
    return csv_path, props


def add_job(store: Store, name: str = "Students", *, path: Path, props: Path,
            schedule: str = "", **kw) -> Job:
    conn = store.connect()
    try:
        with ChangesetWriter(conn, operator=store.operator, run_id=None) as w:
            return save_job(w, Job(name=name, path=str(path), properties_path=str(props),
                                   schedule=parse_schedule(schedule), **kw))
    finally:
        conn.close()
