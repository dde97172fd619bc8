"""Batch Update Patron Profile: change one medium's profile of every patron in a query set.

The operator picks a query set (or writes a statement), a **medium** (required) and the
fields to change. A field left blank (None) changes nothing; **Nightly Debug** is the one
exception and is always applied as given (off turns it off for every patron of the set). A
patron without a profile for the medium gets one, with the schema's defaults and the values
of the batch. Next Service Date is either one date, or spaced out: the patrons ordered by a
chosen field (ties by patron id), the first `group_size` get `start`, the next group
`start + every_days`, and so on.

`preview` says per field how many profiles change, from what to what (sampled rows), how
many profiles are created and how many queues will be filled. PROCESS (`start_batch_update`)
is one run of kind "batch_update" in one transaction through the changeset writer: the set
is resolved again at that moment, and the changes are applied with set-based statements
(a temporary table of the target profiles, the before-images journalled with one
INSERT ... SELECT, one UPDATE), so 100,000 profiles take about as long as one raw UPDATE.
A patron whose change the database refuses (a CHECK, a trigger, a constraint) does not stop
the others: the batch is applied again in slices inside SAVEPOINTs, and a slice that fails
is halved until the failing patron stands alone; that patron is left unchanged and becomes
an entry of the error report (run_messages level 'error', with the barcode). A failed or
cancelled run leaves the database as it was.

Service queues: with `fill_service_queues`, the run writes one fill request per profile
(queue_fill_requests); the background filler (services/queue_fill.py) fills them afterwards
as its own run. `start_batch_update` does NOT start the filler: once the batch run has
succeeded the caller hands its queues to one with `queue_fill.hand_off` (the filler already at
work, or one it starts) and names that run (the console and the CLI do; a queued batch does it
itself, `_run_queued`), and the scheduler process picks up any request still waiting.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from patron_tui.models import EventKind
from patron_tui.runs import RunContext, RunEngine, RunFailed, RunHandle
from patron_tui.services.background import register_background
from patron_tui.services.permissions import require_batch_tools
from patron_tui.services.query_sets import QuerySetError, Selection, resolve
from patron_tui.services.queries import StatementError
from patron_tui.store import utc_now
from patron_tui.store.changeset import ChangesetWriter

__all__ = [
    "BATCH_KIND",
    "ORDER_FIELDS",
    "FIELDS",
    "BatchError",
    "Spacing",
    "BatchUpdate",
    "Choices",
    "choices",
    "Target",
    "target",
    "FieldChange",
    "Preview",
    "preview",
    "start_batch_update",
    "queue_batch_update",
    "run_batch_update",
    "errors",
]

BATCH_KIND = "batch_update"

#: how Next Service Dates may be spaced: key -> label (ties always by patron id)
ORDER_FIELDS: dict[str, str] = {
    "last_name": "Last name",
    "barcode": "Barcode",
    "district_id": "District ID",
    "created_at": "Date added",
    "id": "Patron record order",
}
_ORDER_SQL = {
    "last_name": "patrons.last_name COLLATE NOCASE",
    "barcode": "patrons.barcode COLLATE NOCASE",
    "district_id": "patrons.district_id COLLATE NOCASE",
    "created_at": "patrons.created_at",
    "id": "patrons.id",
}

#: the profile fields a batch can change: column -> label (the form's order)
FIELDS: dict[str, str] = {
    "status_of_service": "Status of service",
    "max_items_out": "Maximum items out",
    "items_per_shipment": "Items per shipment",
    "service_frequency": "Service frequency",
    "next_service_date": "Next service date",
    "duplication_circulation": "Duplication circulation",
    "auto_select": "Auto-select",
    "nightly_debug": "Nightly debug",
    "queue_length": "Queue length",
}
_FLAGS = ("duplication_circulation", "auto_select", "nightly_debug")

DEFAULT_STATUSES = ("Active", "Suspended", "Inactive", "On hold")
DEFAULT_FREQUENCIES = ("Weekly", "Biweekly", "Monthly", "On request")

#: patrons per slice when a batch that failed as a whole is applied again slice by slice
_SLICE = 2_000


class BatchError(ValueError):
    """A batch update that cannot be done as asked; the message is a sentence saying why."""


# -- what the operator fills in --------------------------------------------------------------


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


class Spacing(BaseModel):
    """Next Service Date spaced out: `start` for the first `group_size` patrons (in
    `order_by` order, ties by patron id), `start + every_days` for the next group, ..."""

    start: date
    every_days: int = Field(ge=1, le=3650)
    group_size: int = Field(ge=1)
    order_by: str = "last_name"

    @field_validator("order_by")
    @classmethod
    def _known_order(cls, v: str) -> str:
        if v not in ORDER_FIELDS:
            raise ValueError(f"order by one of {', '.join(ORDER_FIELDS)}, not {v!r}")
        return v


class BatchUpdate(BaseModel):
    """The Batch Update Patron Profile form. None (or blank text) = leave the field as it is."""

    medium: str
    status_of_service: str | None = Field(default=None, max_length=40)
    max_items_out: int | None = Field(default=None, ge=0, le=99)
    items_per_shipment: int | None = Field(default=None, ge=1, le=99)
    service_frequency: str | None = Field(default=None, max_length=40)
    next_service_date: date | None = None
    spacing: Spacing | None = None
    duplication_circulation: bool | None = None
    auto_select: bool | None = None
    #: always applied as given: False turns Nightly Debug off for every patron of the set
    nightly_debug: bool = False
    add_subjects: list[str] = []
    fill_service_queues: bool = False
    queue_length: int | None = Field(default=None, ge=1, le=200)

    @field_validator("medium", mode="before")
    @classmethod
    def _medium(cls, v: Any) -> Any:
        v = _blank_to_none(v)
        if v is None:
            raise ValueError("a medium is required: the batch changes that medium's profile")
        return v

    @field_validator("status_of_service", "service_frequency", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return _blank_to_none(v)

    @field_validator("add_subjects", mode="before")
    @classmethod
    def _subjects(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.replace(",", " ").split()
        return list(dict.fromkeys(s.strip() for s in (v or []) if s and s.strip()))

    @model_validator(mode="after")
    def _one_date(self) -> "BatchUpdate":
        if self.next_service_date is not None and self.spacing is not None:
            raise ValueError("give Next Service Date as one date or spaced out, not both")
        return self

    def changes(self) -> dict[str, Any]:
        """The columns every profile of the batch gets, with their stored values (the spaced
        Next Service Date is per patron, so not here)."""
        out: dict[str, Any] = {}
        for col in FIELDS:
            value = getattr(self, col)
            if value is None:
                continue
            if isinstance(value, bool):
                value = int(value)
            elif isinstance(value, date):
                value = value.isoformat()
            out[col] = value
        return out


class Choices(BaseModel):
    """What the form offers."""

    media: list[tuple[str, str]]
    statuses_of_service: list[str]
    frequencies: list[str]
    subjects: list[tuple[str, str]]
    order_fields: list[tuple[str, str]]


def choices(conn: sqlite3.Connection) -> Choices:
    def merged(defaults: tuple[str, ...], column: str) -> list[str]:
        found = [r[0] for r in conn.execute(
            f"SELECT DISTINCT {column} FROM patron_profiles WHERE {column} <> '' ORDER BY 1")]
        return list(dict.fromkeys([*defaults, *found]))

    return Choices(
        media=[(r["code"], r["name"]) for r in conn.execute("SELECT code, name FROM media ORDER BY code")],
        statuses_of_service=merged(DEFAULT_STATUSES, "status_of_service"),
        frequencies=merged(DEFAULT_FREQUENCIES, "service_frequency"),
        subjects=[(r["code"], r["name"]) for r in conn.execute("SELECT code, name FROM subjects ORDER BY code")],
        order_fields=list(ORDER_FIELDS.items()),
    )


# -- which patrons -----------------------------------------------------------------------------


class Target(BaseModel):
    """Which patrons: a saved query set (by name) or a statement, with the count when chosen."""

    set_name: str | None = None
    statement: str
    count: int


def _selection(conn: sqlite3.Connection, set_name: str | None, statement: str | None) -> Selection:
    try:
        if set_name is not None:
            return resolve(conn, set_name=set_name)
        return resolve(conn, statement=statement or "")
    except StatementError as exc:
        raise BatchError(f"The search statement does not compile: {exc.message}.") from None
    except QuerySetError as exc:
        raise BatchError(f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from None


def target(conn: sqlite3.Connection, *, set_name: str | None = None, statement: str | None = None) -> Target:
    """The patrons of a saved set (by name) or of a statement; BatchError with a sentence."""
    if (set_name is None) == (statement is None):
        raise BatchError("Choose the patrons by a query set or by a search statement, not both or neither.")
    sel = _selection(conn, set_name, statement)
    return Target(set_name=sel.set_name, statement=sel.statement, count=sel.count)


def _resolve_target(conn: sqlite3.Connection, t: Target) -> Selection:
    return _selection(conn, t.set_name, None if t.set_name is not None else t.statement)


def _check(conn: sqlite3.Connection, update: BatchUpdate) -> BatchUpdate:
    """The update with the medium and subject codes as stored; BatchError if one is unknown."""
    row = conn.execute("SELECT code FROM media WHERE code = ? COLLATE NOCASE ORDER BY code = ? DESC",
                       (update.medium, update.medium)).fetchone()
    if row is None:
        known = ", ".join(r[0] for r in conn.execute("SELECT code FROM media ORDER BY code"))
        raise BatchError(f"There is no medium {update.medium!r}; choose one of {known}.")
    subjects = []
    for code in update.add_subjects:
        found = conn.execute("SELECT code FROM subjects WHERE code = ? COLLATE NOCASE ORDER BY code = ? DESC",
                             (code, code)).fetchone()
        if found is None:
            raise BatchError(f"There is no subject {code!r}; add it to the subjects table first.")
        subjects.append(found[0])
    return update.model_copy(update={"medium": row[0], "add_subjects": list(dict.fromkeys(subjects))})


# -- the target tables -------------------------------------------------------------------------
# temp._batch_keys (k = profile id, patron_id, nsd): the target patrons who have a profile of
# the medium, with their spaced date; temp._batch_patrons (patron_id, nsd): every target patron,
# filled only when needed (spaced dates, or patrons without a profile), as most batches change
# profiles that all exist and that table would be one more pass over the set.


class _Prepared:
    def __init__(self, patrons: int, with_profile: int, listed: bool) -> None:
        self.patrons = patrons
        self.with_profile = with_profile
        #: temp._batch_patrons holds every target patron (else: all are in temp._batch_keys)
        self.listed = listed

    @property
    def missing(self) -> int:
        return self.patrons - self.with_profile


def _prepare(conn: sqlite3.Connection, sel: Selection, update: BatchUpdate) -> _Prepared:
    _drop(conn)
    conn.execute("CREATE TEMP TABLE _batch_patrons (patron_id INTEGER PRIMARY KEY, nsd TEXT)")
    conn.execute("CREATE TEMP TABLE _batch_keys (k INTEGER PRIMARY KEY, patron_id INTEGER NOT NULL, nsd TEXT)")
    where = f"patrons.is_system = 0 AND ({sel.where})" if sel.where else "patrons.is_system = 0"
    sp = update.spacing
    if sp is None:
        # the statement's SQL names every column as patrons.<column>: the join cannot capture one
        conn.execute(
            "INSERT INTO temp._batch_keys (k, patron_id) SELECT pp.id, patrons.id FROM patrons"
            f" JOIN patron_profiles pp ON pp.patron_id = patrons.id AND pp.medium = ? WHERE {where}",
            (update.medium, *sel.params))
        with_profile = conn.execute("SELECT count(*) FROM temp._batch_keys").fetchone()[0]
        patrons = sel.count   # counted by resolve() with the same condition, a moment ago
        if with_profile == patrons:
            return _Prepared(patrons, with_profile, False)
        conn.execute(f"INSERT INTO temp._batch_patrons (patron_id) SELECT patrons.id FROM patrons WHERE {where}",
                     sel.params)
    else:
        conn.execute(
            "INSERT INTO temp._batch_patrons (patron_id, nsd) SELECT id, date(?, '+' || (((n - 1) / ?) * ?) || ' days')"
            f" FROM (SELECT patrons.id, row_number() OVER (ORDER BY {_ORDER_SQL[sp.order_by]}, patrons.id) AS n"
            f" FROM patrons WHERE {where})",
            (sp.start.isoformat(), sp.group_size, sp.every_days, *sel.params),
        )
        conn.execute(
            "INSERT INTO temp._batch_keys (k, patron_id, nsd) SELECT pp.id, b.patron_id, b.nsd"
            " FROM temp._batch_patrons b CROSS JOIN patron_profiles pp ON pp.patron_id = b.patron_id"
            " AND pp.medium = ?", (update.medium,))
        with_profile = conn.execute("SELECT count(*) FROM temp._batch_keys").fetchone()[0]
    patrons = conn.execute("SELECT count(*) FROM temp._batch_patrons").fetchone()[0]
    return _Prepared(patrons, with_profile, True)


def _drop(conn: sqlite3.Connection) -> None:
    for t in ("_batch_patrons", "_batch_keys", "_batch_slice"):
        conn.execute(f"DROP TABLE IF EXISTS temp.{t}")


def _missing(conn: sqlite3.Connection, medium: str, prep: _Prepared,
             ids: list[int] | None = None) -> list[tuple[int, str | None]]:
    """(patron id, spaced date) of the target patrons without a profile of `medium`
    (of those in `ids` when given)."""
    if not prep.missing:
        return []
    sql = ("SELECT b.patron_id, b.nsd FROM temp._batch_patrons b WHERE NOT EXISTS"
           " (SELECT 1 FROM patron_profiles pp WHERE pp.patron_id = b.patron_id AND pp.medium = ?)")
    params: tuple = (medium,)
    if ids is not None:
        sql += " AND b.patron_id IN (SELECT value FROM json_each(?))"
        params += (json.dumps(ids),)
    return [(r[0], r[1]) for r in conn.execute(sql + " ORDER BY b.patron_id", params)]


# -- preview -------------------------------------------------------------------------------------


class FieldChange(BaseModel):
    field: str
    label: str
    #: existing profiles whose value changes (created profiles are counted in profiles_created)
    changes: int
    #: (barcode, name, before, after) as display text
    samples: list[tuple[str, str, str, str]]


class Preview(BaseModel):
    target: Target
    patrons: int
    profiles_created: int
    fields: list[FieldChange]
    queues_to_fill: int
    notes: list[str]


def show_value(column: str, value: Any) -> str:
    """A profile value as the form shows it."""
    if value is None or value == "":
        return "(none)"
    if column in _FLAGS:
        return "on" if value else "off"
    if column == "next_service_date":
        try:
            return date.fromisoformat(str(value)[:10]).strftime("%m/%d/%Y")
        except ValueError:
            return str(value)
    return str(value)


def _name(row: sqlite3.Row) -> str:
    last, first = row["last_name"] or "", row["first_name"] or ""
    return f"{last}, {first}" if first else last


def preview(conn: sqlite3.Connection, target: Target, update: BatchUpdate, *, samples: int = 5) -> Preview:
    """What PROCESS would do now (the set is resolved again when it runs)."""
    update = _check(conn, update)
    sel = _resolve_target(conn, target)
    prep = _prepare(conn, sel, update)
    try:
        fields: list[FieldChange] = []
        targets: list[tuple[str, str, tuple]] = [(c, "?", (v,)) for c, v in update.changes().items()]
        if update.spacing is not None:
            targets.append(("next_service_date", "c.nsd", ()))
        targets.sort(key=lambda t: list(FIELDS).index(t[0]))
        for col, expr, params in targets:
            cond = f"t.{col} IS NOT {expr}"
            n = conn.execute(
                f"SELECT count(*) FROM temp._batch_keys c CROSS JOIN patron_profiles t ON t.id = c.k WHERE {cond}",
                params).fetchone()[0]
            rows = conn.execute(
                f"SELECT p.barcode, p.last_name, p.first_name, t.{col} AS old, {expr} AS new"
                f" FROM temp._batch_keys c CROSS JOIN patron_profiles t ON t.id = c.k"
                f" JOIN patrons p ON p.id = c.patron_id WHERE {cond}"
                f" ORDER BY p.last_name COLLATE NOCASE, p.first_name COLLATE NOCASE, p.id LIMIT ?",
                (*params, *params, samples)).fetchall() if samples > 0 and n else []
            fields.append(FieldChange(
                field=col, label=FIELDS[col], changes=n,
                samples=[(r["barcode"] or "", _name(r), show_value(col, r["old"]), show_value(col, r["new"]))
                         for r in rows]))
        if update.add_subjects:
            codes = json.dumps(update.add_subjects)
            lacking = ("EXISTS (SELECT 1 FROM json_each(?) s WHERE NOT EXISTS (SELECT 1 FROM profile_subjects ps"
                       " WHERE ps.profile_id = c.k AND ps.subject = s.value))")
            n = conn.execute(f"SELECT count(*) FROM temp._batch_keys c WHERE {lacking}", (codes,)).fetchone()[0]
            rows = conn.execute(
                "SELECT p.barcode, p.last_name, p.first_name, (SELECT group_concat(subject, ', ') FROM"
                " (SELECT subject FROM profile_subjects WHERE profile_id = c.k ORDER BY subject)) AS old, c.k"
                f" FROM temp._batch_keys c JOIN patrons p ON p.id = c.patron_id WHERE {lacking}"
                " ORDER BY p.last_name COLLATE NOCASE, p.first_name COLLATE NOCASE, p.id LIMIT ?",
                (codes, samples)).fetchall() if samples > 0 and n else []
            out = []
            for r in rows:
                old = [s for s in (r["old"] or "").split(", ") if s]
                new = sorted(set(old) | set(update.add_subjects))
                out.append((r["barcode"] or "", _name(r), ", ".join(old) or "(none)", ", ".join(new)))
            fields.append(FieldChange(field="subjects", label="Subjects", changes=n, samples=out))
        patrons, created = prep.patrons, prep.missing
        queues = 0
        if update.fill_service_queues:
            queues = created + conn.execute(
                "SELECT count(*) FROM temp._batch_keys c WHERE NOT EXISTS (SELECT 1 FROM queue_fill_requests r"
                " WHERE r.profile_id = c.k AND r.done_at IS NULL)").fetchone()[0]
    finally:
        _drop(conn)
    notes = [f"Nightly Debug is always applied: it will be {'on' if update.nightly_debug else 'off'} "
             f"for every patron of the set."]
    if created:
        notes.append(f"{created} patron{'s' if created != 1 else ''} without a {update.medium} profile will "
                     f"get one, with the defaults and the values above.")
    if patrons != target.count:
        notes.append(f"The set now holds {patrons} patrons (it held {target.count} when it was chosen); "
                     f"PROCESS acts on the patrons it holds then.")
    if update.fill_service_queues:
        notes.append(f"{queues} service queue{'s' if queues != 1 else ''} will be filled afterwards by the "
                     f"queue filler, in the background.")
    return Preview(target=target, patrons=patrons, profiles_created=created, fields=fields,
                   queues_to_fill=queues, notes=notes)


# -- process -----------------------------------------------------------------------------------------


def _title(target: Target, update: BatchUpdate) -> str:
    what = f"set {target.set_name!r}" if target.set_name else (target.statement or "(all patrons)")
    return f"Batch update {update.medium} profiles: {what}"


def start_batch_update(engine: RunEngine, store: Any, operator: str, target: Target,
                       update: BatchUpdate) -> RunHandle:
    """Check the permission and the form, then start the run (kind "batch_update").

    PermissionDenied when `operator` may not use batch tools, BatchError for an unknown
    medium or subject. Does not start the queue filler: hand the queues to one
    (queue_fill.hand_off) once this run has succeeded."""
    conn = store.connect()
    try:
        require_batch_tools(conn, operator)
        update = _check(conn, update)
    finally:
        conn.close()
    params = {"target": target.model_dump(), "update": json.loads(update.model_dump_json())}
    return engine.start(BATCH_KIND, _title(target, update),
                        lambda ctx: run_batch_update(ctx, target, update), params=params)


def errors(conn: sqlite3.Connection, run_id: int) -> list[tuple[str, str]]:
    """The error report of a batch run: (barcode, text), in the order they happened."""
    return [(r[0] or "", r[1]) for r in conn.execute(
        "SELECT barcode, text FROM run_messages WHERE run_id = ? AND level = 'error' ORDER BY id", (run_id,))]


class _Applied:
    def __init__(self) -> None:
        self.updated = self.created = self.subjects = self.queued = 0


def _apply(w: ChangesetWriter, keys: str, missing: list[tuple[int, str | None]], update: BatchUpdate,
           changes: dict[str, Any], now: str, out: _Applied) -> None:
    """Apply the batch to the profiles in temp table `keys` and create those of `missing`."""
    conn = w.conn
    spaced = {"next_service_date": "nsd"} if update.spacing is not None else None
    out.updated += w.update_where("patron_profiles", changes, keys=keys, values=spaced)
    if missing:
        rows = [{"patron_id": pid, "medium": update.medium, **changes,
                 **({"next_service_date": nsd} if spaced else {})} for pid, nsd in missing]
        first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM patron_profiles").fetchone()[0]
        out.created += w.insert_many("patron_profiles", rows)
        conn.execute(
            f"INSERT INTO temp.{keys} (k, patron_id, nsd) SELECT id, patron_id, next_service_date"
            " FROM patron_profiles WHERE id >= ?", (first,))
    for code in update.add_subjects:
        out.subjects += w.insert_many("profile_subjects", (
            {"profile_id": r[0], "subject": code} for r in conn.execute(
                f"SELECT c.k FROM temp.{keys} c WHERE NOT EXISTS (SELECT 1 FROM profile_subjects ps"
                " WHERE ps.profile_id = c.k AND ps.subject = ?) ORDER BY c.k", (code,)).fetchall()))
    if update.fill_service_queues:
        out.queued += w.insert_many("queue_fill_requests", (
            {"profile_id": r[0], "run_id": w.run_id, "requested_at": now} for r in conn.execute(
                f"SELECT c.k FROM temp.{keys} c WHERE NOT EXISTS (SELECT 1 FROM queue_fill_requests r"
                " WHERE r.profile_id = c.k AND r.done_at IS NULL) ORDER BY c.k").fetchall()))


def _refusal(exc: sqlite3.Error) -> str:
    return str(exc).strip().rstrip(".") or type(exc).__name__


def run_batch_update(ctx: RunContext, target: Target, update: BatchUpdate) -> dict[str, Any]:
    """The run: resolve the set now, apply the batch in one transaction, report each refused
    patron as an error (barcode + sentence); returns the summary."""
    conn = ctx.conn
    try:
        require_batch_tools(conn, ctx.operator)
        update = _check(conn, update)
    except (PermissionError, BatchError) as exc:
        raise RunFailed(str(exc)) from None
    changes = update.changes()
    now = utc_now()
    out = _Applied()
    failed: list[tuple[int, str]] = []
    with ctx.writer() as w:
        try:
            sel = _resolve_target(conn, target)
        except BatchError as exc:
            raise RunFailed(str(exc)) from None
        ctx.info(f"Batch update of the {update.medium} profiles of {sel.describe()}.")
        prep = _prepare(conn, sel, update)
        try:
            patrons = prep.patrons
            ctx.progress(0, patrons, force=True)
            ctx.check_cancelled()
            conn.execute("SAVEPOINT batch_all")
            try:
                _apply(w, "_batch_keys", _missing(conn, update.medium, prep), update, changes, now, out)
                conn.execute("RELEASE batch_all")
            except sqlite3.IntegrityError as exc:
                # someone is refused: start again slice by slice, halving a slice that fails
                conn.execute("ROLLBACK TO batch_all")
                conn.execute("RELEASE batch_all")
                out = _Applied()
                ctx.info(f"The database refused part of the batch ({_refusal(exc)}); applying it patron "
                         f"group by patron group to find who.")
                failed = _apply_in_slices(ctx, w, update, changes, now, out, prep)
            ctx.check_cancelled()
        finally:
            _drop(conn)
        unchanged = patrons - len(failed) - out.created - out.updated
        summary = {"patrons": patrons, "profiles_created": out.created, "profiles_updated": out.updated,
                   "unchanged": unchanged, "errors": len(failed), "queues_queued": out.queued,
                   "subjects_added": out.subjects, "medium": update.medium, "statement": sel.statement,
                   "set_name": sel.set_name}
        ctx.summary.update(summary)   # the run's outcome commits with its data (RunContext.writer)
    if failed:
        names = {r["id"]: r for r in conn.execute(
            "SELECT id, barcode, last_name, first_name FROM patrons WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps([pid for pid, _ in failed]),))}
        rows = []
        for pid, why in failed:
            r = names.get(pid)
            who = f"{_name(r)} (patron #{pid})" if r is not None else f"patron #{pid}"
            rows.append((f"{who}: the {update.medium} profile was not changed; the database refused it: {why}.",
                         "patron_refused", None, r["barcode"] if r is not None else None, pid))
        ctx.messages(EventKind.ERROR, rows)
    ctx.progress(patrons, patrons, force=True)
    ctx.info(f"{out.updated} profiles updated, {out.created} created, {unchanged} already as asked, "
             f"{len(failed)} refused; {out.queued} service queues waiting for the filler.")
    return summary


def _apply_in_slices(ctx: RunContext, w: ChangesetWriter, update: BatchUpdate, changes: dict[str, Any],
                     now: str, out: _Applied, prep: _Prepared) -> list[tuple[int, str]]:
    """Apply the batch slice by slice in SAVEPOINTs; a refused slice is halved until the
    refused patron stands alone. Returns (patron id, reason) of every refused patron."""
    conn = w.conn
    source = "_batch_patrons" if prep.listed else "_batch_keys"
    ids = [r[0] for r in conn.execute(f"SELECT patron_id FROM temp.{source} ORDER BY patron_id")]
    total = prep.patrons
    conn.execute("DROP TABLE IF EXISTS temp._batch_slice")
    conn.execute("CREATE TEMP TABLE _batch_slice (k INTEGER PRIMARY KEY, patron_id INTEGER NOT NULL, nsd TEXT)")
    failed: list[tuple[int, str]] = []
    stack = [ids[i:i + _SLICE] for i in range(0, len(ids), _SLICE)][::-1]
    done = 0
    while stack:
        ctx.check_cancelled()
        part = stack.pop()
        conn.execute("DELETE FROM temp._batch_slice")
        conn.execute("INSERT INTO temp._batch_slice SELECT * FROM temp._batch_keys"
                     " WHERE patron_id IN (SELECT value FROM json_each(?))", (json.dumps(part),))
        trial = _Applied()
        conn.execute("SAVEPOINT batch_slice")
        try:
            _apply(w, "_batch_slice", _missing(conn, update.medium, prep, ids=part), update, changes, now, trial)
            conn.execute("RELEASE batch_slice")
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK TO batch_slice")
            conn.execute("RELEASE batch_slice")
            if len(part) == 1:
                failed.append((part[0], _refusal(exc)))
                done += 1
            else:
                half = len(part) // 2
                stack += [part[half:], part[:half]]
            continue
        for name in ("updated", "created", "subjects", "queued"):
            setattr(out, name, getattr(out, name) + getattr(trial, name))
        done += len(part)
        ctx.progress(done, total)
    return sorted(failed)


def queue_batch_update(conn: sqlite3.Connection, operator: str, target: Target, update: BatchUpdate) -> int:
    """Hand a batch update to the scheduler ("run in background"): the same checks as
    `start_batch_update` now (PermissionDenied, BatchError), then a queued run of kind
    "batch_update" whose params are the ones start_batch_update records. Returns its run id;
    the scheduler resolves the set again when it runs it, and starts the queue filler after."""
    from patron_tui.services.background import queue_run

    require_batch_tools(conn, operator)
    update = _check(conn, update)
    params = {"target": target.model_dump(), "update": json.loads(update.model_dump_json())}
    return queue_run(conn, operator, BATCH_KIND, _title(target, update), params)


def _run_queued(ctx: RunContext) -> dict[str, Any]:
    """A batch update handed to the scheduler ("run in background"): its target and update
    are the run's params, as start_batch_update records them. Once it has committed, a batch
    that asked for its service queues to be filled hands them to a filler (queue_fill.hand_off:
    one already at work takes them, else one starts) and names it in its summary
    (`filler_run_id`), whoever started it."""
    try:
        tgt = Target.model_validate(ctx.params["target"])
        update = BatchUpdate.model_validate(ctx.params["update"])
    except (KeyError, TypeError, ValidationError):
        raise RunFailed("this queued batch update names no patrons or no valid update") from None
    summary = run_batch_update(ctx, tgt, update)
    if not update.fill_service_queues:
        return summary   # no queues of its own to hand on (the scheduler's pass fills leftovers)
    from patron_tui.services.queue_fill import hand_off

    # the hand-off: the filler that fills this batch's queues, started here or already at work
    # (which takes them: queue_fill.hand_off), is named in the summary either way
    filler_id, started = hand_off(ctx.engine, ctx.store, ctx.operator, started_by="scheduler")
    if filler_id is not None:
        ctx.info(f"Queue filler run {filler_id} {'started' if started is not None else 'at work'} fills the "
                 "service queues waiting.", code="filler_started" if started is not None else "filler_at_work")
        summary["filler_run_id"] = filler_id
    return summary


register_background(BATCH_KIND, _run_queued, permission="batch_tools")
