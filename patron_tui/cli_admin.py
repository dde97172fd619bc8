"""The administration subcommands: `operators list|add|edit|remove`, `backup`, `restore`.

Who may do what is decided by services/permissions.py (the same rules as the console); a
refusal exits 2 with the sentence naming the missing permission.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from patron_tui.cli_common import Refused, add_db, fail, open_store

COMMANDS = ("operators", "backup", "restore")


def _flag(p: argparse.ArgumentParser, name: str, text: str) -> None:
    dest = name.replace("-", "_")
    p.add_argument(f"--{name}", dest=dest, action="store_true", default=None, help=f"may {text}")
    p.add_argument(f"--no-{name}", dest=dest, action="store_false", help=f"may not {text}")


def register(sub) -> None:
    ops = sub.add_parser("operators", help="operators and their permissions: list, add, edit, remove",
                         description="The Unix login name is the operator. Only a district "
                         "administrator (security level 0) adds, edits or removes operators.")
    add_db(ops)
    osub = ops.add_subparsers(dest="operators_command", metavar="ACTION", required=True)
    p = osub.add_parser("list", help="list the operators")
    add_db(p)
    p.add_argument("--json", action="store_true")
    for action, text in (("add", "add an operator"), ("edit", "change an operator (what is not given stays)")):
        p = osub.add_parser(action, help=text)
        add_db(p)
        p.add_argument("login", metavar="LOGIN", help="the operator's Unix login name")
        p.add_argument("--display-name", metavar="NAME")
        p.add_argument("--level", type=int, metavar="N",
                       help="security level, 0 (district administrator) or more" +
                       (" (default 5)" if action == "add" else ""))
        _flag(p, "manage-patrons", "manage patrons for the district (and scheduled jobs)")
        _flag(p, "batch-tools", "use batch tools")
        _flag(p, "reset-passwords", "reset patron passwords")
        p.add_argument("--json", action="store_true")
    p = osub.add_parser("remove", help="remove an operator")
    add_db(p)
    p.add_argument("login", metavar="LOGIN")
    p.add_argument("--json", action="store_true")

    b = sub.add_parser("backup", help="write a consistent copy of the database (others keep working)")
    add_db(b)
    b.add_argument("path", nargs="?", metavar="PATH",
                   help="where to write (default: <db dir>/backups/<name>-YYYYMMDD-HHMMSS.db); "
                   "an existing file is never overwritten")
    b.add_argument("--json", action="store_true")

    r = sub.add_parser("restore", help="check a backup, then put it in place of the database",
                       description="Checks the copy (integrity, a patron_tui database of a known schema "
                       "version), then replaces the database with it; the replaced database is kept as "
                       "<db>.before-restore-<stamp>. Refused while a run is running or another program "
                       "has the database open.")
    add_db(r)
    r.add_argument("path", metavar="PATH", help="the backup to restore")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    r.add_argument("--json", action="store_true")


def main_admin(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.backup import BackupError
    from patron_tui.services.operators import OperatorError
    from patron_tui.services.permissions import PermissionDenied

    try:
        store, conn = open_store(db_path)
    except Refused as exc:
        return fail(str(exc))
    try:
        if args.command == "operators":
            return _operators(store, conn, args)
        if args.command == "backup":
            return _backup(store, conn, args)
        return _restore(store, conn, args)
    except (PermissionDenied, OperatorError, BackupError) as exc:
        return fail(exc)   # a BackupError of a damaged or full disk exits with its code
    finally:
        conn.close()


def _operator_line(op) -> str:
    from patron_tui.textsafe import visible

    flags = [name for name, on in (("manage patrons", op.manage_patrons), ("batch tools", op.batch_tools),
                                   ("reset passwords", op.reset_passwords)) if on]
    role = "district administrator" if op.security_level == 0 else f"level {op.security_level}"
    return (f"{visible(op.login_name):<16} {visible(op.display_name):<24} {role:<24} "
            f"{', '.join(flags) or '-'}")


def _operators(store, conn, args: argparse.Namespace) -> int:
    from patron_tui.services import operators as ops
    from patron_tui.textsafe import visible

    action = args.operators_command
    if action == "list":
        rows = ops.list_operators(conn)
        if args.json:
            print(json.dumps([o.as_dict() for o in rows], indent=2, ensure_ascii=False))
        else:
            for o in rows:
                print(_operator_line(o))
        return 0
    by = store.operator
    if action == "remove":
        removed = ops.remove_operator(conn, by, args.login)
        if args.json:
            print(json.dumps({"removed": removed.as_dict()}, indent=2, ensure_ascii=False))
        else:
            print(f"operator {visible(removed.login_name)} removed")
        return 0
    kw = dict(display_name=args.display_name, security_level=args.level, manage_patrons=args.manage_patrons,
              batch_tools=args.batch_tools, reset_passwords=args.reset_passwords)
    if action == "add":
        kw = {k: v for k, v in kw.items() if v is not None}
        op = ops.add_operator(conn, by, args.login, **kw)
    else:
        op = ops.edit_operator(conn, by, args.login, **kw)
    if args.json:
        print(json.dumps(op.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(f"operator {'added' if action == 'add' else 'changed'}: {_operator_line(op)}")
    return 0


def _backup(store, conn, args: argparse.Namespace) -> int:
    from patron_tui.services.backup import backup
    from patron_tui.services.permissions import require

    require(conn, store.operator, "backup")
    path = backup(store, args.path)
    if args.json:
        print(json.dumps({"backup": str(path), "bytes": path.stat().st_size}, indent=2))
    else:
        print(f"backup written: {path} ({path.stat().st_size:,} bytes)")
    return 0


def _restore(store, conn, args: argparse.Namespace) -> int:
    from patron_tui.services.backup import check_copy, restore
    from patron_tui.services.permissions import require

    require(conn, store.operator, "restore")
    conn.close()   # the restore needs the database to itself
    info = check_copy(args.path)
    if not args.yes:
        if not sys.stdin.isatty():
            return fail("restore replaces the whole database: add --yes to confirm (no terminal to ask on)")
        answer = input(f"Replace {store.path} with {args.path} ({info['patrons']:,} patrons, schema "
                       f"version {info['schema_version']})? The current database is kept beside it. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was restored")
            return 1
    result = restore(store, args.path)
    if args.json:
        print(json.dumps(dict(result), indent=2))
    else:
        print(f"restored {result['restored']} from {result['from']} ({result['patrons']:,} patrons); "
              f"the replaced database is {result['before']}")
    return 0
