"""`patron-tui mail-settings` and `patron-tui mail-test`: the outgoing mail server that
Reset Patron Accounts sends its password reset links through.

`mail-settings` with no option prints the settings (the password only as "stored" or not);
options change what they name. The password is read from standard input with
`--password-stdin` (never from the command line) and kept in the mail secret file beside the
database. With no host the reset messages are written to the outbox folder `<db>.outbox/`.
Exit codes: 0 done, 2 refused or failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from patron_tui.cli_common import Refused, add_db, open_store

COMMANDS = ("mail-settings", "mail-test")


def register(sub) -> None:
    p = sub.add_parser("mail-settings", help="show or change the outgoing mail (SMTP) server",
                       description="Show the outgoing mail settings, or change the ones given. An empty "
                       "--host means no server: reset messages are written to the outbox folder beside "
                       "the database.")
    add_db(p)
    p.add_argument("--host", metavar="NAME", help='SMTP server ("" = none: write messages to the outbox)')
    p.add_argument("--port", type=int, metavar="N", help="SMTP port (587 submission, 25 relay)")
    p.add_argument("--starttls", choices=("on", "off"), help="upgrade the connection with STARTTLS")
    p.add_argument("--user", metavar="LOGIN", help='login name on the server ("" = no login)')
    p.add_argument("--from", dest="from_address", metavar="ADDRESS", help="the messages' From address")
    p.add_argument("--reset-url", metavar="URL",
                   help="the page a password reset link opens (the token is added as ?token=...)")
    pw = p.add_mutually_exclusive_group()
    pw.add_argument("--password-stdin", action="store_true",
                    help="read the SMTP password from the first line of standard input")
    pw.add_argument("--forget-password", action="store_true", help="remove the stored SMTP password")
    p.add_argument("--json", action="store_true", help="print the settings as JSON")

    t = sub.add_parser("mail-test", help="send a test message through the mail settings")
    add_db(t)
    t.add_argument("--to", required=True, metavar="ADDRESS", help="where the test message goes")


def _fail(message: str) -> int:
    from patron_tui.textsafe import visible

    print(f"patron-tui: {visible(message)}", file=sys.stderr)
    return 2


def main_mail(db_path: Path, args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from patron_tui.services import mail
    from patron_tui.services.permissions import PermissionDenied, require
    from patron_tui.textsafe import visible

    try:
        store, conn = open_store(db_path)
    except Refused as exc:
        return _fail(str(exc))
    try:
        settings = mail.load_settings(conn)
        if args.command == "mail-test":
            try:
                require(conn, store.operator, "mail")   # the district's mail server and password
            except PermissionDenied as exc:
                return _fail(str(exc))
            try:
                said = mail.send_test(settings, mail.get_password(db_path), args.to,
                                      outbox=mail.outbox_path(db_path))
            except mail.MailError as exc:
                return _fail(str(exc))
            print(visible(said))
            return 0
        changes = {k: getattr(args, k) for k in ("host", "port", "user", "from_address", "reset_url")
                   if getattr(args, k) is not None}
        if args.starttls is not None:
            changes["starttls"] = args.starttls == "on"
        if changes or args.password_stdin or args.forget_password:
            try:
                require(conn, store.operator, "manage_patrons")   # district settings, like SFTP jobs
            except PermissionDenied as exc:
                return _fail(str(exc))
        if changes:
            try:
                settings = mail.MailSettings(**{**settings.model_dump(), **changes})
            except ValidationError as exc:
                err = exc.errors()[0]
                field = str(err["loc"][0]) if err.get("loc") else ""
                flag = {"from_address": "from", "reset_url": "reset-url"}.get(field, field)
                return _fail(f"--{flag}: {err['msg'].removeprefix('Value error, ')}")
            with store.writer(conn, None) as w:
                mail.save_settings(w, settings)
        try:
            if args.password_stdin:
                mail.set_password(db_path, sys.stdin.readline().rstrip("\r\n") or None)
            elif args.forget_password:
                mail.set_password(db_path, None)
            stored = mail.get_password(db_path) is not None
        except mail.MailError as exc:
            return _fail(str(exc))
    finally:
        conn.close()
    data = {**settings.model_dump(), "password": "stored" if stored else "none",
            "outbox": str(mail.outbox_path(db_path))}
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(visible(settings.describe()))
    print(f"  password: {'stored (********)' if stored else 'none'}")
    print(f"  reset page: {visible(settings.reset_url) or '(not set: reset links cannot be sent)'}")
    print(f"  outbox: {visible(data['outbox'])}")
    return 0
