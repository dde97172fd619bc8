"""The patron utilities: one small module per family, one shared shape (base.py).

`UTILITIES` maps each utility's CLI name to it; `get(name)`; `listing(conn)` gives
(name, title, description) with the district's terminology, sorted by title. Adding a
utility is one module whose `Utility` subclasses carry `@register`, imported below.
"""

from __future__ import annotations

import importlib
import sqlite3

from patron_tui.services.utilities.base import (  # noqa: F401  (the package's API)
    RUN_KIND, UTILITIES, Change, OptionField, Plan, Preview, Report, Skip, Utility, UtilityError,
    choices, get, option_fields, parse_options, plan_for, preview, register, report, report_csv,
    start_utility,
)
from patron_tui.services.utilities.selections import Selections, SelectionError  # noqa: F401
from patron_tui.services.utilities.terms import Terms  # noqa: F401

# the utility families; a module another helper has not written yet is simply not there
for _module in ("fields", "notes", "history", "charges", "removal", "accounts"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_module}":
            raise


def listing(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(name, title, description) of every utility, terms applied, sorted by title."""
    terms = Terms.load(conn)
    return sorted(((u.name, terms.apply(u.title), terms.apply(u.description)) for u in UTILITIES.values()),
                  key=lambda t: t[1].casefold())
