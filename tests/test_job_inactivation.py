"""A job's Inactivation / Deletion rules after its Full update (runner + services/inactivation)."""

from __future__ import annotations

from pathlib import Path

from patron_tui.runs import RunEngine
from patron_tui.services.inactivation import DeleteInactive, InactivationRules
from patron_tui.services.jobs import Job, save_job
from patron_tui.services.jobs.runner import run_job
from patron_tui.store import ChangesetWriter, Store

from tests.conftest import district
from tests.jobs_helpers import HEADER, PROPS

SCHOOLS = ("HS", "ELM")


def rows(schools=SCHOOLS, leave=()) -> list[str]:
    return [f"{s}{i},{s}B{i},Last{s}{i},First,{s}" for s in schools for i in range(30) if f"{s}{i}" not in leave]


def setup(tmp_path: Path, rules: InactivationRules, **options) -> tuple[Store, Path]:
    store = district(tmp_path / "district.db", sites=(("HS", "High School"), ("ELM", "Elm Elementary")))
    csv_path = tmp_path / "students.csv"
    props = tmp_path / "students.properties"
    props.write_text(PROPS, encoding="utf-8")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        save_job(w, Job(name="Students", path=str(csv_path), properties_path=str(props),
                        inactivation=rules, options=options or {}))
    conn.close()
    return store, csv_path


def run(store: Store, csv_path: Path, lines: list[str], mode: str = "full"):
    csv_path.write_text(HEADER + "".join(r + "\n" for r in lines), encoding="utf-8")
    conn = store.connect()
    job_id = conn.execute("SELECT id FROM jobs WHERE name = 'Students'").fetchone()[0]
    conn.close()
    engine = RunEngine(store, pool_size=1)
    try:
        return engine.execute("job", f"Job Students ({mode})",
                              lambda ctx: run_job(ctx, "Students", mode, settle_seconds=0),
                              job_id=job_id, mode=mode)
    finally:
        engine.shutdown()


def backdate(store: Store, when: str = "2026-01-05T00:00:00.000000Z") -> None:
    """As if every patron had last been delivered by an import long ago."""
    conn = store.connect()
    ids = [r[0] for r in conn.execute("SELECT id FROM patrons WHERE is_system = 0")]
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.stamp("patrons", "last_seen_import_at", when, ids)
    conn.close()


def patrons(store: Store) -> dict[str, dict]:
    conn = store.connect()
    try:
        return {r["district_id"]: dict(r) for r in conn.execute("SELECT * FROM patrons WHERE is_system = 0")}
    finally:
        conn.close()


RULES = InactivationRules(records_read_greater_than=50, inactivate_days=30,
                          delete_inactive=DeleteInactive(days=0, condition="regardless"))


def test_a_truncated_file_trips_the_threshold_and_not_one_patron_changes(tmp_path):
    store, csv_path = setup(tmp_path, RULES)
    assert run(store, csv_path, rows()).summary["added"] == 60
    backdate(store)
    before = patrons(store)
    # tonight's file lacks a whole school: 30 records read, not more than the threshold of 50
    h = run(store, csv_path, rows(schools=("HS",)))
    assert h.status.value == "succeeded"
    assert h.summary["read"] == 30 and "threshold of 50" in h.summary["inactivation"]["held"]
    after = patrons(store)
    assert after.keys() == before.keys()
    for did, row in after.items():
        changed = {k for k in row if row[k] != before[did][k]}
        # the import's own "last seen" stamp on the records the file carried, nothing else
        assert changed <= {"last_seen_import_at"}, (did, changed)
        assert row["status"] == "Active"
    conn = store.connect()
    (held,) = conn.execute("SELECT text FROM run_messages WHERE run_id = ? AND code = 'inactivation_held'",
                           (h.run_id,)).fetchone()
    conn.close()
    assert "file may be incomplete" in held


def test_rules_run_after_a_full_update_and_the_summary_names_each_patron(tmp_path):
    store, csv_path = setup(tmp_path, RULES)
    run(store, csv_path, rows())
    backdate(store)
    h = run(store, csv_path, rows(leave={"ELM3", "HS7"}))
    assert h.status.value == "succeeded", h.error
    assert {k: h.summary["inactivation"][k] for k in ("inactivated", "deleted", "kept_back")} == {"inactivated": 2, "deleted": 0, "kept_back": 0}
    assert h.summary["inactivation"]["ran"] is True
    now = patrons(store)
    assert {d for d, r in now.items() if r["status"] == "Inactive"} == {"ELM3", "HS7"}
    conn = store.connect()
    msgs = conn.execute("SELECT code, patron_id, text FROM run_messages WHERE run_id = ? AND code = 'inactivated'",
                        (h.run_id,)).fetchall()
    conn.close()
    assert sorted(m[1] for m in msgs) == sorted(now[d]["id"] for d in ("ELM3", "HS7"))
    assert all("Inactivate patrons not updated in the past 30 days" in m[2] for m in msgs)

    # the next Full (the same two still absent): inactive for 0 days or more -> deleted
    h = run(store, csv_path, rows(leave={"ELM3", "HS7"}))
    assert h.summary["inactivation"]["deleted"] == 2
    assert "ELM3" not in patrons(store) and len(patrons(store)) == 58


def test_incremental_runs_no_rule_and_kept_back_patrons_are_listed(tmp_path):
    store, csv_path = setup(tmp_path, RULES)
    run(store, csv_path, rows())
    backdate(store)
    h = run(store, csv_path, rows(leave={"HS1"}), mode="incremental")
    assert "only after a Full" in h.summary["inactivation"]["held"]
    assert all(r["status"] == "Active" for r in patrons(store).values())
    # a patron with a checkout, inactivated, then due for deletion: kept back without the option
    h = run(store, csv_path, rows(leave={"HS1"}))
    assert h.summary["inactivation"]["inactivated"] == 1
    conn = store.connect()
    pid = conn.execute("SELECT id FROM patrons WHERE district_id = 'HS1'").fetchone()[0]
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("checkouts", {"patron_id": pid, "item_barcode": "I1", "checked_out_at": "2026-01-01",
                               "due_at": "2026-01-15"})
    conn.close()
    h = run(store, csv_path, rows(leave={"HS1"}))
    assert {k: h.summary["inactivation"][k] for k in ("inactivated", "deleted", "kept_back")} == {"inactivated": 0, "deleted": 0, "kept_back": 1}
    assert h.summary["inactivation"]["ran"] is True
    assert "HS1" in patrons(store)
    conn = store.connect()
    (text,) = conn.execute("SELECT text FROM run_messages WHERE run_id = ? AND code = 'kept_back'",
                           (h.run_id,)).fetchone()
    conn.close()
    assert "does not allow" in text
