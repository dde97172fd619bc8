"""`patron-tui utility`: the headless twin of the Utilities section.

    patron-tui utility --list [--json]
    patron-tui utility NAME (--set NAME | --query "..." | selection flags) [--OPTION VALUE ...]
                       [--dry-run] [--yes] [--background] [--json]

Each utility's option flags come from its Options model (field name with - for _; booleans
as --flag/--no-flag), so a new utility gets its flags for free; `patron-tui utility NAME
--help` lists them. Selection flags (--grade, --status, --homeroom, --site, --patron-type
repeat for more values) are AND-ed with --set/--query. --dry-run prints the preview and
changes nothing; a run previews first and runs with the preview's fingerprint, then prints
the operations report. A utility that removes data needs --yes to run. --background hands the
run to the scheduler service instead (queued with the preview's fingerprint; it prints the run id).
Exit codes: 0 done, 1 done but some patrons could not be changed, 2 refused or failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from patron_tui.cli_common import Refused, add_db, fail, failure_code, open_store, run_failed, run_to_end

COMMANDS = ("utility",)

#: flags the selection and the command use: an Options field must not be named like these
RESERVED = ("db", "set", "query", "grade", "status", "homeroom", "site", "patron_type", "graduation_from",
            "graduation_to", "graduated_within_days", "balance_min", "balance_max", "dry_run", "yes", "json",
            "list", "help", "background")


def register(sub) -> None:
    p = sub.add_parser(
        "utility", help="run a patron utility (Advance Patron Grade, Change Patron Status, ...) on a selection",
        description="Run a patron utility on a selection: `patron-tui utility --list` names them; "
        "`patron-tui utility NAME --help` shows a utility's selection and option flags. Needs the "
        "'may use batch tools' permission (Import, Export and Utilities).")
    add_db(p)
    p.add_argument("--list", action="store_true", help="list the utilities with one-line descriptions")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("name", nargs="?", metavar="NAME", help="the utility (see --list)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="...",
                   help="selection and option flags, --dry-run, --yes, --json (see NAME --help)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def utility_parser(util, terms=None) -> argparse.ArgumentParser:
    """The flags of one utility: selection, its options (from the Options model), run control."""
    from patron_tui.services.utilities import option_fields

    title = terms.apply(util.title) if terms else util.title
    p = argparse.ArgumentParser(prog=f"patron-tui utility {util.name}",
                                description=f"{title}: {terms.apply(util.description) if terms else util.description}.")
    p.add_argument("--db", metavar="PATH", help="patron database")
    sel = p.add_argument_group("selections (AND-ed; at least one is needed unless the utility acts on everyone)")
    sel.add_argument("--set", dest="set_name", metavar="NAME", help="a saved query set")
    sel.add_argument("--query", metavar="STATEMENT", help='a search statement ("" = every patron)')
    for flag, dest, what in (("--grade", "grades", "patrons in this grade"), ("--status", "statuses", "status"),
                             ("--homeroom", "homerooms", "homeroom (location)"), ("--site", "sites", "site code"),
                             ("--patron-type", "patron_types", "patron type")):
        sel.add_argument(flag, dest=dest, action="append", default=[], metavar="VALUE",
                         help=f"{what} (repeat for more)")
    sel.add_argument("--graduation-from", metavar="MM/DD/YYYY", help="graduation date from (June 30 of the year)")
    sel.add_argument("--graduation-to", metavar="MM/DD/YYYY", help="graduation date to")
    sel.add_argument("--graduated-within-days", metavar="N", help="graduated in the last N days")
    sel.add_argument("--balance-min", metavar="DOLLARS", help="patron balance from (open charges)")
    sel.add_argument("--balance-max", metavar="DOLLARS", help="patron balance to")
    opts = p.add_argument_group("options")
    for f in option_fields(util, terms):
        if f.name in RESERVED:
            raise ValueError(f"utility {util.name}: option {f.name!r} clashes with a selection flag")
        help_text = f.title + (f": {f.description}" if f.description else "")
        if f.required:
            help_text += " (required)"
        if f.kind == "bool":
            opts.add_argument(_flag(f.name), dest=f"opt_{f.name}", action=argparse.BooleanOptionalAction,
                              default=None, help=help_text)
        else:
            metavar = {"date": "MM/DD/YYYY", "int": "N", "decimal": "AMOUNT"}.get(f.kind, "VALUE")
            opts.add_argument(_flag(f.name), dest=f"opt_{f.name}", metavar=metavar, default=None,
                              choices=f.values or None, help=help_text)
    run = p.add_argument_group("run")
    run.add_argument("--dry-run", action="store_true", help="print the preview; change nothing")
    run.add_argument("--yes", action="store_true", help="run a utility that removes data")
    run.add_argument("--background", action="store_true",
                     help="hand the run to the scheduler service (patron-tui scheduler / run-due): queue it with "
                     "the preview's fingerprint, print its run id and return; it is refused then if the "
                     "selection changed since")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main_utility(db_path: Path, args: argparse.Namespace) -> int:
    try:
        if args.list:
            return _cmd_list(db_path, args)
        if not args.name:
            raise Refused("name a utility (`patron-tui utility --list` shows them)")
        return _cmd_run(db_path, args)
    except Refused as exc:
        return fail(str(exc))


def _cmd_list(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services import utilities as U
    from patron_tui.textsafe import visible

    store, conn = open_store(db_path)
    try:
        terms = U.Terms.load(conn)
        rows = []
        for name, title, description in U.listing(conn):
            util = U.get(name)
            rows.append({"name": name, "title": title, "description": description,
                         "available": util.available(conn) is None, "why_not": util.available(conn),
                         "removes_data": util.removes_data, "needs_selection": util.needs_selection,
                         "options": [f.model_dump(mode="json") for f in U.option_fields(util, terms)]})
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        extra = "" if r["available"] else f"  (not available: {r['why_not']})"
        print(f"{r['name']:{width}}  {visible(r['title'])}: {visible(r['description'])}{extra}")
    return 0


def _parse(util, terms, argv: list[str], db_default: Path) -> tuple[argparse.Namespace, Path]:
    from patron_tui.config import resolve_db_path

    p = utility_parser(util, terms)
    ns = p.parse_args(argv)     # --help and bad flags exit here, as argparse does
    return ns, (resolve_db_path(ns.db) if ns.db else db_default)


def _selections(ns: argparse.Namespace):
    from pydantic import ValidationError

    from patron_tui.services.utilities import Selections
    from patron_tui.services.utilities.base import _parse_date

    data: dict[str, Any] = {"query_set": ns.set_name, "statement": ns.query, "grades": ns.grades,
                            "statuses": ns.statuses, "homerooms": ns.homerooms, "sites": ns.sites,
                            "patron_types": ns.patron_types}
    for key in ("graduation_from", "graduation_to"):
        text = getattr(ns, key)
        if text:
            try:
                data[key] = _parse_date(text)
            except ValueError as exc:
                raise Refused(f"{_flag(key)}: {exc}") from None
    for key in ("graduated_within_days", "balance_min", "balance_max"):
        text = getattr(ns, key)
        if text:
            data[key] = text.strip().lstrip("$")
    try:
        return Selections(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err.get("loc") else ""
        raise Refused(f"{_flag(key)}: {err['msg']}" if key else err["msg"]) from None


def _cmd_run(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services import utilities as U
    from patron_tui.services.permissions import PermissionDenied

    # the utility's own flags need the utility (and the district's terms for their help)
    try:
        util = U.get(args.name)
    except U.UtilityError as exc:
        raise Refused(str(exc)) from None
    argv = list(args.args)
    if args.json:
        argv.append("--json")
    terms = None
    try:
        store, conn = open_store(db_path)
        try:
            terms = U.Terms.load(conn)
        finally:
            conn.close()
    except Refused:
        pass    # the error is reported below, once --db is known
    ns, db_path = _parse(util, terms, argv, db_path)
    store, conn = open_store(db_path)
    try:
        terms = U.Terms.load(conn)
        sel = _selections(ns)
        values = {key[4:]: value for key, value in vars(ns).items() if key.startswith("opt_") and value is not None}
        try:
            options = U.parse_options(util, values, terms)
            pv = U.preview(conn, util.name, sel, options, store.operator)
        except (U.UtilityError, PermissionDenied) as exc:
            raise Refused(str(exc)) from None
    finally:
        conn.close()
    if ns.dry_run and ns.background:
        raise Refused("--background and --dry-run do not go together: a dry run changes nothing, so run it here")
    if ns.dry_run:
        _print_preview(pv, ns.json)
        return 0
    if util.removes_data and not ns.yes:
        raise Refused(f"{pv.title} removes data: {pv.changes} of {pv.selected} selected patrons would change. "
                      "Run it again with --yes (or --dry-run to see the preview).")
    if ns.background:
        return _queue(store, util, sel, options, pv, ns.json)
    handle = run_to_end(store, lambda engine: U.start_utility(engine, store, store.operator, util.name, sel,
                                                             options, fingerprint=pv.fingerprint),
                        (U.UtilityError, PermissionDenied))
    conn = store.connect()
    try:
        rep = U.report(conn, handle.run_id)
    finally:
        conn.close()
    _print_report(rep, ns.json)
    if rep.follow_up and rep.status == "succeeded" and rep.changed and not ns.json:
        print(f"next: patron-tui utility {rep.follow_up} with the same selection "
              f"(`patron-tui utility {rep.follow_up} --help`)")
    if rep.status != "succeeded":
        return failure_code(rep.error)
    return 1 if rep.errors else 0


def _queue(store, util, sel, options, pv, as_json: bool) -> int:
    """--background: queue the run for the scheduler with the preview's fingerprint."""
    from patron_tui.cli import queued_line
    from patron_tui.services.permissions import PermissionDenied
    from patron_tui.services.utilities.base import UtilityError, queue_utility
    from patron_tui.textsafe import visible

    conn = store.connect()
    try:
        run_id = queue_utility(conn, store.operator, util.name, sel, options, fingerprint=pv.fingerprint)
    except (UtilityError, PermissionDenied) as exc:
        raise Refused(str(exc)) from None
    finally:
        conn.close()
    if as_json:
        print(json.dumps({"run_id": run_id, "status": "queued", "kind": "utility", "utility": util.name,
                          "selected": pv.selected, "changes": pv.changes, "fingerprint": pv.fingerprint}, indent=2))
    else:
        print(f"{visible(pv.title)}: {queued_line(run_id)}")
    return 0


def _blank(value: str) -> str:
    return value if value else "(blank)"


def _print_preview(pv, as_json: bool) -> None:
    from patron_tui.textsafe import visible

    if as_json:
        print(json.dumps({"dry_run": True, **pv.model_dump(mode="json")}, indent=2, ensure_ascii=False))
        return
    print(f"{visible(pv.title)}: {visible(pv.selections)} - {pv.selected} selected, {pv.changes} would change"
          " (dry run: nothing changed)")
    if pv.samples:
        shown = "" if pv.changes <= len(pv.samples) else f" (first {len(pv.samples)})"
        print(f"  {visible(pv.column or 'Value')} before -> after{shown}:")
        for c in pv.samples:
            print(f"    {visible(c.barcode or ''):14} {visible(c.name)[:30]:30} {visible(_blank(c.before))} -> "
                  f"{visible(_blank(c.after))}")
    if pv.skipped:
        print(f"  skipped ({len(pv.skipped)}):")
        for s in pv.skipped:
            print(f"    {visible(s.barcode or ''):14} {visible(s.name)[:30]:30} {visible(s.reason)}")
    for note in pv.notes:
        print(f"  note: {visible(note)}")


def _print_report(rep, as_json: bool) -> None:
    from patron_tui.textsafe import visible

    if as_json:
        print(json.dumps(rep.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    if rep.status != "succeeded":
        run_failed(rep.title, rep.error or rep.status, None)   # a full disk etc.: its sentence
        return
    print(f"run {rep.run_id}: {visible(rep.title)}: {rep.changed} changed, {len(rep.skipped)} skipped, "
          f"{len(rep.errors)} errors ({rep.selected} selected)")
    for s in rep.skipped:
        print(f"  skipped [{visible(s.barcode or '')}] {visible(s.name)}: {visible(s.reason)}")
    for s in rep.errors:
        print(f"  error   [{visible(s.barcode or '')}] {visible(s.name)}: {visible(s.reason)}")
    for note in rep.notes:
        print(f"  note: {visible(note)}")
