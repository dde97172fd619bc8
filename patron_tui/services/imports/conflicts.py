"""Import conflicts: records an import skipped because a unique value belonged to another patron.

The engine keeps each such record whole in `import_conflicts` (the incoming fields, the
patron it matched, the patron holding the value). From the job summary the operator then
resolves each one:

- keep: the holder keeps the value; nothing of either patron changes;
- move: the value is taken from the current holder (set empty, and the holder's `flagged`
  says why, so staff can give them a new card) and the incoming record is applied: added
  as a new patron, or written onto the stored patron it matched;
- edit: the incoming record is applied with another value for the conflicting field.

The patron who holds the value is looked up by value when the conflict is read or resolved
(it may have changed since the import). An explicit move or edit writes the conflicting
field even when the properties file protects it: the operator chose that value.
Only open conflicts can be resolved; every write goes through the changeset writer of the
resolving run, so the journal names that run.

`resolve_conflict(ctx, ...)` is a run function for
`RunEngine.execute(CONFLICT_KIND, title, lambda ctx: resolve_conflict(ctx, ...))`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from patron_tui.runs import RunContext, RunFailed
from patron_tui.services.imports.engine import IMPORT_KIND, UNIQUE_FIELDS, new_patron_row, patron_changes

CONFLICT_KIND = "conflict"
ACTIONS = ("keep", "move", "edit")
STATUSES = ("open", "kept", "moved", "edited")
_DONE_STATUS = {"keep": "kept", "move": "moved", "edit": "edited"}
# what the conflict dialog shows of each patron, in order
DETAIL_FIELDS = ("last_name", "first_name", "barcode", "district_id", "username", "site", "grade",
                 "status", "homeroom", "email")


class ConflictError(LookupError):
    pass


def word(fld: str) -> str:
    """'district_id' -> 'district ID' (the project's word for each unique field)."""
    return {"district_id": "district ID", "barcode": "barcode", "username": "username"}.get(fld, fld)


def patron_name(row: dict[str, Any] | None) -> str:
    if not row:
        return "(no patron)"
    last = str(row.get("last_name") or "").strip()
    first = str(row.get("first_name") or "").strip()
    return ", ".join(p for p in (last, first) if p) or "(no name)"


def describe(row: dict[str, Any] | None) -> str:
    """A patron in one line: name and the keys that identify them."""
    if not row:
        return "(no patron)"
    ids = [f"{word(f)} {row[f]}" for f in ("district_id", "barcode") if row.get(f)]
    if row.get("id") is not None:
        ids.append(f"patron {row['id']}")
    return f"{patron_name(row)} ({', '.join(ids)})" if ids else patron_name(row)


@dataclass
class Conflict:
    """One conflict with both patrons' details, as read now."""

    id: int
    run_id: int
    line: int | None
    field: str
    value: str
    status: str
    holder_id: int | None
    target_id: int | None
    incoming: dict[str, Any]               # the record's mapped fields (site resolved)
    fingerprint: str | None
    protect: list[str]
    mode: str | None
    holder: dict[str, Any] | None          # the patron holding the value NOW (None: nobody)
    original_holder: dict[str, Any] | None  # holder_id's row (who held it at import time)
    target: dict[str, Any] | None          # the stored patron the record matched (None: a new patron)
    new_value: str | None = None
    resolved_at: str | None = None
    resolved_by: str | None = None
    resolution_run_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def still_held(self) -> bool:
        """The value still belongs to a patron other than the one the record matched."""
        return self.holder is not None and self.holder.get("id") != self.target_id

    def incoming_patron(self) -> dict[str, Any]:
        """What the patron would look like with the incoming record applied (for display)."""
        base = dict(self.target) if self.target else {}
        for k, v in self.incoming.items():
            if k in UNIQUE_FIELDS and not v:
                continue
            base[k] = v
        return base

    def to_json(self) -> dict[str, Any]:
        def slim(row: dict[str, Any] | None) -> dict[str, Any] | None:
            if row is None:
                return None
            return {k: row.get(k) for k in ("id", *DETAIL_FIELDS, "flagged")}

        return {
            "id": self.id, "run_id": self.run_id, "line": self.line, "field": self.field,
            "value": self.value, "status": self.status, "holder_id": self.holder_id,
            "target_id": self.target_id, "incoming": self.incoming, "mode": self.mode,
            "holder": slim(self.holder), "original_holder": slim(self.original_holder),
            "target": slim(self.target), "new_value": self.new_value, "resolved_at": self.resolved_at,
            "resolved_by": self.resolved_by, "resolution_run_id": self.resolution_run_id,
        }


def _patron(conn: sqlite3.Connection, pid: int | None) -> dict[str, Any] | None:
    if pid is None:
        return None
    row = conn.execute("SELECT * FROM patrons WHERE id = ?", (pid,)).fetchone()
    return _plain(row)


def _holder(conn: sqlite3.Connection, fld: str, value: Any) -> dict[str, Any] | None:
    if fld not in UNIQUE_FIELDS:
        raise ValueError(f"not a unique patron field: {fld}")
    row = conn.execute(f"SELECT * FROM patrons WHERE {fld} = ?", (str(value),)).fetchone()
    return _plain(row)


def _plain(row) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    out.pop("picture", None)  # a BLOB nobody shows here
    return out


def _build(conn: sqlite3.Connection, row) -> Conflict:
    row = dict(row)
    try:
        incoming = json.loads(row["incoming"] or "{}")
    except ValueError:
        incoming = {}
    return Conflict(
        id=row["id"], run_id=row["run_id"], line=row["line"], field=row["field"], value=row["value"],
        status=row["status"], holder_id=row["holder_id"], target_id=row["target_id"],
        incoming=dict(incoming.get("fields") or {}), fingerprint=incoming.get("fingerprint"),
        protect=list(incoming.get("protect") or []), mode=incoming.get("mode"),
        holder=_holder(conn, row["field"], row["value"]),
        original_holder=_patron(conn, row["holder_id"]),
        target=_patron(conn, row["target_id"]),
        new_value=row["new_value"], resolved_at=row["resolved_at"], resolved_by=row["resolved_by"],
        resolution_run_id=row["resolution_run_id"],
    )


def list_conflicts(conn: sqlite3.Connection, run_id: int, status: str | None = None) -> list[Conflict]:
    """The conflicts of an import run in file order (all, or those with `status`)."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown conflict status {status!r}; use one of {', '.join(STATUSES)}")
    sql = "SELECT * FROM import_conflicts WHERE run_id = ?"
    params: list[Any] = [run_id]
    if status is not None:
        sql += " AND status = ?"
        params.append(status)
    rows = conn.execute(sql + " ORDER BY line, id", params).fetchall()
    return [_build(conn, r) for r in rows]


def get_conflict(conn: sqlite3.Connection, conflict_id: int) -> Conflict:
    row = conn.execute("SELECT * FROM import_conflicts WHERE id = ?", (conflict_id,)).fetchone()
    if row is None:
        raise ConflictError(f"no import conflict {conflict_id}")
    return _build(conn, row)


def import_runs(conn: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent import runs (newest first) with their summary and open conflicts."""
    out = []
    for row in conn.execute(
        "SELECT r.id, r.title, r.status, r.mode, r.created_at, r.finished_at, r.summary,"
        " (SELECT count(*) FROM import_conflicts c WHERE c.run_id = r.id AND c.status = 'open') AS open_conflicts"
        " FROM runs r WHERE r.kind = ? ORDER BY r.id DESC LIMIT ?",
        (IMPORT_KIND, limit),
    ):
        item = dict(row)
        try:
            item["summary"] = json.loads(item["summary"] or "{}")
        except ValueError:
            item["summary"] = {}
        out.append(item)
    return out


# -- resolving ------------------------------------------------------------------------------


def resolve_title(conflict_id: int, action: str) -> str:
    return f"Resolve import conflict {conflict_id} ({action})"


def resolve_conflict(ctx: RunContext, conflict_id: int, action: str, new_value: str | None = None) -> dict[str, Any]:
    """Resolve one open conflict (see the module doc) in one writer transaction.

    Refusals raise RunFailed (the run fails with that message and nothing is written)."""
    if action not in ACTIONS:
        raise RunFailed(f"unknown action {action!r}; use keep, move or edit")
    if action == "edit":
        new_value = (new_value or "").strip()
        if not new_value:
            raise RunFailed(f"conflict {conflict_id}: edit needs a new value (it was blank)")
    elif new_value:
        raise RunFailed(f"conflict {conflict_id}: a new value goes with edit only")
    result: dict[str, Any] = {"conflict_id": conflict_id, "action": action}
    with ctx.writer() as w:
        conn = w.conn
        try:
            c = get_conflict(conn, conflict_id)  # read inside the write lock: nobody resolves it meanwhile
        except ConflictError as exc:
            raise RunFailed(str(exc)) from None
        if not c.is_open:
            raise RunFailed(
                f"conflict {conflict_id} was already resolved ({c.status} by {c.resolved_by or '?'} at "
                f"{c.resolved_at or '?'}, run {c.resolution_run_id})")
        fld, what = c.field, word(c.field)
        patron_id: int | None = None
        message = ""
        if action == "keep":
            who = describe(c.holder) if c.holder else "nobody now"
            message = (f"conflict {c.id}: {what} {c.value} stays with {who}; the record of line "
                       f"{c.line} ({patron_name(c.incoming)}) was not applied")
        elif action == "move":
            fields = dict(c.incoming)
            fields[fld] = c.value
            moved_from = None
            if c.still_held:
                moved_from = c.holder
                assert moved_from is not None
            _check_free(conn, c, fields, skip_field=fld if moved_from else None)
            if moved_from is not None:
                reason = f"{what} {c.value} moved to {patron_name(c.incoming)} by import conflict {c.id}"
                old_flag = str(moved_from.get("flagged") or "").strip()
                w.update("patrons", moved_from["id"], {
                    fld: None, "flagged": f"{old_flag}; {reason}" if old_flag else reason, "updated_at": w.ts,
                })
            patron_id = _apply(w, c, fields, force=fld)
            if moved_from is not None:
                message = (f"conflict {c.id}: {what} {c.value} moved from {describe(moved_from)} "
                           f"(flagged) to {patron_name(c.incoming)} (patron {patron_id})")
                result["moved_from"] = moved_from["id"]
            else:
                message = (f"conflict {c.id}: nobody else holds {what} {c.value} now; the record of line "
                           f"{c.line} was applied to patron {patron_id}")
        else:  # edit
            assert new_value is not None
            fields = dict(c.incoming)
            fields[fld] = new_value
            _check_free(conn, c, fields)
            patron_id = _apply(w, c, fields, force=fld)
            message = (f"conflict {c.id}: the record of line {c.line} was applied to patron {patron_id} "
                       f"with {what} {new_value}; {what} {c.value} stays where it is")
        w.update("import_conflicts", c.id, {
            "status": _DONE_STATUS[action], "new_value": new_value if action == "edit" else None,
            "resolved_at": w.ts, "resolved_by": ctx.operator, "resolution_run_id": ctx.run_id,
        })
        result.update(status=_DONE_STATUS[action], patron_id=patron_id, run_id=c.run_id, field=fld,
                      value=c.value, new_value=new_value if action == "edit" else None)
        ctx.summary.update(result)   # the run's outcome commits with its data (RunContext.writer)
    ctx.info(message, code=f"conflict_{_DONE_STATUS[action]}", line=c.line,
             barcode=str(c.incoming.get("barcode") or "") or None, patron_id=patron_id)
    return result


def _check_free(conn: sqlite3.Connection, c: Conflict, fields: dict[str, Any], skip_field: str | None = None) -> None:
    """Refuse when a unique value the record would write belongs to another patron."""
    for fld in UNIQUE_FIELDS:
        value = fields.get(fld)
        if not value or fld == skip_field:
            continue
        holder = _holder(conn, fld, value)
        if holder is not None and holder["id"] != c.target_id:
            raise RunFailed(
                f"conflict {c.id}: {word(fld)} {value} already belongs to {describe(holder)}; nothing was changed")


def _apply(w, c: Conflict, fields: dict[str, Any], *, force: str) -> int:
    """Write the incoming record: onto the patron it matched, or as a new patron."""
    if c.target_id is None:
        row = new_patron_row(fields, now=w.ts, fingerprint=c.fingerprint)
        return int(w.insert("patrons", row))
    existing = w.fetch("patrons", c.target_id)
    if existing is None:
        raise RunFailed(f"conflict {c.id}: patron {c.target_id}, whom the record matched, no longer exists")
    changes = patron_changes(existing, fields, c.protect)
    if fields.get(force) and existing.get(force) != fields[force]:
        changes[force] = fields[force]  # the operator's explicit choice beats protect
    changes.update(updated_at=w.ts, last_seen_import_at=w.ts)
    if c.fingerprint:
        changes["import_fingerprint"] = c.fingerprint
    w.update("patrons", c.target_id, changes)
    return int(c.target_id)


__all__ = [
    "ACTIONS", "CONFLICT_KIND", "Conflict", "ConflictError", "DETAIL_FIELDS", "STATUSES", "describe",
    "get_conflict", "import_runs", "list_conflicts", "patron_name", "resolve_conflict", "resolve_title", "word",
]
