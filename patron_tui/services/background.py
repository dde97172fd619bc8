"""Runs handed to the scheduler ("run in background").

A long run need not live as long as the console that asked for it: `queue_run` leaves it in
the database as a run row (status 'queued', started_by 'scheduler', its kind and params as
JSON), and the scheduler process (`patron-tui scheduler` / `run-due`, services/jobs/scheduler.py)
picks it up on its next pass and executes it by kind through this registry. Everything the
run says goes to `runs` and `run_messages`, so a console opened later follows it there.

A capability makes its runs queueable with one line at module level:

    register_background("batch_update", run_batch_from_params, permission="batch_tools")

where the function is a run function (`fn(ctx) -> summary`) that reads what it needs from
`ctx.params` (which must be JSON). `KNOWN_MODULES` lists the modules the scheduler imports so
their registrations exist in its process. The permission is checked when the run is queued
(as the operator queuing it) and again when it starts (an operator may have lost it since);
the run writes as the operator who queued it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from patron_tui.runs import RunContext, RunEngine, RunFailed, RunHandle
from patron_tui.services.permissions import Permission, refusal, require
from patron_tui.store import Store
from patron_tui.store import runlog

__all__ = ["BackgroundKind", "KNOWN_MODULES", "UnknownKind", "kinds", "load_registrations", "pick_up",
           "queue_run", "queued_message", "register_background"]

log = logging.getLogger("patron_tui.background")

RunFunction = Callable[[RunContext], "dict[str, Any] | None"]

#: modules whose import registers background kinds (a module not written yet is skipped)
KNOWN_MODULES = (
    "patron_tui.services.background",
    "patron_tui.services.batch",
    "patron_tui.services.queue_fill",
    "patron_tui.services.utilities",
)


class UnknownKind(ValueError):
    """No function is registered for a run kind."""


@dataclass(frozen=True)
class BackgroundKind:
    kind: str
    fn: RunFunction
    permission: Permission | None


_REGISTRY: dict[str, BackgroundKind] = {}


def register_background(kind: str, fn: RunFunction, *, permission: Permission | None = None) -> None:
    """Let runs of `kind` be queued for the scheduler; `fn(ctx)` executes one (its arguments
    are in `ctx.params`). Registering a kind again replaces its function."""
    _REGISTRY[kind] = BackgroundKind(kind, fn, permission)


def load_registrations() -> None:
    for name in KNOWN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:   # a capability not written yet
            log.debug("background: %s not loaded (%s)", name, exc)


def kinds() -> dict[str, BackgroundKind]:
    return dict(_REGISTRY)


def queue_run(conn: sqlite3.Connection, operator: str, kind: str, title: str,
              params: dict[str, Any] | None = None, *, job_id: int | None = None,
              mode: str | None = None) -> int:
    """Leave a run of `kind` for the scheduler; returns its run id. UnknownKind when nothing
    can execute that kind; PermissionDenied when `operator` lacks the kind's permission."""
    load_registrations()
    entry = _REGISTRY.get(kind)
    if entry is None:
        raise UnknownKind(f"runs of kind {kind!r} cannot be handed to the scheduler "
                          f"(known: {', '.join(sorted(_REGISTRY)) or 'none'})")
    if entry.permission is not None:
        require(conn, operator, entry.permission)
    return runlog.queue_background(conn, kind=kind, title=title, operator=operator, params=params,
                                   job_id=job_id, mode=mode)


def queued_message(run_id: int) -> str:
    """What the console and the CLI say once a run is handed to the scheduler."""
    return (f"Queued as run {run_id}; the scheduler service (patron-tui scheduler) runs it; "
            f"follow it in the Job Manager.")


def _guarded(entry: BackgroundKind) -> RunFunction:
    def run(ctx: RunContext) -> dict[str, Any] | None:
        if entry.permission is not None:
            problem = refusal(ctx.conn, ctx.operator, entry.permission)
            if problem is not None:
                raise RunFailed(problem)
        ctx.info(f"Started by the scheduler (process {os.getpid()}) for {ctx.operator}.", code="background")
        return entry.fn(ctx)
    return run


def pick_up(engine: RunEngine, store: Store, *, limit: int | None = None) -> list[RunHandle]:
    """Claim the queued background runs and start them on `engine` (oldest first, at most
    `limit`); returns their handles (the caller waits, or not)."""
    load_registrations()
    handles: list[RunHandle] = []
    conn = store.connect()
    try:
        while limit is None or len(handles) < limit:
            row = runlog.claim_background(conn, _REGISTRY, pid=os.getpid())
            if row is None:
                break
            entry = _REGISTRY[row["kind"]]
            params = {k: v for k, v in row["params"].items() if k != runlog.BACKGROUND_PARAM}
            log.info("background run %s (%s) picked up", row["id"], row["kind"])
            handles.append(engine.adopt(row["id"], row["kind"], row["title"], _guarded(entry),
                                        operator=row["operator"], params=params))
    finally:
        conn.close()
    return handles


# -- the kinds this module knows: imports and job runs --------------------------------------------

def _run_import(ctx: RunContext) -> dict[str, Any]:
    from patron_tui.services.imports.engine import run_import

    p = ctx.params
    if not p.get("file") or not p.get("properties"):
        raise RunFailed("this queued import names no file or no properties file")
    return run_import(ctx, path=p["file"], properties_path=p["properties"], mode=p.get("mode") or "full",
                      dry_run=bool(p.get("dry_run")), encoding=p.get("encoding"),
                      summary_errors_only=bool(p.get("errors_only")))


def _run_job(ctx: RunContext) -> dict[str, Any]:
    from patron_tui.services.jobs.runner import run_job

    p = ctx.params
    if not p.get("job"):
        raise RunFailed("this queued job run names no job")
    return run_job(ctx, p["job"], p.get("mode") or "full")


register_background("import", _run_import, permission="import_patrons")
register_background("job", _run_job, permission="manage_jobs")
