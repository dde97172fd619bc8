"""The one shape of every patron utility: Selections, Options, plan, preview, run, report.

A utility is a `Utility` subclass registered with `@register`. It says what it would do
with `plan(conn, ids, options, operator)` (a pure read: the changes, before and after, and
the patrons it skips with the reason) and does it with `apply(writer, plan, options, ctx)`
(writes through the changeset writer). The preview and the run both come from `plan()`:
the run recomputes the plan inside its write transaction, so what it writes is exactly
what the plan says, and refuses to run when the plan's fingerprint (the selected ids and
the before-values of every change) differs from the preview's ("the selection changed since
the preview"). A run is one transaction: it writes everything or nothing.

The operations report is the run's messages: one 'info' message per change (code
"changed"), one 'skipped' message per skipped patron, one 'error' message per patron the run
could not change, and the run's summary {"utility", "changed", "skipped", "errors",
"selected", "notes"}. Changes and skips are written in the run's transaction, so a run that
fails leaves no "changed" line behind.

Every run needs the batch-tools permission ("Import, Export and Utilities"); a utility's
own rules are in its `check()`. No utility changes or deletes a patron whose security group
the operator does not outrank (a level number not higher than theirs; level 0 outranks all):
`level_skips` skips them, with the security-group rule's sentence, before `plan()` runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal, TextIO, get_args, get_origin

from pydantic import BaseModel, ValidationError

from patron_tui.models import EventKind
from patron_tui.runs import RunContext, RunFailed, RunHandle
from patron_tui.services.background import queue_run, register_background
from patron_tui.services.permissions import (
    PermissionDenied, operator_level, patron_level_refusal, require_batch_tools,
)
from patron_tui.services.utilities.selections import (
    SelectionError, Selections, selected_ids, selection_where,
)
from patron_tui.services.utilities.terms import Terms
from patron_tui.store import ChangesetWriter, runlog

__all__ = [
    "Change", "Skip", "Plan", "Preview", "Report", "Utility", "UtilityError", "Selections",
    "OptionField", "UTILITIES", "RUN_KIND", "SAMPLES", "register", "get", "choices", "option_fields",
    "parse_options", "preview", "start_utility", "run_utility", "report", "report_csv",
    "patron_rows", "patron_name", "fingerprint", "PermissionDenied", "SYSTEM_REASON", "set_rows", "skip",
    "change", "plan_for", "validate_options", "run_utility",
]

RUN_KIND = "utility"
SAMPLES = 10
SYSTEM_REASON = "the Unknown Patron (the system patron) is never changed by a utility"
#: choices names whose values must be one of the choices (homerooms are only suggestions)
STRICT_CHOICES = ("grades", "sites", "target_sites", "policies", "security_groups", "statuses", "note_types", "patron_types")
NOTE_TYPES = ("Contact", "General", "Alert", "Category")


class UtilityError(ValueError):
    """A utility that cannot run as asked; the message is a sentence naming the field/option."""


class Change(BaseModel):
    """One row the run changes: the patron, and the value before and after (as text)."""
    patron_id: int
    barcode: str | None = None
    name: str
    before: str
    after: str
    #: the changed row when it is not the patron's own (a checkout for Recompute Due Dates)
    row_id: int | None = None


class Skip(BaseModel):
    """A selected patron the run leaves alone (or, in a report's errors, could not change)."""
    patron_id: int
    barcode: str | None = None
    name: str
    reason: str


class Plan(BaseModel):
    """What a run would do; the preview and the run both come from `Utility.plan()`."""
    selected: int
    changes: list[Change] = []
    skipped: list[Skip] = []
    notes: list[str] = []
    #: the label of the changed value (report column headers "<column> before/after"); terms applied
    column: str = ""
    #: filled by the framework (see `fingerprint`); utilities leave it empty
    fingerprint: str = ""
    #: patrons `apply()` could not change (it appends here); reported as errors
    errors: list[Skip] = []
    #: anything else apply() needs from plan() (not shown, not fingerprinted)
    data: dict[str, Any] = {}


class Preview(BaseModel):
    utility: str
    title: str
    selections: str
    selected: int
    changes: int
    samples: list[Change]
    skipped: list[Skip]
    notes: list[str]
    fingerprint: str
    removes_data: bool
    column: str = ""
    follow_up: str | None = None


class Report(BaseModel):
    run_id: int
    utility: str
    title: str
    status: str = ""
    changed: int
    skipped: list[Skip]
    errors: list[Skip]
    notes: list[str]
    selected: int = 0
    error: str | None = None
    follow_up: str | None = None


class OptionField(BaseModel):
    """One option as a form or the CLI shows it (terms applied)."""
    name: str
    title: str
    description: str = ""
    kind: str               # "text", "bool", "int", "decimal", "date", "choice"
    choices: str | None = None
    #: the allowed values of a Literal option (a fixed list, no choices name)
    values: list[str] = []
    required: bool = False
    default: Any = None
    max_length: int | None = None


class Utility:
    """A patron utility; subclass, set the class variables, register with `@register`."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    removes_data: ClassVar[bool] = False
    needs_selection: ClassVar[bool] = True
    #: a utility to offer after a run of this one, on the same selection (Change Patron Policy:
    #: "recompute-due-dates"); Preview.follow_up and Report.follow_up carry it
    follow_up: ClassVar[str | None] = None
    #: True for a utility that applies the security-level rule to each patron itself (Change
    #: Patron Security Group, Reset Patron Accounts); for every other one the framework skips
    #: the selected patrons the operator does not outrank (`level_skips`) before `plan()`
    checks_levels: ClassVar[bool] = False
    #: for a utility with `after_commit` work: what a run killed during that work (after its
    #: commit) reads as its error (RunContext.if_stopped)
    stopped_after_commit: ClassVar[str] = ("its changes were committed, then the process stopped before the "
                                           "work after the commit finished")

    def available(self, conn: sqlite3.Connection) -> str | None:
        """None when the utility can run in this district, else why not."""
        return None

    def check(self, conn: sqlite3.Connection, operator: str, options: BaseModel) -> None:
        """The utility's own permission and option rules: PermissionDenied / UtilityError."""

    def plan(self, conn: sqlite3.Connection, ids: list[int], options: BaseModel, operator: str) -> Plan:
        raise NotImplementedError

    def apply(self, writer: ChangesetWriter, plan: Plan, options: BaseModel, ctx: RunContext | None) -> Any:
        """Write the plan's changes (in the run's write transaction). A utility that overrides
        `after_commit` returns what it needs (not None) to have it called once the transaction committed."""
        raise NotImplementedError

    def after_commit(self, ctx: RunContext, plan: Plan, options: BaseModel, data: Any) -> None:
        """Work that must not hold the write lock (sending mail), after the run's transaction
        committed, with what `apply()` returned; never for a run that failed or was cancelled
        before its commit, nor for a preview. A change it cannot complete: put it back with
        `ctx.writer()` (the same run, so its undo covers both) and append the patron to
        `plan.errors`; the "changed" lines of such a run are written after this returns."""

    def heading(self, terms: Terms) -> tuple[str, str]:
        return terms.apply(self.title), terms.apply(self.description)


UTILITIES: dict[str, Utility] = {}


def register(cls: type[Utility]) -> type[Utility]:
    """Class decorator: add a utility to the registry under its name."""
    if cls.name in UTILITIES:
        raise ValueError(f"two utilities named {cls.name!r}")
    UTILITIES[cls.name] = cls()
    return cls


def get(name: str) -> Utility:
    util = UTILITIES.get(name)
    if util is None:
        raise UtilityError(f"No utility named {name!r}; `patron-tui utility --list` shows them.")
    return util


# -- choices and options ---------------------------------------------------------------------------

_CHOICE_SQL = {
    "grades": "SELECT code, name FROM grades ORDER BY position",
    "sites": "SELECT code, name FROM sites ORDER BY is_union, code",
    # sites patrons can be moved to: every site but the Union Site
    "target_sites": "SELECT code, name FROM sites WHERE is_union = 0 ORDER BY code",
    "policies": "SELECT code, name FROM policies ORDER BY code",
    "security_groups": "SELECT code, name || ' (level ' || security_level || ')' FROM security_groups"
                       " ORDER BY security_level, code",
    "statuses": "SELECT code, name FROM statuses ORDER BY id",
    "patron_types": "SELECT code, name FROM patron_types ORDER BY code",
    "homerooms": "SELECT DISTINCT homeroom, homeroom FROM patrons WHERE homeroom <> ''"
                 " ORDER BY homeroom COLLATE NOCASE LIMIT 2000",
}


def choices(conn: sqlite3.Connection, name: str) -> list[tuple[str, str]]:
    """(code, label) pairs for a choices name (grades, sites, policies, ...)."""
    if name == "note_types":
        return [(t, t) for t in NOTE_TYPES]
    sql = _CHOICE_SQL.get(name)
    if sql is None:
        raise KeyError(f"no choices named {name!r}")
    return [(r[0], r[1]) for r in conn.execute(sql)]


def _kind(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "choice"
    args = [a for a in get_args(annotation) if a is not type(None)]
    t = args[0] if get_origin(annotation) is not None and len(args) == 1 else annotation
    if get_origin(t) is Literal:
        return "choice"
    return {bool: "bool", int: "int", Decimal: "decimal", date: "date", float: "decimal"}.get(t, "text")


def _literal_values(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    for a in get_args(annotation):
        if get_origin(a) is Literal:
            return [str(x) for x in get_args(a)]
    return []


def option_fields(utility: Utility, terms: Terms | None = None) -> list[OptionField]:
    """The utility's options as a form or the CLI shows them (terms applied)."""
    terms = terms or Terms()
    out = []
    for fname, f in utility.Options.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        max_length = None
        for m in f.metadata:
            max_length = getattr(m, "max_length", None) or max_length
        kind = "choice" if extra.get("choices") else _kind(f.annotation)
        out.append(OptionField(
            name=fname, title=terms.apply(f.title or fname.replace("_", " ").capitalize()),
            description=terms.apply(f.description or ""), kind=kind,
            choices=extra.get("choices"), required=f.is_required(),
            default=None if f.is_required() else f.get_default(call_default_factory=True),
            max_length=max_length, values=_literal_values(f.annotation),
        ))
    return out


_TRUE = {"1", "true", "yes", "on", "y", "x"}
_FALSE = {"0", "false", "no", "off", "n", ""}


def _parse_date(text: str) -> date:
    for fmt in ("%m/%d/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not a date; write it MM/DD/YYYY")


def parse_options(utility: Utility, values: dict[str, Any], terms: Terms | None = None) -> BaseModel:
    """The utility's Options from text (a form, the CLI): dates MM/DD/YYYY, booleans
    on/off/yes/no/true/false, blank optional values as not given. UtilityError names the field
    (with the district's terms when given)."""
    fields = {f.name: f for f in option_fields(utility, terms)}
    data: dict[str, Any] = {}
    for key, raw in values.items():
        f = fields.get(key)
        if f is None:
            raise UtilityError(f"{utility.title}: no option named {key!r}.")
        if not isinstance(raw, str):
            data[key] = raw
            continue
        text = raw.strip()
        try:
            if f.kind == "bool":
                low = text.lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError(f"{raw!r} is not on or off")
                data[key] = low in _TRUE
            elif f.kind == "date":
                if text:
                    data[key] = _parse_date(text)
                elif f.required:
                    raise ValueError("a date is required (MM/DD/YYYY)")
            elif f.kind in ("int", "decimal"):
                if text:
                    data[key] = int(text) if f.kind == "int" else Decimal(text.lstrip("$"))
                elif f.required:
                    raise ValueError("a number is required")
            else:
                data[key] = raw if f.kind == "text" else text
        except (ValueError, InvalidOperation) as exc:
            msg = str(exc) if not isinstance(exc, InvalidOperation) else f"{raw!r} is not an amount"
            if f.kind == "int" and "invalid literal" in msg:
                msg = f"{raw!r} is not a whole number"
            raise UtilityError(f"{f.title}: {msg}.") from None
    return validate_options(utility, data, terms)


def validate_options(utility: Utility, data: dict[str, Any] | BaseModel, terms: Terms | None = None) -> BaseModel:
    if isinstance(data, utility.Options):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        return utility.Options.model_validate(data)
    except ValidationError as exc:
        raise UtilityError((terms or Terms()).apply(_first_error(utility, exc))) from None


def _first_error(utility: Utility, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(x) for x in err.get("loc", ())]
    f = utility.Options.model_fields.get(loc[0]) if loc else None
    label = (f.title if f is not None and f.title else (loc[0].replace("_", " ") if loc else "")) or utility.title
    msg = err.get("msg", str(exc)).removeprefix("Value error, ")
    return f"{label}: {msg}."


def _check_choices(conn: sqlite3.Connection, utility: Utility, options: BaseModel, terms: Terms) -> None:
    for f in option_fields(utility, terms):
        if f.choices not in STRICT_CHOICES:
            continue
        value = getattr(options, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        codes = {c for c, _ in choices(conn, f.choices)}
        for v in values:
            if v not in (None, "") and v not in codes:
                raise UtilityError(f"{f.title}: {v!r} is not one of the district's {f.choices.replace('_', ' ')}.")


# -- reading patrons ---------------------------------------------------------------------------------

def patron_name(row: Any) -> str:
    last, first = row["last_name"], row["first_name"]
    if last and first:
        return f"{last}, {first}"
    return last or first or "(no name)"


def patron_rows(conn: sqlite3.Connection, ids: Sequence[int], columns: Iterable[str] = ()) -> list[sqlite3.Row]:
    """The selected patrons, ascending by id, with id, barcode, last_name, first_name,
    is_system and `columns` (one statement, whatever the number of ids)."""
    cols = ["id", "barcode", "last_name", "first_name", "is_system",
            *[c for c in columns if c not in ("id", "barcode", "last_name", "first_name", "is_system")]]
    return conn.execute(
        f"SELECT {', '.join('p.' + c for c in cols)} FROM patrons p"
        " WHERE p.id IN (SELECT value FROM json_each(?)) ORDER BY p.id", (json.dumps(list(ids)),)
    ).fetchall()


def skip(row: Any, reason: str) -> Skip:
    return Skip(patron_id=row["id"], barcode=row["barcode"], name=patron_name(row), reason=reason)


def change(row: Any, before: Any, after: Any, *, row_id: int | None = None) -> Change:
    return Change(patron_id=row["id"], barcode=row["barcode"], name=patron_name(row),
                  before="" if before is None else str(before), after="" if after is None else str(after),
                  row_id=row_id)


def set_rows(writer: ChangesetWriter, table: str, keys: Iterable[int], changes: dict[str, Any]) -> int:
    """Set the same `changes` on every row of `table` whose id is in `keys`: set-based (one
    key table, two statements: `ChangesetWriter.update_where`), journalled like update_many.
    Returns the rows changed."""
    conn = writer.conn
    conn.execute("DROP TABLE IF EXISTS temp._util_keys")
    conn.execute("CREATE TEMP TABLE _util_keys (k INTEGER PRIMARY KEY)")
    try:
        conn.execute("INSERT OR IGNORE INTO temp._util_keys (k) SELECT value FROM json_each(?)",
                     (json.dumps(list(keys)),))
        return writer.update_where(table, changes, keys="_util_keys")
    finally:
        conn.execute("DROP TABLE IF EXISTS temp._util_keys")


def fingerprint(ids: Sequence[int], plan: Plan) -> str:
    """"<selected count>-<hash>": the hash of the selected ids, every change's row, before- and
    after-value, and every skip (the count lets a refusal say how many patrons were selected
    then). A run whose plan hashes differently would not do what the preview showed."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(list(ids)).encode())
    h.update(json.dumps([(c.patron_id, c.row_id, c.before, c.after) for c in plan.changes]).encode())
    h.update(json.dumps([(s.patron_id, s.reason) for s in plan.skipped]).encode())
    return f"{len(ids)}-{h.hexdigest()}"


# -- preview and run ------------------------------------------------------------------------------------

def _prepare(conn: sqlite3.Connection, name: str, selections: Selections, options: BaseModel | dict,
             operator: str) -> tuple[Utility, BaseModel, Terms, list[int]]:
    util = get(name)
    why = util.available(conn)
    if why:
        raise UtilityError(why)
    terms = Terms.load(conn)
    options = validate_options(util, options, terms)
    require_batch_tools(conn, operator)
    util.check(conn, operator, options)       # the utility's own sentences come first
    _check_choices(conn, util, options, terms)
    try:
        where, params = selection_where(conn, selections, needs_selection=util.needs_selection)
    except SelectionError as exc:
        raise UtilityError(str(exc)) from exc
    return util, options, terms, selected_ids(conn, where, params)


def level_skips(conn: sqlite3.Connection, ids: Sequence[int], operator: str) -> list[Skip]:
    """The selected patrons `operator` may not change or delete, each skipped with the sentence
    of the security-group rule (permissions.patron_level_refusal): a patron whose security
    group has a security level number not higher than the operator's, or a group not in the
    table; none for a district administrator (level 0) or a patron with no security group.
    (A login that is no operator is refused before any plan: require_batch_tools.)"""
    level = operator_level(conn, operator)
    if not level:
        return []
    rows = conn.execute(
        "SELECT p.id, p.barcode, p.last_name, p.first_name, p.security_group, g.security_level"
        " FROM patrons p LEFT JOIN security_groups g ON g.code = p.security_group"
        " WHERE p.id IN (SELECT value FROM json_each(?)) AND p.is_system = 0 AND p.security_group <> ''"
        " AND (g.security_level IS NULL OR g.security_level <= ?) ORDER BY p.id",
        (json.dumps(list(ids)), level)).fetchall()
    return [skip(r, patron_level_refusal(level, r["security_group"], r["security_level"]) or "") for r in rows]


def _plan(conn: sqlite3.Connection, util: Utility, ids: list[int], options: BaseModel, operator: str,
          terms: Terms) -> Plan:
    refused = [] if util.checks_levels else level_skips(conn, ids, operator)
    if refused:   # the level rule first: plan() never sees a patron the operator may not change
        gone = {s.patron_id for s in refused}
        plan = util.plan(conn, [i for i in ids if i not in gone], options, operator)
        plan.selected = len(ids)
        plan.skipped = [*refused, *plan.skipped]
    else:
        plan = util.plan(conn, ids, options, operator)
    plan.column = terms.apply(plan.column)
    plan.notes = [terms.apply(n) for n in plan.notes]
    plan.fingerprint = fingerprint(ids, plan)
    return plan


def plan_for(conn: sqlite3.Connection, name: str, selections: Selections, options: BaseModel | dict,
             operator: str) -> Plan:
    """The whole plan (every change), for tests and exports; `preview` keeps samples only."""
    util, options, terms, ids = _prepare(conn, name, selections, options, operator)
    return _plan(conn, util, ids, options, operator, terms)


def preview(conn: sqlite3.Connection, name: str, selections: Selections, options: BaseModel | dict,
            operator: str) -> Preview:
    """What a run would do now: how many patrons change, samples, every skip with its reason.

    UtilityError (unavailable, bad option, no selection), PermissionDenied."""
    util, options, terms, ids = _prepare(conn, name, selections, options, operator)
    plan = _plan(conn, util, ids, options, operator, terms)
    return Preview(utility=util.name, title=terms.apply(util.title), selections=describe(util, selections, terms),
                   selected=plan.selected, changes=len(plan.changes), samples=plan.changes[:SAMPLES],
                   skipped=plan.skipped, notes=plan.notes, fingerprint=plan.fingerprint,
                   removes_data=util.removes_data, column=plan.column, follow_up=util.follow_up)


def describe(util: Utility, selections: Selections, terms: Terms) -> str:
    """The selection in one line; "all patrons" for a utility that acts on everyone."""
    if selections.is_empty() and not util.needs_selection:
        return "all patrons"
    return selections.describe(terms)


def _refused_since(expected: str, now: str) -> str:
    then = expected.split("-", 1)[0]
    count = now.split("-", 1)[0]
    return (f"The selection changed since the preview ({then} patrons then, {count} now): preview again. "
            "Nothing was changed.")


def run_utility(ctx: RunContext, name: str, selections: Selections, options: BaseModel,
                operator: str, expected: str | None) -> dict[str, Any]:
    """The run (kind "utility"): recompute the plan in the write transaction, refuse a
    changed selection, apply, report; one transaction."""
    conn = ctx.conn
    with ctx.writer() as w:
        try:
            util, options, terms, ids = _prepare(conn, name, selections, options, operator)
        except (UtilityError, PermissionError) as exc:
            raise RunFailed(str(exc)) from None
        ctx.info(f"{terms.apply(util.title)}: {describe(util, selections, terms)} - {len(ids)} patrons selected.")
        ctx.progress(0, len(ids), force=True)
        plan = _plan(conn, util, ids, options, operator, terms)
        if expected and plan.fingerprint != expected:
            raise RunFailed(_refused_since(expected, plan.fingerprint))
        ctx.check_cancelled()
        pending = util.apply(w, plan, options, ctx)
        if type(util).after_commit is Utility.after_commit:
            pending = None     # no after-commit work (an apply() that returns a count, say)
        ctx.check_cancelled()
        failed = {e.patron_id for e in plan.errors}
        done = [c for c in plan.changes if c.patron_id not in failed]
        changed_lines = lambda: [   # noqa: E731
            (f"{c.name}: {c.before or '(blank)'} -> {c.after or '(blank)'}", "changed", c.row_id, c.barcode,
             c.patron_id) for c in done]
        if pending is None:
            ctx.messages(EventKind.INFO, changed_lines(), conn=conn)
        ctx.messages(EventKind.SKIPPED, [
            (f"{s.name}: {s.reason}", "skipped", None, s.barcode, s.patron_id) for s in plan.skipped], conn=conn)
        ctx.messages(EventKind.ERROR, [
            (f"{s.name}: {s.reason}", "not_changed", None, s.barcode, s.patron_id) for s in plan.errors], conn=conn)
        # the run's outcome commits with its data (RunContext.writer); with after-commit work the
        # run goes on, and a process that dies during that work says what was committed
        ctx.summary.update({"utility": util.name, "changed": len(done), "skipped": len(plan.skipped),
                            "errors": len(plan.errors), "selected": plan.selected, "notes": list(plan.notes),
                            "column": plan.column, "follow_up": util.follow_up})
        if pending is not None:
            ctx.if_stopped = f"{util.stopped_after_commit}: undo run {ctx.run_id} to put the patrons back"
    if pending is not None:   # committed: now the work that must not hold the write lock
        n = len(plan.errors)
        try:
            util.after_commit(ctx, plan, options, pending)
        finally:
            late = plan.errors[n:]
            undone = {e.patron_id for e in late}
            done = [c for c in done if c.patron_id not in undone]
            ctx.messages(EventKind.INFO, changed_lines())
            ctx.messages(EventKind.ERROR, [
                (f"{s.name}: {s.reason}", "not_changed", None, s.barcode, s.patron_id) for s in late])
            ctx.summary.update({"utility": util.name, "changed": len(done), "skipped": len(plan.skipped),
                                "errors": len(plan.errors), "selected": plan.selected, "notes": plan.notes,
                                "column": plan.column})
        ctx.commit_outcome()   # the after-commit work is done: the outcome, 'succeeded', alone
    for note in plan.notes:
        ctx.info(note, code="note")
    ctx.progress(len(ids), len(ids), force=True)
    ctx.info(f"{len(done)} changed, {len(plan.skipped)} skipped, {len(plan.errors)} errors.")
    return {"utility": util.name, "changed": len(done), "skipped": len(plan.skipped), "errors": len(plan.errors),
            "selected": plan.selected, "notes": plan.notes, "column": plan.column, "follow_up": util.follow_up}


def start_utility(engine: Any, store: Any, operator: str, name: str, selections: Selections,
                  options: BaseModel | dict, *, fingerprint: str | None) -> RunHandle:
    """Check availability, options, permissions and the selection, then start the run
    (kind "utility", titled with the utility's title). With `fingerprint` (the preview's),
    the run fails and changes nothing when the selection or its rows changed since."""
    conn = store.connect()
    try:
        util, options, terms, _ids = _prepare(conn, name, selections, options, operator)
    finally:
        conn.close()
    params = {"utility": name, "selections": json.loads(selections.model_dump_json()),
              "options": json.loads(options.model_dump_json()), "fingerprint": fingerprint}
    return engine.start(RUN_KIND, terms.apply(util.title),
                        lambda ctx: run_utility(ctx, name, selections, options, operator, fingerprint),
                        params=params)


# -- the operations report --------------------------------------------------------------------------------

def _split(text: str, name: str | None) -> tuple[str, str]:
    if name and text.startswith(name + ": "):
        return name, text[len(name) + 2:]
    head, sep, tail = text.partition(": ")
    return (head, tail) if sep else ("", text)


def _names(conn: sqlite3.Connection, rows: list[dict]) -> dict[int, str]:
    ids = [r["patron_id"] for r in rows if r["patron_id"] is not None]
    return {r["id"]: patron_name(r) for r in conn.execute(
        "SELECT id, last_name, first_name FROM patrons WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),))}


def _skips(conn: sqlite3.Connection, rows: list[dict]) -> list[Skip]:
    names = _names(conn, rows)
    out = []
    for r in rows:
        name, reason = _split(r["text"], names.get(r["patron_id"]))
        out.append(Skip(patron_id=r["patron_id"] or 0, barcode=r["barcode"], name=name, reason=reason))
    return out


def report(conn: sqlite3.Connection, run_id: int) -> Report:
    """The operations report of a utility run: changed, skipped with reasons, errors."""
    run = runlog.get_run(conn, run_id)
    if run is None or run["kind"] != RUN_KIND:
        raise UtilityError(f"Run {run_id} is not a utility run.")
    s = run["summary"]
    skipped = runlog.messages(conn, run_id, ["skipped"])
    errors = [m for m in runlog.messages(conn, run_id, ["error"]) if m["code"] == "not_changed"]
    return Report(run_id=run_id, utility=s.get("utility") or run["params"].get("utility", ""), title=run["title"],
                  status=run["status"], changed=s.get("changed", 0), skipped=_skips(conn, skipped),
                  errors=_skips(conn, errors), notes=s.get("notes", []), selected=s.get("selected", 0),
                  error=run["error"], follow_up=s.get("follow_up"))


def report_csv(conn: sqlite3.Connection, run_id: int, out: TextIO) -> int:
    """Write the operations report as CSV (one row per changed, skipped or refused patron);
    returns the rows written. Header: Outcome, Barcode, Name, <column> before, <column> after, Reason."""
    rep = report(conn, run_id)
    column = (runlog.get_run(conn, run_id) or {}).get("summary", {}).get("column") or "Value"
    writer = csv.writer(out)
    writer.writerow(["Outcome", "Barcode", "Name", f"{column} before", f"{column} after", "Reason"])
    n = 0
    changed = [m for m in runlog.messages(conn, run_id, ["info"]) if m["code"] == "changed"]
    names = _names(conn, changed)
    for m in changed:
        name, rest = _split(m["text"], names.get(m["patron_id"]))
        before, _, after = rest.rpartition(" -> ")
        writer.writerow(["changed", m["barcode"] or "", name, before, after, ""])
        n += 1
    for outcome, rows in (("skipped", rep.skipped), ("error", rep.errors)):
        for s in rows:
            writer.writerow([outcome, s.barcode or "", s.name, "", "", s.reason])
            n += 1
    return n


# -- run in background (issue 9) ------------------------------------------------------------------------

def queue_utility(conn: sqlite3.Connection, operator: str, name: str, selections: Selections,
                  options: BaseModel | dict, *, fingerprint: str | None) -> int:
    """Hand a utility run to the scheduler ("run in background"): the checks of `start_utility`
    now (UtilityError, PermissionDenied: batch tools and the utility's own `check()`), then a
    queued run of kind "utility" with the params start_utility records. Returns its run id. The
    scheduler checks everything again when it runs it and, with `fingerprint` (the preview's),
    refuses a selection or rows that changed since the preview, changing nothing."""
    util, options, terms, _ids = _prepare(conn, name, selections, options, operator)
    params = {"utility": name, "selections": json.loads(selections.model_dump_json()),
              "options": json.loads(options.model_dump_json()), "fingerprint": fingerprint}
    return queue_run(conn, operator, RUN_KIND, terms.apply(util.title), params)


def _run_queued(ctx: RunContext) -> dict[str, Any]:
    """A utility run handed to the scheduler: its params are the ones start_utility records;
    it runs as the operator who queued it."""
    p = ctx.params
    try:
        util = get(p["utility"])
        selections = Selections.model_validate(p.get("selections") or {})
        options = validate_options(util, p.get("options") or {})
    except (KeyError, TypeError, ValidationError, UtilityError) as exc:
        raise RunFailed(f"this queued utility run cannot be read: {exc}") from None
    return run_utility(ctx, util.name, selections, options, ctx.operator, p.get("fingerprint"))


register_background(RUN_KIND, _run_queued, permission="batch_tools")
__all__ += ["queue_utility"]
