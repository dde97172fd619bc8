"""Shared by the utility tests: run a utility through the engine, and preview-then-run."""

from __future__ import annotations

from patron_tui.runs import RunEngine
from patron_tui.services import utilities as U
from patron_tui.services.utilities import Selections
from patron_tui.store import ChangesetWriter, Store, utc_now


def run(store: Store, name: str, sel: Selections, options, *, fingerprint=None, operator="tester"):
    engine = RunEngine(store, pool_size=1)
    try:
        handle = U.start_utility(engine, store, operator, name, sel, options, fingerprint=fingerprint)
        handle.wait()
    finally:
        engine.shutdown(cancel_running=False)
    return handle


def preview_then_run(store: Store, name: str, sel: Selections, options, *, operator="tester"):
    """(the whole plan the preview came from, the preview, the run's handle); the run got the
    preview's fingerprint and succeeded, and its summary counts are the preview's."""
    conn = store.connect()
    try:
        pv = U.preview(conn, name, sel, options, operator)
        plan = U.plan_for(conn, name, sel, options, operator)
    finally:
        conn.close()
    assert plan.fingerprint == pv.fingerprint and len(plan.changes) == pv.changes
    handle = run(store, name, sel, options, fingerprint=pv.fingerprint, operator=operator)
    assert handle.status.value == "succeeded", handle.error
    assert handle.summary["changed"] == pv.changes - handle.summary["errors"]
    assert handle.summary["skipped"] == len(pv.skipped)
    return plan, pv, handle


def insert(store: Store, table: str, rows: list[dict]) -> list[int]:
    conn = store.connect()
    try:
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            return [w.insert(table, row) for row in rows]
    finally:
        conn.close()


def add_operator(store: Store, login: str, *, level: int, batch=True, reset=False) -> None:
    insert(store, "operators", [{"login_name": login, "security_level": level, "may_use_batch_tools": int(batch),
                                 "may_reset_passwords": int(reset), "created_at": utc_now()}])


def ids_by_barcode(store: Store) -> dict[str, int]:
    conn = store.connect()
    try:
        return {r[0]: r[1] for r in conn.execute("SELECT barcode, id FROM patrons WHERE barcode IS NOT NULL")}
    finally:
        conn.close()
