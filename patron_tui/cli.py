"""The `patron-tui` command: no subcommand opens the console; subcommands are
the headless twins of the console's actions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from patron_tui import __version__
from patron_tui.config import resolve_db_path


def _add_db(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    # subcommands suppress their default so `patron-tui --db X demo` keeps X
    p.add_argument("--db", metavar="PATH", default=None if top else argparse.SUPPRESS,
                   help="patron database (default: $PATRON_TUI_DB or the user data dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patron-tui",
        description="Keyboard-driven console for a library's patron records. "
        "Without a subcommand, opens the console.",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `patron-tui check | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    db_path = resolve_db_path(args.db)
    if args.command is None:
        return _run_console(db_path, args.theme, args.workers)
    if args.command == "demo":
        return _cmd_demo(db_path, args)
    if args.command == "check":
        return _cmd_check(db_path, args)
    parser.error(f"unknown command {args.command}")
    return 2


def _fail(message: str) -> int:
    print(f"patron-tui: {message}", file=sys.stderr)
    return 2


def _cmd_demo(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.demo import DemoExists, build_demo

    if args.patrons < 0:
        return _fail("--patrons must be 0 or more")
    try:
        stats = build_demo(db_path, patrons=args.patrons, seed=args.seed, replace=args.force,
                           progress=lambda msg: print(msg, file=sys.stderr))
    except DemoExists as exc:
        return _fail(str(exc))
    print(f"demo district with {stats['patrons']} patrons written to {db_path} in {stats['seconds']:.1f} s")
    return 0


def _cmd_check(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.models import MESSAGE_KINDS
    from patron_tui.textsafe import visible
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
        reader_gone = False

        def show(event) -> None:
            nonlocal reader_gone
            if reader_gone or event.kind not in MESSAGE_KINDS:
                return
            where = f"[{visible(event.barcode)}] " if event.barcode else ""
            try:
                print(f"{event.kind.value:8} {event.code:22} {where}{visible(event.text)}", flush=True)
            except BrokenPipeError:
                reader_gone = True
        engine.subscribe(show)
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


def _run_console(db_path: Path, theme: str | None, workers: int | None) -> int:
    from patron_tui.ui.app import run_console

    return run_console(db_path, theme=theme, pool_size=workers)


if __name__ == "__main__":
    raise SystemExit(main())
