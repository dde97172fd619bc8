"""Shared helpers for the jobs tests: a district store with sites, a CSV and its properties file."""

from __future__ import annotations

from pathlib import Path

from patron_tui.services.jobs import Job, parse_schedule, save_job
from patron_tui.store import ChangesetWriter, Store

PROPS = """\
encoding=utf-8
match=district_id
field.district_id=ID
field.barcode=Barcode
field.last_name=Last
field.first_name=First
field.site=School
required=barcode,last_name
"""
HEADER = "ID,Barcode,Last,First,School\n"


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
