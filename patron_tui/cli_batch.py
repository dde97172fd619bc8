"""`patron-tui batch-update` and `patron-tui fill-queues`: the headless twins of the
console's Batch Update Patron Profile tool and of its service-queue filler.

`batch-update --dry-run` prints the preview and changes nothing; without it the batch runs
(one run, one transaction), then its summary and error report are printed; with
`--fill-queues` the batch hands its queues to a filler (queue_fill.hand_off): one it starts runs
in the foreground until every queue is filled; one already at work (another process's) takes
them. The summary names that filler run either way.
`--background` hands the batch to the scheduler service instead (it starts the filler after the
batch); the command prints the queued run's id and returns.
Exit codes: 0 done, 1 done with refused patrons (the error report), 2 refused or failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from patron_tui.cli_common import Refused, add_db, fail, open_store, run_json, run_summary

COMMANDS = ("batch-update", "fill-queues")


def register(sub) -> None:
    p = sub.add_parser(
        "batch-update", help="Batch Update Patron Profile: change one medium's profile of a query set's patrons",
        description="Change the MEDIUM profile of every patron of a query set (or statement). Options not "
        "given leave their field unchanged; --nightly-debug is always applied (default off). A patron "
        "without a profile for the medium gets one. Needs the 'may use batch tools' permission.")
    add_db(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--set", dest="set_name", metavar="NAME", help="the saved query set")
    who.add_argument("--query", metavar="STATEMENT", help='a search statement ("" = every patron)')
    p.add_argument("--medium", required=True, metavar="M", help="the medium whose profile changes (required)")
    p.add_argument("--status-of-service", metavar="S")
    p.add_argument("--max-items-out", type=int, metavar="N", help="0-99")
    p.add_argument("--items-per-shipment", type=int, metavar="N", help="1-99")
    p.add_argument("--service-frequency", metavar="F")
    nsd = p.add_mutually_exclusive_group()
    nsd.add_argument("--next-service-date", metavar="MM/DD/YYYY")
    nsd.add_argument("--space", metavar="START:EVERY_DAYS:GROUP_SIZE[:ORDER_FIELD]",
                     help="space Next Service Dates: START (MM/DD/YYYY) for the first GROUP_SIZE patrons, "
                     "START + EVERY_DAYS for the next group, ...; ORDER_FIELD: last_name (default), barcode, "
                     "district_id, created_at, id (ties by patron id)")
    for flag in ("duplication-circulation", "auto-select"):
        p.add_argument(f"--{flag}", choices=("on", "off"))
    p.add_argument("--nightly-debug", choices=("on", "off"), default="off",
                   help="ALWAYS applied: off (the default) turns it off for every patron of the set")
    p.add_argument("--add-subject", action="append", default=[], metavar="CODE",
                   help="add this subject to every profile (repeat for more)")
    p.add_argument("--fill-queues", action="store_true",
                   help="fill the profiles' service queues (the filler runs after the batch)")
    p.add_argument("--queue-length", type=int, metavar="N", help="1-200")
    p.add_argument("--dry-run", action="store_true", help="print the preview; change nothing")
    p.add_argument("--background", action="store_true",
                   help="hand the batch (and then the queue filler) to the scheduler service (patron-tui "
                   "scheduler / run-due): queue it, print its run id and return")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    f = sub.add_parser("fill-queues", help="fill the service queues batch updates asked for (in the foreground)")
    add_db(f)
    f.add_argument("--json", action="store_true", help="print the filler run's result as JSON")


def _date(text: str, flag: str) -> date:
    for fmt in ("%m/%d/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            pass
    raise Refused(f"{flag}: {text!r} is not a date; write it MM/DD/YYYY")


def _update(args: argparse.Namespace):
    from pydantic import ValidationError

    from patron_tui.services.batch import BatchUpdate, Spacing

    fields: dict[str, Any] = {
        "medium": args.medium, "status_of_service": args.status_of_service, "max_items_out": args.max_items_out,
        "items_per_shipment": args.items_per_shipment, "service_frequency": args.service_frequency,
        "nightly_debug": args.nightly_debug == "on", "add_subjects": args.add_subject,
        "fill_service_queues": args.fill_queues, "queue_length": args.queue_length,
    }
    for dest in ("duplication_circulation", "auto_select"):
        if getattr(args, dest) is not None:
            fields[dest] = getattr(args, dest) == "on"
    if args.next_service_date:
        fields["next_service_date"] = _date(args.next_service_date, "--next-service-date")
    if args.space:
        parts = args.space.split(":")
        if len(parts) not in (3, 4):
            raise Refused("--space: give START:EVERY_DAYS:GROUP_SIZE[:ORDER_FIELD], e.g. 01/05/2026:7:50:last_name")
        try:
            every, size = int(parts[1]), int(parts[2])
        except ValueError:
            raise Refused("--space: EVERY_DAYS and GROUP_SIZE are whole numbers") from None
        try:
            fields["spacing"] = Spacing(start=_date(parts[0], "--space"), every_days=every, group_size=size,
                                        order_by=parts[3] if len(parts) == 4 else "last_name")
        except ValidationError as exc:
            raise Refused(f"--space: {_first_error(exc)}") from None
    try:
        return BatchUpdate(**fields)
    except ValidationError as exc:
        raise Refused(_first_error(exc)) from None


def _first_error(exc) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
    msg = err.get("msg", str(exc)).removeprefix("Value error, ")
    return f"--{where.replace('_', '-')}: {msg}" if where else msg


def main_batch(db_path: Path, args: argparse.Namespace) -> int:
    try:
        if args.command == "fill-queues":
            return _cmd_fill(db_path, args)
        return _cmd_batch(db_path, args)
    except Refused as exc:
        return fail(str(exc))


def _cmd_batch(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.runs import RunEngine
    from patron_tui.services import batch
    from patron_tui.services.permissions import PermissionDenied, require_batch_tools
    from patron_tui.store import runlog
    from patron_tui.textsafe import visible

    update = _update(args)
    if args.background and args.dry_run:
        raise Refused("--background and --dry-run do not go together: a dry run changes nothing, so run it here")
    store, conn = open_store(db_path)
    try:
        try:
            tgt = batch.target(conn, set_name=args.set_name, statement=args.query if args.set_name is None else None)
            if args.dry_run:
                pv = batch.preview(conn, tgt, update)
            elif args.background:
                run_id = batch.queue_batch_update(conn, store.operator, tgt, update)
            else:
                require_batch_tools(conn, store.operator)
        except (batch.BatchError, PermissionDenied) as exc:
            raise Refused(str(exc)) from None
    finally:
        conn.close()
    if args.background:
        from patron_tui.cli import queued_line

        if args.json:
            print(json.dumps({"run_id": run_id, "status": "queued", "kind": batch.BATCH_KIND,
                              "patrons": tgt.count}, indent=2))
        else:
            print(queued_line(run_id))
        return 0
    if args.dry_run:
        if args.json:
            print(json.dumps({"dry_run": True, **pv.model_dump(mode="json")}, indent=2, ensure_ascii=False))
            return 0
        print(f"{'set ' + repr(tgt.set_name) + ': ' if tgt.set_name else ''}{visible(tgt.statement or '(all patrons)')}"
              f" - {pv.patrons} patrons (dry run: nothing changed)")
        for fc in pv.fields:
            print(f"  {fc.label}: {fc.changes} profile{'s' if fc.changes != 1 else ''} change")
            for barcode, name, before, after in fc.samples:
                print(f"      {visible(barcode):14} {visible(name)[:30]:30} {visible(before)} -> {visible(after)}")
        print(f"  profiles created: {pv.profiles_created}; queues to fill: {pv.queues_to_fill}")
        for note in pv.notes:
            print(f"  note: {visible(note)}")
        return 0
    engine = RunEngine(store, pool_size=1)
    filler_id = filler = None
    try:
        try:
            handle = batch.start_batch_update(engine, store, store.operator, tgt, update)
        except (batch.BatchError, PermissionDenied) as exc:
            raise Refused(str(exc)) from None
        handle.wait()
        if handle.status.value == "succeeded" and update.fill_service_queues:
            from patron_tui.services.queue_fill import hand_off

            # the filler that fills this batch's queues: started here (run to its end), or one
            # already at work in another process, which takes them (queue_fill.hand_off)
            filler_id, filler = hand_off(engine, store, store.operator)
            if filler is not None:
                filler.wait()
    finally:
        engine.shutdown(cancel_running=False)
    conn = store.connect()
    try:
        report = batch.errors(conn, handle.run_id)
        at_work = None if filler_id is None or filler is not None else runlog.get_run(conn, filler_id)
    finally:
        conn.close()
    s = run_summary(handle)
    ok = handle.status.value == "succeeded"
    if args.json:
        out = {**run_json(handle), "errors": [{"barcode": b, "text": t} for b, t in report]}
        if filler is not None:
            out["filler"] = {"run_id": filler.run_id, "started": True, "status": filler.status.value,
                             "summary": run_summary(filler)}
        elif at_work is not None:
            out["filler"] = {"run_id": filler_id, "started": False, "status": at_work["status"],
                             "summary": at_work["summary"] or {}}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    elif ok:
        by = f" (queue filler run {filler_id})" if filler_id is not None else ""
        print(f"run {handle.run_id}: {s.get('patrons', 0)} patrons: {s.get('profiles_updated', 0)} profiles updated, "
              f"{s.get('profiles_created', 0)} created, {s.get('unchanged', 0)} unchanged, "
              f"{s.get('errors', 0)} errors, {s.get('queues_queued', 0)} queues queued{by}")
        if filler is not None:
            fs = filler.summary
            print(f"run {filler.run_id}: queue filler {filler.status.value}: {fs.get('queues_filled', 0)} queues, "
                  f"{fs.get('titles_added', 0)} titles")
        elif filler_id is not None:
            print(f"run {filler_id}: queue filler already at work (started elsewhere): it fills these queues "
                  f"(`patron-tui summary {filler_id}` shows it)")
    if not ok:
        if not args.json:
            fail(f"the batch update did not run: {handle.error or handle.status.value}; nothing was changed")
        return 2
    if report:
        print(f"patron-tui: {len(report)} patron{'s' if len(report) != 1 else ''} could not be updated "
              "(the error report):", file=sys.stderr)
        for barcode, text in report:
            print(f"  [{visible(barcode)}] {visible(text)}", file=sys.stderr)
        return 1
    return 0


def _cmd_fill(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.runs import RunEngine
    from patron_tui.services.queue_fill import live_filler, pending, start_filler

    from patron_tui.services.permissions import refusal

    store, conn = open_store(db_path)
    refused = refusal(conn, store.operator, "fill_queues")
    if refused:
        conn.close()
        raise Refused(refused)
    engine = RunEngine(store, pool_size=1)   # marks a killed filler's run interrupted
    try:
        waiting = pending(conn)
        live = live_filler(conn)
    finally:
        conn.close()
    try:
        if waiting and live is not None:
            raise Refused(f"a queue filler is already running (run {live}); it fills the {waiting} waiting queues")
        if not args.json:
            _print_messages(engine)
        handle = start_filler(engine, store, store.operator)
        if handle is not None:
            handle.wait()
    finally:
        engine.shutdown(cancel_running=False)
    if handle is None:
        if args.json:
            print(json.dumps({"run_id": None, "status": "nothing to do", "summary": {}}, indent=2))
        else:
            print("no service queue is waiting to be filled")
        return 0
    ok = handle.status.value == "succeeded"
    if args.json:
        print(json.dumps(run_json(handle), indent=2))
    elif not ok:
        fail(f"the queue filler stopped: {handle.error or handle.status.value}; the queues it filled stay "
             "filled and `patron-tui fill-queues` goes on with the rest")
    return 0 if ok else 2


def _print_messages(engine) -> None:
    from patron_tui.cli import _print_messages as show

    show(engine)
