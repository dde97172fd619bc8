"""`patron-tui undo`, `patron-tui audit` and `patron-tui prune-journal`: the headless twins of
undoing a run, the audit trail and the journal's pruning run (services/undo.py,
services/audit.py).

`undo RUN_ID --dry-run` prints the plan, conflicts included, and changes nothing. Without it, the
undo is a run at once (its row first, then its plan): conflicts (rows a later run changed again,
before it started or while it planned) refuse it, are listed, and change nothing, unless
`--skip-conflicts` (leave them as they are now) or `--overwrite` (put the before-images back
anyway) says what to do; the refused undo stays in the run history as a failed run. Exit
codes: 0 done (or a plan printed), 2 refused or failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from patron_tui.cli_common import Refused, add_db, fail, open_store, outcome, run_json, run_summary, run_to_end

COMMANDS = ("undo", "audit", "prune-journal")
_SHOWN = 50   # conflicts listed in text; --json lists every one


def register(sub) -> None:
    u = sub.add_parser("undo", help="undo a run: put back every before-image it journalled, as a new run",
                       description="Undo a completed run (import, inactivation/deletion, batch update, utility, "
                       "conflict resolution, a previous undo) in one transaction, as a run of its own that "
                       "can itself be undone. Rows a later run changed again are conflicts: choose "
                       "--skip-conflicts or --overwrite.")
    add_db(u)
    u.add_argument("run_id", type=int, metavar="RUN_ID")
    u.add_argument("--dry-run", action="store_true", help="print what would be restored and the conflicts")
    how = u.add_mutually_exclusive_group()
    how.add_argument("--overwrite", action="store_true", help="put rows a later run changed back anyway")
    how.add_argument("--skip-conflicts", action="store_true", help="leave rows a later run changed as they are")
    u.add_argument("--json", action="store_true", help="print one JSON object")

    a = sub.add_parser("audit", help="the audit trail: who changed what, when, in which run, from what to what")
    add_db(a)
    a.add_argument("--patron", metavar="BARCODE", help="a patron's barcode, district ID or #id (and its "
                   "notes, charges, profiles, ...)")
    a.add_argument("--operator", metavar="NAME", help="changes made by this login name")
    a.add_argument("--run", type=int, metavar="ID", help="changes made by this run")
    a.add_argument("--since", metavar="DATE", help="changes on or after this date (YYYY-MM-DD or MM/DD/YYYY)")
    a.add_argument("--table", metavar="TABLE", help="changes to this table only")
    a.add_argument("--limit", type=int, default=100, metavar="N", help="at most N entries (default 100)")
    a.add_argument("--offset", type=int, default=0, metavar="N", help="skip the N newest entries")
    a.add_argument("--json", action="store_true", help="print the entries as JSON")

    p = sub.add_parser("prune-journal", help="delete the change journal of runs older than the retention "
                       "(journal_retention_days); they can no longer be undone")
    add_db(p)
    p.add_argument("--dry-run", action="store_true", help="say what would be pruned; change nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main_audit(db_path: Path, args: argparse.Namespace) -> int:
    try:
        if args.command == "undo":
            return _cmd_undo(db_path, args)
        if args.command == "audit":
            return _cmd_audit(db_path, args)
        return _cmd_prune(db_path, args)
    except Refused as exc:
        return fail(str(exc))


def _value(v: Any) -> str:
    from patron_tui.textsafe import visible

    if v is None:
        return "(none)"
    if isinstance(v, (bytes, bytearray)):
        return f"({len(v)} bytes)"
    return repr(v) if isinstance(v, str) else visible(v)


def _print_plan(plan) -> None:
    from patron_tui.textsafe import visible

    print(visible(plan.describe()))
    for c in plan.conflicts[:_SHOWN]:
        print(f"  conflict: {visible(c.describe())}")
        for f, left, now in c.fields[:10]:
            print(f"      {visible(f)}: run left {_value(left)}, now {_value(now)}")
    if len(plan.conflicts) > _SHOWN:
        print(f"  ... and {len(plan.conflicts) - _SHOWN:,} more conflicts (--json lists them all)")


def _cmd_undo(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.undo import UndoRefused, check_undo, conflicts_refusal, plan_undo, start_undo

    from patron_tui.services.permissions import PermissionDenied, undo_refusal

    store, conn = open_store(db_path)
    try:   # an undo is planned by its run (its row first); a dry run plans here
        plan = plan_undo(conn, args.run_id) if args.dry_run else check_undo(conn, args.run_id)
        denied = None if args.dry_run else undo_refusal(conn, store.operator, args.run_id)
    finally:
        conn.close()
    if denied:
        raise Refused(f"{denied} Nothing was undone.")
    if plan.refusal:
        if args.json:
            print(json.dumps({"dry_run": args.dry_run, **plan.to_json()}, indent=2, ensure_ascii=False))
            return 2
        raise Refused(plan.refusal)
    if args.dry_run:
        if args.json:
            print(json.dumps({"dry_run": True, **plan.to_json()}, indent=2, ensure_ascii=False))
        else:
            _print_plan(plan)
            print("(dry run: nothing changed)")
        return 0
    # without a choice, conflicts refuse the undo, whether they are there as it plans or
    # appear before its write transaction (the run checks inside it)
    checked: list = []
    handle = run_to_end(store, lambda engine: start_undo(
        engine, store, store.operator, args.run_id, on_plan=checked.append,
        on_conflict="overwrite" if args.overwrite else "skip" if args.skip_conflicts else "refuse"),
        (UndoRefused, PermissionDenied))
    s = run_summary(handle)
    if s.get("conflicts_refused") and checked:
        plan = checked[-1]
        if args.json:
            print(json.dumps({"dry_run": False, "refused": "conflicts", **plan.to_json(),
                              "undo_run_id": handle.run_id, "status": handle.status.value}, indent=2,
                             ensure_ascii=False))
        else:
            _print_plan(plan)
        return fail(f"{conflicts_refusal(s['conflicts_refused'])} "
                    "Run again with --skip-conflicts (leave them as they are) or --overwrite (put them back).")
    return outcome(handle, args.json, run_json(handle, undoes=args.run_id), ensure_ascii=False,
                   done=f"run {handle.run_id}: undid run {args.run_id}: {s.get('reinserted', 0)} rows re-inserted, "
                   f"{s.get('deleted', 0)} deleted, {s.get('restored', 0)} restored; {s.get('conflicts', 0)} "
                   f"conflicts {'overwritten' if args.overwrite else 'skipped'}",
                   failed=f"the undo did not run: {handle.error or handle.status.value}")


def _since(text: str | None) -> dt.date | None:
    if text is None:
        return None
    for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return dt.datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            pass
    raise Refused(f"--since: {text!r} is not a date (YYYY-MM-DD or MM/DD/YYYY)")


def _cmd_audit(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.audit import AuditError, history
    from patron_tui.textsafe import visible

    since = _since(args.since)
    _store, conn = open_store(db_path)
    try:
        try:
            entries = history(conn, patron=args.patron, operator=args.operator, run_id=args.run, since=since,
                              table=args.table, limit=max(1, args.limit), offset=max(0, args.offset))
        except AuditError as exc:
            raise Refused(str(exc)) from None
    finally:
        conn.close()
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2, ensure_ascii=False))
        return 0
    if not entries:
        print("no changes match")
        return 0
    for e in entries:
        run = f"run {e.run_id} ({visible(e.run_title)})" if e.run_id is not None else "no run"
        print(f"{e.ts[:19].replace('T', ' ')}  {visible(e.operator)}  {run}  {e.op} {e.table} {visible(e.key)}")
        for c in e.changes:
            print(f"    {visible(c.field)}: {_value(c.before)} -> {_value(c.after)}")
    return 0


def _cmd_prune(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.audit import prune_preview, start_prune

    from patron_tui.services.permissions import refusal

    store, conn = open_store(db_path)
    try:
        refused = None if args.dry_run else refusal(conn, store.operator, "prune_journal")
        if refused:   # a dry run only reads
            raise Refused(f"{refused} Nothing was pruned.")
        preview = prune_preview(conn)
    finally:
        conn.close()
    if args.dry_run:
        if args.json:
            print(json.dumps({"dry_run": True, **preview}, indent=2))
        else:
            print(f"would prune {preview['rows']:,} journal rows of {preview['runs']:,} runs that ended before "
                  f"{preview['cutoff'][:10]} (retention {preview['retention_days']} days); dry run: nothing changed")
        return 0
    handle = run_to_end(store, lambda engine: start_prune(engine, store, store.operator))
    s = run_summary(handle)
    return outcome(handle, args.json, run_json(handle),
                   done=f"run {handle.run_id}: pruned {s.get('rows', 0):,} journal rows of {s.get('runs', 0):,} "
                   "runs; those runs can no longer be undone",
                   failed=f"the pruning run did not finish: {handle.error or handle.status.value}")
