"""The `patron-tui` command: no subcommand opens the console; subcommands are
the headless twins of the console's actions."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

from patron_tui import __version__
from patron_tui.config import resolve_db_path


def _add_db(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    # subcommands suppress their default so `patron-tui --db X demo` keeps X
    p.add_argument("--db", metavar="PATH", default=None if top else argparse.SUPPRESS,
                   help="patron database (default: $PATRON_TUI_DB or the user data dir)")


def build_parser() -> argparse.ArgumentParser:
    from patron_tui.cli_common import exit_codes_text

    parser = argparse.ArgumentParser(
        prog="patron-tui",
        description="Keyboard-driven console for a library's patron records. "
        "Without a subcommand, opens the console.",
        epilog=exit_codes_text(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"patron-tui {__version__}")
    _add_db(parser, top=True)
    parser.add_argument("--theme", help="console theme (remembered for next time)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker pool size for runs (default: $PATRON_TUI_WORKERS or the core count)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="build a demo district database (deterministic)")
    _add_db(demo)
    demo.add_argument("--patrons", type=int, default=2000, metavar="N", help="number of patrons (default 2000)")
    demo.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    demo.add_argument("--force", action="store_true", help="replace an existing database at the path")

    check = sub.add_parser("check", help="check the database: integrity, orphans, duplicates, reference codes")
    _add_db(check)
    check.add_argument("--json", action="store_true", help="print the run's result as JSON")

    _add_query(sub)
    _add_import(sub)

    conv = sub.add_parser("convert", help="Import Converter: guess a properties file from a patron CSV")
    conv.add_argument("file", metavar="FILE", help="the patron CSV file")
    conv.add_argument("--out", metavar="P.properties", help="where to write (default: FILE with .properties)")
    conv.add_argument("--encoding", help="read the CSV in this encoding instead of the detected one")
    conv.add_argument("--force", action="store_true", help="replace an existing properties file")
    conv.add_argument("--json", action="store_true",
                      help="print what was detected and guessed as JSON (the file is still written)")

    sets = sub.add_parser("sets", help="list the saved query sets")
    _add_db(sets)
    sets.add_argument("--json", action="store_true", help="print the sets as JSON")

    prot = sub.add_parser("protect", help="mark patrons protected: no inactivation or deletion rule touches them")
    _add_db(prot)
    prot.add_argument("patrons", nargs="+", metavar="PATRON", help="barcode, district ID or #id")
    prot.add_argument("--off", action="store_true", help="clear the flag instead")

    from patron_tui import cli_mail   # mail-settings, mail-test

    cli_mail.register(sub)
    from patron_tui import cli_jobs   # jobs, runs, scheduler, run-due

    cli_jobs.register(sub)
    from patron_tui import cli_batch   # batch-update, fill-queues

    cli_batch.register(sub)
    from patron_tui import cli_audit   # undo, audit, prune-journal

    cli_audit.register(sub)
    from patron_tui import cli_utilities   # utility

    cli_utilities.register(sub)
    from patron_tui import cli_admin   # operators, backup, restore

    cli_admin.register(sub)
    return parser


def _add_query(sub) -> None:
    from patron_tui.services.export import ENCODINGS
    from patron_tui.services.patrons import DEFAULT_SORT, SORTS

    query = sub.add_parser(
        "query", help="run a search statement: show, count, export or save the matching patrons",
        description="Run a search statement (or a saved query set) over the patrons. "
        "A bad statement exits 2 with the statement and a ^ under the fault on standard error.",
    )
    _add_db(query)
    query.add_argument("statement", nargs="?", metavar="STATEMENT",
                       help='the search statement, quoted; "" matches every patron')
    query.add_argument("--set", dest="set_name", metavar="NAME",
                       help="run the saved query set NAME instead of a statement")
    query.add_argument("--count", action="store_true", help="print only the number of matching patrons")
    query.add_argument("--csv", metavar="FILE", help="export the matching patrons to FILE ('-': standard output)")
    query.add_argument("--columns", metavar="a,b,...",
                       help="columns to show or export, in order (default: the patron list's); "
                       "see `patron-tui query --columns help`")
    query.add_argument("--encoding", choices=list(ENCODINGS), default=None,
                       help="CSV encoding (default utf-8; utf-8-sig adds the BOM Excel wants)")
    query.add_argument("--replace-unencodable", action="store_true",
                       help="with --encoding windows-1252: write characters it cannot hold as '?' "
                       "instead of refusing the export")
    query.add_argument("--sort", choices=list(SORTS), default=DEFAULT_SORT, metavar="SORT",
                       help=f"order of the rows: {', '.join(SORTS)} (default {DEFAULT_SORT})")
    query.add_argument("--save", metavar="NAME", help="save the statement as the query set NAME")
    query.add_argument("--replace", action="store_true", help="with --save: replace a set of that name")
    query.add_argument("--freeze", action="store_true",
                       help="with --save or --set: freeze the set (keep exactly the patrons matching now)")
    query.add_argument("--json", action="store_true", help="print one JSON object")
    query.add_argument("--limit", type=int, default=50, metavar="N",
                       help="rows to show, in the table or the JSON (default 50; 0 shows all)")


def _add_import(sub) -> None:
    imp = sub.add_parser(
        "import", help="import a patron CSV file (Full or Incremental) with a properties file",
        description="Import FILE into the patron store as one run. A bad properties file exits 2 "
        "with path:line: messages; a failed run exits 2 and changes nothing.",
    )
    _add_db(imp)
    imp.add_argument("file", metavar="FILE", help="the patron CSV file")
    imp.add_argument("--properties", required=True, metavar="P", help="the import properties file")
    imp.add_argument("--mode", choices=("full", "incremental"), default="full",
                     help="full: every record; incremental: only records new or changed (default full)")
    imp.add_argument("--encoding", metavar="ENC", help="the file's encoding (overrides the properties file's)")
    imp.add_argument("--dry-run", action="store_true", help="do everything, report, then change nothing")
    imp.add_argument("--errors-only", action="store_true",
                     help="keep only errors, warnings and skipped records in the job summary")
    imp.add_argument("--json", action="store_true", help="print the run's summary as one JSON object")
    imp.add_argument("--background", action="store_true",
                     help="hand the import to the scheduler service (patron-tui scheduler / run-due): "
                     "queue it, print its run id and return")

    summ = sub.add_parser("summary", help="print the job summary of a run")
    _add_db(summ)
    summ.add_argument("run_id", type=int, metavar="RUN_ID")
    summ.add_argument("--errors-only", action="store_true", help="only errors, warnings and skipped records")
    summ.add_argument("--csv", metavar="FILE", help="export the messages as CSV to FILE ('-': standard output)")
    summ.add_argument("--json", action="store_true", help="print one JSON object: the run and its messages")

    conf = sub.add_parser("conflicts", help="list the import conflicts of an import run (open ones by default)")
    _add_db(conf)
    conf.add_argument("run_id", type=int, metavar="RUN_ID")
    conf.add_argument("--all", action="store_true", help="resolved conflicts too")
    conf.add_argument("--json", action="store_true", help="print the conflicts as JSON, both patrons included")

    res = sub.add_parser(
        "resolve", help="resolve an import conflict: keep, move or edit",
        description="keep: the holder keeps the value, nothing changes. move: the value is taken from "
        "its holder (who is flagged) and the incoming record is applied. edit: the incoming record is "
        "applied with --value for the conflicting field. Exits 2 when refused.",
    )
    _add_db(res)
    res.add_argument("conflict_id", type=int, metavar="CONFLICT_ID")
    res.add_argument("action", choices=("keep", "move", "edit"))
    res.add_argument("--value", metavar="V", help="with edit: the new value of the conflicting field")
    res.add_argument("--json", action="store_true", help="print the run's result as JSON")


def main(argv: list[str] | None = None) -> int:
    """Run one command; a bad day is ONE sentence on stderr and its exit code (cli_common's
    table), never a traceback: a busy, read-only, full, damaged or newer database
    (store/trouble.py), Ctrl+C, and as a last resort any other error (its details go to the
    error log, the sentence says where)."""
    from patron_tui import cli_common

    started = time.time()
    previous = _catch_ctrl_c()
    try:
        return _main(argv)
    except BrokenPipeError:
        # `patron-tui check | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return _interrupted(cli_common.current_db, started)
    except cli_common.Refused as exc:
        return cli_common.fail(str(exc))
    except Exception as exc:   # the last resort: one sentence, never a traceback
        return _bad_day(exc, cli_common.current_db)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _catch_ctrl_c():
    """Ctrl+C says at once that it was heard (what was being written is rolled back while the
    command stops), then stops the command with KeyboardInterrupt; a second Ctrl+C quits
    without waiting. Returns the handler to put back (None outside the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def on_ctrl_c(signum, frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)   # the second one: at once
        try:
            print("patron-tui: Ctrl+C: stopping; what is being written is rolled back "
                  "(Ctrl+C again quits without waiting)", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_ctrl_c)


def _interrupted(db_path: Path | None, started: float) -> int:
    """After Ctrl+C: one sentence per run this process was executing, saying what became of it
    (read back from the runs table), else one sentence; 130."""
    from patron_tui.cli_common import EXIT_INTERRUPTED, fail

    try:   # saying what happened is quick: a third Ctrl+C does not cut it short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:   # not the main thread
        pass
    runs: list = []
    if db_path is not None:
        try:
            from patron_tui.store.trouble import runs_of_this_process

            runs = runs_of_this_process(db_path, started)
        except Exception:   # the database itself may be what went wrong
            runs = []
    where = str(db_path) if db_path is not None else "the database"
    if not runs:
        fail(f"interrupted (Ctrl+C): anything being written was rolled back, so {where} holds only "
             f"what was committed before")
    for run_id, title, status in runs:
        if status == "succeeded":
            fail(f"interrupted (Ctrl+C) after run {run_id} ({title}) had finished: its changes to "
                 f"{where} are kept (`patron-tui summary {run_id}`)")
        elif status in ("running", "queued"):
            fail(f"interrupted (Ctrl+C) while run {run_id} ({title}) was stopping: what it was "
                 f"writing is rolled back, so {where} is as it was before it; the next start "
                 f"marks it interrupted")
        else:
            fail(f"interrupted (Ctrl+C): run {run_id} ({title}) was stopped and is {status}, and "
                 f"nothing it was writing was kept, so {where} is as it was before it")
    if any(status in ("running", "queued") for _, _, status in runs):
        # the second Ctrl+C: quit without waiting for the run's thread (SQLite drops what an
        # uncommitted transaction wrote when its process ends)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


def _bad_day(exc: BaseException, db_path: Path | None) -> int:
    """A bad day's sentence and exit code; any other error: where its details were logged, 70."""
    from patron_tui.cli_common import EXIT_UNEXPECTED, fail, trouble_exit
    from patron_tui.store.trouble import explain

    trouble = explain(exc, db_path)
    if trouble is not None:
        return trouble_exit(trouble)
    if isinstance(exc, PermissionError) and exc.errno is None:   # a refusal (services/permissions)
        return fail(str(exc))
    log = _log_error(exc)
    kept = f"the details are in {log}" if log else "the details could not be written to a log"
    fail(f"an unexpected error stopped this command ({type(exc).__name__}); a write under way "
         f"was rolled back; {kept}: please report it")
    return EXIT_UNEXPECTED


def _log_error(exc: BaseException) -> Path | None:
    """Append the traceback of `exc` to the error log (`$PATRON_TUI_LOG_DIR` or the user log
    dir, `errors.log`); its path, or None when it cannot be written."""
    import traceback
    from datetime import datetime, timezone

    import platformdirs

    from patron_tui.config import APP_NAME

    folder = Path(os.environ.get("PATRON_TUI_LOG_DIR") or platformdirs.user_log_dir(APP_NAME)).expanduser()
    path = folder / "errors.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {datetime.now(timezone.utc).isoformat(timespec='seconds')} "
                    f"patron-tui {__version__} {' '.join(sys.argv[1:])!r}\n")
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path


def _main(argv: list[str] | None) -> int:
    from patron_tui import cli_common

    parser = build_parser()
    args = parser.parse_args(argv)
    db_path = resolve_db_path(args.db)
    cli_common.current_db = db_path   # bad-day sentences name it
    if args.command is None:   # the console takes Ctrl+C as a key
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.command is None:
        return _run_console(db_path, args.theme, args.workers)
    if args.command == "demo":
        return _cmd_demo(db_path, args)
    if args.command == "check":
        return _cmd_check(db_path, args)
    if args.command == "query":
        return _cmd_query(db_path, args, parser)
    if args.command == "sets":
        return _cmd_sets(db_path, args)
    if args.command == "import":
        return _cmd_import(db_path, args)
    if args.command == "summary":
        return _cmd_summary(db_path, args)
    if args.command == "convert":
        return _cmd_convert(args)
    if args.command == "conflicts":
        return _cmd_conflicts(db_path, args)
    if args.command == "resolve":
        return _cmd_resolve(db_path, args, parser)
    if args.command == "protect":
        return _cmd_protect(db_path, args)
    if args.command in ("mail-settings", "mail-test"):
        from patron_tui.cli_mail import main_mail

        return main_mail(db_path, args)
    if args.command in ("jobs", "runs", "scheduler", "run-due"):
        from patron_tui.cli_jobs import main_jobs

        return main_jobs(db_path, args)
    if args.command in ("batch-update", "fill-queues"):
        from patron_tui.cli_batch import main_batch

        return main_batch(db_path, args)
    if args.command in ("undo", "audit", "prune-journal"):
        from patron_tui.cli_audit import main_audit

        return main_audit(db_path, args)
    if args.command == "utility":
        from patron_tui.cli_utilities import main_utility

        return main_utility(db_path, args)
    if args.command in ("operators", "backup", "restore"):
        from patron_tui.cli_admin import main_admin

        return main_admin(db_path, args)
    parser.error(f"unknown command {args.command}")
    return 2


def _cmd_convert(args: argparse.Namespace) -> int:
    from patron_tui.services.imports.converter import (
        build_properties_text,
        guess_mapping,
        preview,
        save_properties,
        sniff,
    )
    from patron_tui.services.imports.properties import PropertiesError, parse_properties
    from patron_tui.services.imports.records import ImportFileError
    from patron_tui.services.imports.sourcefile import refusal
    from patron_tui.textsafe import visible

    src = Path(args.file).expanduser()
    out = Path(args.out).expanduser() if args.out else src.with_suffix(".properties")
    refused = refusal(src)   # a directory, a FIFO, a link loop: said as such
    if refused:
        return _fail_data(refused)
    if out.exists() and not args.force:
        return _fail(f"{out} exists; use --force to replace it")
    try:
        sniffed = sniff(src, encoding=args.encoding)
    except ImportFileError as exc:   # starts with NUL bytes, or not a regular file after all
        return _fail_data(str(exc))
    except (OSError, LookupError) as exc:
        return _fail(f"{src}: {exc}")
    if not sniffed.header:
        return _fail(f"{src}: no columns found; is this a CSV file?")
    guess = guess_mapping(sniffed.header)
    text = build_properties_text(sniffed, guess, source_name=src.name)
    try:
        parse_properties(text, source=str(out))
    except PropertiesError as exc:  # the guess itself is invalid: say so, write nothing
        return _fail("the guessed mapping is not valid:\n" + "\n".join(exc.messages))
    save_properties(out, text)
    rows = preview(src, sniffed, guess.fields)
    problems = [(r.line, p) for r in rows for p in r.problems]
    if args.json:
        print(json.dumps({
            "file": str(src), "properties": str(out), "encoding": sniffed.encoding,
            "encoding_reason": sniffed.encoding_reason, "delimiter": sniffed.delimiter_name,
            "header": sniffed.has_header, "format": guess.recognised_format, "fields": guess.fields,
            "unmapped": guess.unmapped, "notes": guess.notes,
            "preview_problems": [{"line": line, "problem": p} for line, p in problems],
        }, indent=2, ensure_ascii=False))
        return 0
    print(f"{visible(src)}: {sniffed.encoding} ({visible(sniffed.encoding_reason)}), "
          f"delimiter {sniffed.delimiter_name!r}, format {guess.recognised_format or 'not recognised'}")
    for field, column in guess.fields.items():
        print(f"  {field:18} <- {visible(column)}")
    for column in guess.unmapped:
        print(f"  {'(not imported)':18} <- {visible(column)}")
    for line, problem in problems:
        print(f"  preview line {line}: {visible(problem)}")
    print(f"wrote {visible(out)}; check it, then: patron-tui import {visible(src)} --properties {visible(out)}")
    return 0


def _print_messages(engine) -> None:
    """Stream a run's messages to standard output as they happen (data made visible)."""
    from patron_tui.models import MESSAGE_KINDS
    from patron_tui import testpoints
    from patron_tui.textsafe import visible

    reader_gone = False

    def show(event) -> None:
        nonlocal reader_gone
        if reader_gone or event.kind not in MESSAGE_KINDS:
            return
        where = f"line {event.line} " if event.line else ""
        where += f"[{visible(event.barcode)}] " if event.barcode else ""
        try:
            print(f"{event.kind.value:8} {event.code:22} {where}{visible(event.text)}", flush=True)
        except BrokenPipeError:  # `| head`: stop printing, let the run finish
            reader_gone = True
        testpoints.reach("cli-message")   # tests: a run stopped mid-write, on its own thread

    engine.subscribe(show)


def _fail(message: str) -> int:
    print(f"patron-tui: {message}", file=sys.stderr)
    return 2


def _refusal(store, permission: str) -> str | None:
    """The sentence refusing the store's operator `permission` (services/permissions), or None."""
    from patron_tui.services.permissions import store_refusal

    return store_refusal(store, permission)


def _login_refusal(conn, login: str, permission: str) -> str | None:
    """`_refusal` on an open connection (services/permissions.refusal)."""
    from patron_tui.services.permissions import refusal

    return refusal(conn, login, permission)


def _cmd_demo(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.demo import DemoExists, build_demo

    if args.patrons < 0:
        return _fail("--patrons must be 0 or more")
    if args.force:
        # replacing a district's database: only its district administrator (a file that cannot
        # be read as a patron database has no operators to ask: --force may replace it)
        from patron_tui.store import Store, StoreError

        try:
            refused = _refusal(Store(db_path), "replace_database") if Store(db_path).exists() else None
        except (StoreError, sqlite3.Error):
            refused = None
        if refused:
            return _fail(refused)
    try:
        stats = build_demo(db_path, patrons=args.patrons, seed=args.seed, replace=args.force,
                           progress=lambda msg: print(msg, file=sys.stderr))
    except DemoExists as exc:
        return _fail(str(exc))
    print(f"demo district with {stats['patrons']} patrons written to {db_path} in {stats['seconds']:.1f} s")
    return 0


def _cmd_check(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.runs import RunEngine
    from patron_tui.services.check import CHECK_KIND, CHECK_TITLE, check_database
    from patron_tui.store import Store, StoreError

    store = Store(db_path)
    try:
        store.connect().close()
    except StoreError as exc:
        return _fail(str(exc))
    engine = RunEngine(store, pool_size=args.workers)
    if not args.json:
        _print_messages(engine)
    try:
        handle = engine.execute(CHECK_KIND, CHECK_TITLE, check_database)
    finally:
        engine.shutdown()
    if args.json:
        print(json.dumps({"run_id": handle.run_id, "status": handle.status.value,
                          "summary": handle.summary, "error": handle.error}, indent=2))
    else:
        faults = handle.summary.get("faults", 0)
        print(f"run {handle.run_id}: {handle.status.value}, {faults} fault(s) found")
    if handle.status.value != "succeeded":
        return 2
    return 1 if handle.summary.get("faults", 0) else 0


# -- query, sets -------------------------------------------------------------------------

def _connect(db_path: Path):
    """(connection, operator) or (None, error message)."""
    from patron_tui.store import Store, StoreError

    store = Store(db_path)
    try:
        return store.connect(), store.operator
    except StoreError as exc:
        return None, str(exc)


def _fail_data(message: str) -> int:
    """`_fail` for messages that quote data (names, barcodes, statements): line by line,
    with control characters made visible."""
    from patron_tui.textsafe import visible

    return _fail("\n".join(visible(line) for line in message.split("\n")))


def _statement_failed(exc, where: str = "") -> int:
    return _fail_data(f"{where}bad search statement:\n{exc.caret()}")


def _cmd_query(db_path: Path, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from patron_tui.services import export, query_sets
    from patron_tui.services.queries import StatementError

    if args.columns is not None and args.columns.strip() == "help":
        for name, label in export.columns_available():
            print(f"{name:22} {label}")
        return 0
    if (args.statement is None) == (args.set_name is None):
        parser.error("query: give a STATEMENT or --set NAME (one of them)")
    if args.save is not None and args.set_name is not None:
        parser.error("query: --save saves a statement; --set runs a set that is saved already")
    if args.freeze and args.save is None and args.set_name is None:
        parser.error("query: --freeze needs --save NAME (or --set NAME)")
    if args.replace and args.save is None:
        parser.error("query: --replace goes with --save NAME")
    if args.csv is None and (args.encoding or args.replace_unencodable):
        parser.error("query: --encoding and --replace-unencodable go with --csv FILE")
    if args.csv == "-" and (args.json or args.count):
        parser.error("query: --csv - writes the CSV to standard output; --json and --count cannot share it")
    if args.limit < 0:
        parser.error("query: --limit must be 0 or more")
    columns = list(export.DEFAULT_COLUMNS)
    if args.columns is not None:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    try:
        export.check_columns(columns)
    except export.ExportError as exc:
        return _fail(str(exc))

    conn, operator = _connect(db_path)
    if conn is None:
        return _fail(operator)
    try:
        # saving, replacing or freezing a query set writes; running one only reads
        refused = (_login_refusal(conn, operator, "query_sets")
                   if args.save is not None or args.freeze else None)
        if refused:
            return _fail(refused)
        return _run_query(conn, operator, args, columns)
    except StatementError as exc:
        where = f"query set {args.set_name.strip()!r}: " if args.set_name is not None else ""
        return _statement_failed(exc, where)
    except export.ExportEncodingError as exc:
        return _fail_data(f"{exc}\n(--replace-unencodable writes them as '?'; utf-8 and utf-8-sig hold everything)")
    except (query_sets.QuerySetError, export.ExportError) as exc:
        return _fail_data(str(exc))
    except OSError as exc:
        return _fail_data(f"{args.csv or exc.filename}: {exc.strerror or exc}")
    except sqlite3.Error as exc:
        return _fail(f"{db_path}: {exc}")
    finally:
        conn.close()


def _run_query(conn, operator: str, args: argparse.Namespace, columns: list[str]) -> int:
    from patron_tui.services import export, query_sets
    from patron_tui.textsafe import visible

    saved = None
    if args.save is not None:
        # save_set compiles first: a bad statement fails before anything is saved
        saved = query_sets.save_set(conn, operator, args.save, args.statement, replace=args.replace)
        set_name = saved.name
    else:
        set_name = args.set_name
    if args.freeze:
        saved = query_sets.freeze_set(conn, operator, set_name)
    if set_name is not None:
        selection = query_sets.resolve(conn, set_name=set_name)
    else:
        selection = query_sets.resolve(conn, statement=args.statement)
    # what is printed besides the result goes to stderr when stdout is for machines
    quiet = args.json or args.count or args.csv == "-"
    note = (lambda text: print(text, file=sys.stderr)) if quiet else print

    exported = None
    if args.csv is not None:
        to_stdout = args.csv == "-"
        if to_stdout:
            sys.stdout.flush()
        exported = export.export_csv(
            conn, sys.stdout.buffer if to_stdout else Path(args.csv).expanduser(),
            where=selection.where, params=selection.params, columns=columns,
            encoding=args.encoding or "utf-8", sort=args.sort,
            errors="replace" if args.replace_unencodable else "strict",
        )
        if to_stdout:
            sys.stdout.buffer.flush()
    limit = None if args.limit == 0 else args.limit

    if args.json:
        result = {
            "statement": selection.statement,
            "set": selection.set_name,
            "frozen": selection.frozen,
            "frozen_at": selection.frozen_at,
            "count": selection.count,
            "saved": saved.model_dump() if saved is not None else None,
            "csv": None if exported is None else {
                "path": str(exported.path) if exported.path else "-", "rows": exported.rows,
                "encoding": exported.encoding, "columns": exported.columns,
                "replaced_cells": exported.replaced_cells,
            },
        }
        if not args.count:
            result["columns"] = columns
            result["rows"] = [
                dict(zip(columns, values)) for _, _, values in export.iter_rows(
                    conn, where=selection.where, params=selection.params, columns=columns,
                    sort=args.sort, limit=limit)
            ]
        print(json.dumps(result, indent=2))
        return 0

    if args.count:
        print(selection.count)
    elif exported is None:
        _print_table(conn, selection, columns, args.sort, limit)
    if exported is not None:
        note(exported.describe())
    if saved is not None:
        state = f"frozen with {saved.member_count} patrons" if saved.frozen else "live"
        verb = "saved as" if args.save is not None else "froze"
        note(f"{verb} query set {visible(saved.name)!r} ({state})")
    return 0


def _print_table(conn, selection, columns: list[str], sort: str, limit: int | None) -> None:
    from rich.cells import cell_len, set_cell_size

    from patron_tui.services import export
    from patron_tui.services.patrons import COLUMNS
    from patron_tui.textsafe import visible

    labels = dict(export.columns_available())
    widths = {c.name: c.width for c in COLUMNS}
    money = {"balance", "id", "graduation_year", "protected"}
    shown = f"set {visible(selection.set_name)!r}: " if selection.set_name is not None else ""
    print(f"{shown}{visible(selection.statement) or '(all patrons)'}")
    width = [max(cell_len(labels[c]), min(widths.get(c, 14), 30)) for c in columns]

    def line(cells: list[str]) -> str:
        out = []
        for c, w, text in zip(columns, width, cells):
            if cell_len(text) > w:
                text = set_cell_size(text, w - 1) + "\u2026"
            pad = " " * (w - cell_len(text))
            out.append(pad + text if c in money else text + pad)
        return "  ".join(out).rstrip()

    print(line([labels[c] for c in columns]))
    print(line(["-" * w for w in width]))
    n = 0
    for _, _, values in export.iter_rows(conn, where=selection.where, params=selection.params,
                                         columns=columns, sort=sort, limit=limit):
        print(line([visible(v) for v in values]))
        n += 1
    noun = "patron matches" if selection.count == 1 else "patrons match"
    more = f" (showing the first {n}; --limit 0 shows all)" if n < selection.count else ""
    print(f"{selection.count} {noun}{more}")


def _cmd_protect(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.patrons import PatronNotFound, find_patron, protect
    from patron_tui.textsafe import visible

    conn, operator = _connect(db_path)
    if conn is None:
        return _fail(operator)
    try:
        refused = _login_refusal(conn, operator, "protect")
        if refused:
            return _fail(refused)
        try:
            pids = [find_patron(conn, key) for key in args.patrons]
        except PatronNotFound as exc:
            return _fail_data(str(exc))
        try:
            changed = list(zip(args.patrons, protect(conn, operator, pids, not args.off)))
        except ValueError as exc:
            return _fail(str(exc))
    finally:
        conn.close()
    word = "protected" if not args.off else "no longer protected"
    for key, did in changed:
        print(f"{visible(key)}: {word}" + ("" if did else " (already)"))
    return 0


def _cmd_sets(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services import query_sets
    from patron_tui.textsafe import visible

    conn, operator = _connect(db_path)
    if conn is None:
        return _fail(operator)
    try:
        sets = query_sets.list_sets(conn)
    finally:
        conn.close()
    if args.json:
        print(json.dumps([qs.model_dump() for qs in sets], indent=2))
        return 0
    if not sets:
        print("no saved query sets (save one with `patron-tui query STATEMENT --save NAME`)")
        return 0
    for qs in sets:
        state = f"frozen {qs.frozen_at[:16]}, {qs.member_count} patrons" if qs.frozen else "live"
        print(f"{visible(qs.name)}  ({state}; by {visible(qs.created_by)})")
        print(f"    {visible(qs.statement) or '(all patrons)'}")
    return 0


# -- import, summary --------------------------------------------------------------------

_SUMMARY_FIELDS = ("read", "added", "updated", "unchanged", "skipped", "errors", "warnings", "conflicts")


def _cmd_import(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.runs import RunEngine
    from patron_tui.services.imports.engine import IMPORT_KIND, run_import
    from patron_tui.services.imports.properties import PropertiesError, load_properties, normalize_encoding
    from patron_tui.store import Store, StoreError

    try:
        mapping = load_properties(args.properties)
    except PropertiesError as exc:
        return _fail_data(str(exc))
    except OSError as exc:
        return _fail_data(f"{args.properties}: {exc.strerror or exc}")
    if args.encoding:
        try:
            normalize_encoding(args.encoding)
        except ValueError as exc:
            return _fail_data(f"--encoding: {exc}")
    from patron_tui.services.imports.sourcefile import refusal

    refused = refusal(args.file)   # a directory, a FIFO, a link loop: said as such
    if refused:
        return _fail_data(refused)
    store = Store(db_path)
    try:
        store.connect().close()
    except StoreError as exc:
        return _fail(str(exc))
    refused = _refusal(store, "import_patrons")
    if refused:
        return _fail(refused)
    path = str(Path(args.file).resolve())
    title = f"Import {Path(args.file).name} ({args.mode}{', dry run' if args.dry_run else ''})"
    if args.background:
        return _queue_background(store, IMPORT_KIND, title, args.json, mode=args.mode, params={
            "file": path, "properties": str(Path(args.properties).resolve()), "mode": args.mode,
            "dry_run": args.dry_run, "encoding": args.encoding, "errors_only": args.errors_only})
    engine = RunEngine(store, pool_size=args.workers)
    if not args.json:
        _print_messages(engine)
    try:
        handle = engine.execute(
            IMPORT_KIND, title,
            lambda ctx: run_import(ctx, path=path, mapping=mapping, mode=args.mode, dry_run=args.dry_run,
                                   encoding=args.encoding, summary_errors_only=args.errors_only),
            params={"file": path, "properties": str(Path(args.properties).resolve()), "mode": args.mode,
                    "dry_run": args.dry_run, "encoding": args.encoding, "errors_only": args.errors_only},
            mode=args.mode,
        )
    finally:
        engine.shutdown()
    s = handle.summary
    if args.json:
        out = {"run_id": handle.run_id, "status": handle.status.value, "mode": args.mode,
               "dry_run": args.dry_run, "error": handle.error}
        out.update({k: s.get(k, 0) for k in _SUMMARY_FIELDS})
        out.update({k: v for k, v in s.items() if k not in out and k != "messages"})
        print(json.dumps(out, indent=2))
    else:
        counts = ", ".join(f"{s.get(k, 0)} {k}" for k in _SUMMARY_FIELDS)
        print(f"run {handle.run_id}: {handle.status.value}{' (dry run: nothing changed)' if args.dry_run else ''}"
              f": {counts}")
    if handle.status.value != "succeeded":
        return _run_failed(handle, db_path, quiet=args.json)
    return 0


def _run_failed(handle, db_path: Path, *, quiet: bool = False) -> int:
    """A run that did not succeed: its error on stderr (a bad day's sentence when it is one:
    a full disk, a read-only database...) unless `quiet`; its exit code (2, or the bad day's)."""
    from patron_tui.cli_common import failure_code
    from patron_tui.store.trouble import explain_text

    trouble = explain_text(handle.error, db_path)
    if not quiet:
        _fail_data(str(trouble) if trouble is not None else (handle.error or handle.status.value))
    return failure_code(handle.error)


def queued_line(run_id: int) -> str:
    """What the CLI says when a run is handed to the scheduler (the console says the same)."""
    from patron_tui.services.background import queued_message

    return f"{queued_message(run_id)} (`patron-tui summary {run_id}` shows it from here.)"


def _queue_background(store, kind: str, title: str, as_json: bool, *, params: dict,
                      mode: str | None = None) -> int:
    """Queue a run for the scheduler (services/background.py) and say so; 2 when refused."""
    from patron_tui.services.background import UnknownKind, queue_run
    from patron_tui.services.permissions import PermissionDenied
    from patron_tui.textsafe import visible

    conn = store.connect()
    try:
        run_id = queue_run(conn, store.operator, kind, title, params, mode=mode)
    except (PermissionDenied, UnknownKind) as exc:
        return _fail(visible(str(exc)))
    finally:
        conn.close()
    if as_json:
        print(json.dumps({"run_id": run_id, "status": "queued", "kind": kind, "title": title}, indent=2,
                         ensure_ascii=False))
    else:
        print(queued_line(run_id))
    return 0


def _cmd_summary(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.imports.summary import SummaryError, load_summary, messages_csv
    from patron_tui.textsafe import visible

    conn, operator = _connect(db_path)
    if conn is None:
        return _fail(operator)
    try:
        if args.csv is not None:
            if args.csv == "-":
                messages_csv(conn, args.run_id, sys.stdout, errors_only=args.errors_only)
            else:
                with open(Path(args.csv).expanduser(), "w", encoding="utf-8", newline="") as f:
                    n = messages_csv(conn, args.run_id, f, errors_only=args.errors_only)
                print(f"{n} messages written to {args.csv}", file=sys.stderr if args.json else sys.stdout)
            if args.csv == "-" or not args.json:
                return 0
        data = load_summary(conn, args.run_id, errors_only=args.errors_only)
    except SummaryError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail_data(f"{args.csv}: {exc.strerror or exc}")
    finally:
        conn.close()
    run = data["run"]
    if args.json:
        print(json.dumps({"run_id": run["id"], "kind": run["kind"], "title": run["title"],
                          "status": run["status"], "mode": run["mode"], "error": run["error"],
                          "started_at": run["started_at"], "finished_at": run["finished_at"],
                          "summary": run["summary"], "messages": data["messages"]}, indent=2))
        return 0
    s = run["summary"]
    print(f"run {run['id']}: {visible(run['title'])} - {run['status']}"
          + (f" ({visible(run['error'])})" if run["error"] else ""))
    if any(k in s for k in _SUMMARY_FIELDS):
        print("  " + ", ".join(f"{s.get(k, 0)} {k}" for k in _SUMMARY_FIELDS)
              + (f"; {s['duration_s']} s" if "duration_s" in s else ""))
    for m in data["messages"]:
        where = f"line {m['line']} " if m["line"] else ""
        where += f"[{visible(m['barcode'])}] " if m["barcode"] else ""
        print(f"{m['level']:8} {m['code']:20} {where}{visible(m['text'])}")
    return 0


def _cmd_conflicts(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.imports.conflicts import describe, list_conflicts, patron_name, word
    from patron_tui.store import runlog
    from patron_tui.textsafe import visible

    conn, operator = _connect(db_path)
    if conn is None:
        return _fail(operator)
    try:
        if runlog.get_run(conn, args.run_id) is None:
            return _fail(f"no run {args.run_id}")
        conflicts = list_conflicts(conn, args.run_id, None if args.all else "open")
    finally:
        conn.close()
    if args.json:
        print(json.dumps([c.to_json() for c in conflicts], indent=2, ensure_ascii=False))
        return 0
    if not conflicts:
        print(f"run {args.run_id}: no {'' if args.all else 'open '}import conflicts")
        return 0
    for c in conflicts:
        held = describe(c.holder) if c.holder else "nobody now"
        into = f"patron {c.target_id} ({visible(patron_name(c.target))})" if c.target_id else "a new patron"
        state = c.status + (f" {visible(c.new_value)}" if c.new_value else "")
        print(f"{c.id:6}  line {c.line}  {word(c.field)} {visible(c.value)}  [{state}]")
        print(f"        held by {visible(held)}")
        print(f"        incoming {visible(patron_name(c.incoming))} -> {into}")
    return 0


def _cmd_resolve(db_path: Path, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from patron_tui.runs import RunEngine
    from patron_tui.services.imports.conflicts import CONFLICT_KIND, resolve_conflict, resolve_title
    from patron_tui.store import Store, StoreError

    if args.action == "edit" and not (args.value or "").strip():
        parser.error("resolve: edit needs --value V (the new value of the conflicting field)")
    if args.action != "edit" and args.value is not None:
        parser.error("resolve: --value goes with edit")
    store = Store(db_path)
    try:
        store.connect().close()
    except StoreError as exc:
        return _fail(str(exc))
    refused = _refusal(store, "import_patrons")
    if refused:
        return _fail(refused)
    engine = RunEngine(store, pool_size=1)
    if not args.json:
        _print_messages(engine)
    try:
        handle = engine.execute(
            CONFLICT_KIND, resolve_title(args.conflict_id, args.action),
            lambda ctx: resolve_conflict(ctx, args.conflict_id, args.action, args.value),
            params={"conflict_id": args.conflict_id, "action": args.action, "value": args.value},
        )
    finally:
        engine.shutdown()
    ok = handle.status.value == "succeeded"
    if args.json:
        print(json.dumps({"run_id": handle.run_id, "status": handle.status.value, "error": handle.error,
                          "resolution": {k: v for k, v in handle.summary.items() if k != "messages"}},
                         indent=2))
    elif ok:
        print(f"run {handle.run_id}: conflict {args.conflict_id} {handle.summary.get('status')}")
    return 0 if ok else _run_failed(handle, db_path, quiet=args.json)


def _run_console(db_path: Path, theme: str | None, workers: int | None) -> int:
    from patron_tui.ui.app import run_console

    return run_console(db_path, theme=theme, pool_size=workers)


if __name__ == "__main__":
    raise SystemExit(main())
