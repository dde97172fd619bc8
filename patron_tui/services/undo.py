"""Undo any run: put back every before-image the run's journal holds, as a run of its own.

`plan_undo(conn, run_id)` says what an undo would do (rows to re-insert, to delete, to restore,
per table) and which rows a later run changed again (the conflicts); `start_undo(...)` starts
`undo_run` as a run of kind "undo" (title "Undo run N: <title>", params {"undoes": N}).

How an undo reads the journal (store/changeset.py says what each write journals): the run's
journal rows are taken newest first and each is turned round:
- 'insert' (one key) and 'insert_range' ('a..b', 'rowid a..b', or a scope such as
  {"set_id":5}) -> delete those rows (a scope: `delete_where`);
- 'update' -> set the written columns back to their old values (a `stamp`'s compact row, whose
  key is a scope of key ranges, goes back through `stamp` with the old value; a columnar row of
  `update_where`, key `{"$keys":...}`, is read row by row: row i's changed columns go back to
  its i-th old values);
- 'delete' -> re-insert the before-image with its id (a scoped 'delete' holds its rows
  column-wise: each comes back).
Newest first is also the order foreign keys need: a run deletes dependants before their patron
and adds a patron before its dependants, so its undo re-inserts the patron before its notes,
holds, profiles, charges, history and reviews, and deletes added dependants before their
patron. Consecutive journal rows of one table and one kind are applied as one bulk write (a
restore of `COLUMNAR_MIN` rows or more as set-based `update_where`s, one per set of columns, so
it is journalled column-wise as a batch update is); if
the database refuses one (a unique barcode, a missing parent), that group is applied again row
by row, in journal order, each row in a savepoint of its own.

Every undo write goes through the changeset writer under the undo's own run id, in ONE
transaction. The undo's run row is written first (`start_undo` only checks the refusals, in
milliseconds); the run plans outside the write lock, noting the newest journal row first, and
inside its write transaction looks once at the journal rows above that mark in the tables the
plan reads (an indexed range, not a row-by-row compare): none, the plan holds; any, it is
planned again there, under the lock. So what is applied is what was checked, and a conflict
that appeared while the undo planned is found like one that was there before: without a
choice for it (on_conflict "refuse", or a conflict outside the `accepted` ones the operator was
shown) the undo fails with `conflicts_refusal`'s sentence and changes nothing. The undo is
journalled like any run: undoing an undo redoes the original run.

Conflicts (rows a later run changed again): a row is in conflict when a journal row written
after the run's first one, by another run, touches the same table and key and one of the
columns this undo would set back (any column for a row the run added or deleted; a later
stamp or columnar update counts for each row it covers and, for a columnar one, the columns it
changed on that row); or when the
row now differs from what the run left (an updated column no longer holds the run's value; a
deleted row's key is taken again; an added row is gone); or when a row the run added has
dependants a later run added. The runs of this run's own undo/redo chain do not count, nor does
a later run that is undone now, with its undo: they cancel out.
On a conflict the operator chooses: "skip" leaves the whole row as it is now (the rest is
undone), "overwrite" puts the before-image back anyway (an added row's later dependants are
deleted with it, through the writer); with no choice ("refuse") a conflict fails the undo. A
row the database refuses during the undo is skipped with a message under "skip" and fails the
whole undo (nothing changed) under "overwrite" and "refuse".

Refusals (`UndoRefused`, one sentence): an unknown run, a run still queued or running, a dry
run, a run that wrote nothing, a run finished more than `journal_retention_days` ago, a run
whose journal was pruned, and a run already undone: a run may be undone again only when the
undo that took it back was itself undone (undo of the undo = redo). The undo of an undo is
allowed as long as that undo is not itself undone already.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from patron_tui.models import EventKind
from patron_tui.runs import RunContext, RunEngine, RunFailed, RunHandle
from patron_tui.store import changeset
from patron_tui.store.changeset import ChangesetWriter, decode_image

UNDO_KIND = "undo"
RETENTION_SETTING = "journal_retention_days"
DEFAULT_RETENTION_DAYS = 400
OnConflict = Literal["refuse", "skip", "overwrite"]
ON_CONFLICT = ("refuse", "skip", "overwrite")

__all__ = [
    "DEFAULT_RETENTION_DAYS", "ON_CONFLICT", "OnConflict", "RETENTION_SETTING", "UNDO_KIND", "UndoConflict",
    "UndoPlan", "UndoRefused", "check_undo", "conflicts_refusal", "plan_undo", "retention_days", "start_undo",
    "undo_run", "undone_by",
]


def conflicts_refusal(n: int) -> str:
    """The sentence of an undo refused for `n` conflicts, found before it started or while it ran."""
    return f"{n:,} row(s) were changed again by a later run; nothing was undone."


class UndoRefused(ValueError):
    """The run cannot be undone; str(exc) is the sentence that says why."""


@dataclass
class UndoConflict:
    """A row a later run changed again (or that no longer is as the run left it)."""

    table: str
    key: str
    reason: str                      # changed_later | row_gone | key_taken | dependants
    fields: list[tuple[str, Any, Any]] = field(default_factory=list)   # (field, the run left, now)
    later_run_id: int | None = None
    later_run_title: str | None = None
    patron_id: int | None = None
    barcode: str | None = None
    name: str | None = None

    def describe(self) -> str:
        who = f"{self.table} {self.key}"
        if self.patron_id is not None:
            pat = ", ".join(x for x in (self.barcode and f"barcode {self.barcode}", self.name) if x)
            who += f" (patron {self.patron_id}{': ' + pat if pat else ''})"
        why = {"changed_later": "changed again", "row_gone": "deleted since",
               "key_taken": "its id is taken again", "dependants": "has dependants added since"}[self.reason]
        by = f" by run {self.later_run_id} ({self.later_run_title})" if self.later_run_id is not None else ""
        return f"{who}: {why}{by}"

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "key": self.key, "reason": self.reason,
                "fields": [{"field": f, "run_left": _plain(a), "now": _plain(b)} for f, a, b in self.fields],
                "later_run_id": self.later_run_id, "later_run_title": self.later_run_title,
                "patron_id": self.patron_id, "barcode": self.barcode, "name": self.name,
                "text": self.describe()}


@dataclass
class _Step:
    """Consecutive journal rows of one table and one kind, turned round."""

    table: str
    action: str                      # delete | delete_scope | restore | stamp | reinsert
    keys: list[str] = field(default_factory=list)                  # delete / stamp
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)   # restore: key -> old values
    left: dict[str, dict[str, Any]] = field(default_factory=dict)      # restore / stamp: key -> run's values
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)      # reinsert: key -> image
    scope: dict[str, Any] | None = None                            # delete_scope
    column: str | None = None                                      # stamp
    old: Any = None                                                # stamp

    def item_keys(self) -> list[str]:
        if self.action in ("delete", "stamp"):
            return self.keys
        if self.action == "restore":
            return list(self.changes)
        if self.action == "reinsert":
            return list(self.rows)
        return []


@dataclass
class UndoPlan:
    run_id: int
    title: str = ""
    kind: str = ""
    status: str = ""
    refusal: str | None = None
    reinsert: dict[str, int] = field(default_factory=dict)
    delete: dict[str, int] = field(default_factory=dict)
    restore: dict[str, int] = field(default_factory=dict)
    conflicts: list[UndoConflict] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list, repr=False)
    _conflict_index: dict[tuple[str, str], UndoConflict] = field(default_factory=dict, repr=False)
    _dependants: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict, repr=False)

    @property
    def can_undo(self) -> bool:
        return self.refusal is None

    @property
    def rows(self) -> int:
        return sum(self.reinsert.values()) + sum(self.delete.values()) + sum(self.restore.values())

    def conflict(self, table: str, key: str) -> UndoConflict | None:
        return self._conflict_index.get((table, key))

    def describe(self) -> str:
        if self.refusal:
            return self.refusal
        parts = []
        for label, counts in (("re-insert", self.reinsert), ("delete", self.delete), ("restore", self.restore)):
            if counts:
                parts.append(f"{label} " + ", ".join(f"{n:,} {t}" for t, n in sorted(counts.items())))
        text = f"Undo run {self.run_id} ({self.title}): " + ("; ".join(parts) or "nothing to change")
        if self.conflicts:
            text += f"; {len(self.conflicts):,} row(s) changed again since"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "title": self.title, "kind": self.kind, "status": self.status,
                "refusal": self.refusal, "reinsert": self.reinsert, "delete": self.delete,
                "restore": self.restore, "conflicts": [c.to_json() for c in self.conflicts]}


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$hex": bytes(value).hex().upper()}
    return value


# -- settings and refusals ----------------------------------------------------------------------

def retention_days(conn: sqlite3.Connection) -> int:
    """The `journal_retention_days` setting (400 when missing or not a whole number >= 1)."""
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (RETENTION_SETTING,)).fetchone()
    try:
        days = int(row[0]) if row else DEFAULT_RETENTION_DAYS
    except (TypeError, ValueError):
        days = DEFAULT_RETENTION_DAYS
    return days if days >= 1 else DEFAULT_RETENTION_DAYS


def _undoes(conn: sqlite3.Connection, run_id: int) -> list[int]:
    """Succeeded undo runs of `run_id`, newest first."""
    return [r[0] for r in conn.execute(
        "SELECT id FROM runs WHERE kind = ? AND status = 'succeeded' AND json_extract(params, '$.undoes') = ?"
        " ORDER BY id DESC", (UNDO_KIND, run_id))]


def undone_by(conn: sqlite3.Connection, run_id: int, _depth: int = 0) -> int | None:
    """The undo run that currently takes `run_id` back: its newest succeeded undo, unless that
    undo is itself undone (then the run's effect is back: None)."""
    if _depth > 50:
        return None
    for undo in _undoes(conn, run_id):
        if undone_by(conn, undo, _depth + 1) is None:
            return undo
    return None


def _chain(conn: sqlite3.Connection, run_id: int) -> set[int]:
    """The undos of `run_id`, the undos of those, ...: their journal rows cancel out."""
    out: set[int] = set()
    todo = [run_id]
    while todo:
        for r in conn.execute("SELECT id FROM runs WHERE kind = ? AND json_extract(params, '$.undoes') = ?",
                              (UNDO_KIND, todo.pop())):
            if r[0] not in out:
                out.add(r[0])
                todo.append(r[0])
    return out


def _refusal(conn: sqlite3.Connection, run: dict[str, Any] | None, run_id: int, now: dt.datetime) -> str | None:
    if run is None:
        return f"There is no run {run_id}."
    label = f"Run {run_id} ({run['title']})"
    if run["status"] in ("queued", "running"):
        return f"{label} is still {run['status']}: undo it once it has ended."
    params = json.loads(run["params"] or "{}")
    summary = json.loads(run["summary"] or "{}")
    if params.get("dry_run") or summary.get("dry_run"):
        return f"{label} was a dry run: it changed nothing, so there is nothing to undo."
    if summary.get("journal_pruned"):
        return (f"{label} can no longer be undone: its journal was pruned on {str(summary['journal_pruned'])[:10]} "
                f"(runs older than the journal retention keep no before-images).")
    days = retention_days(conn)
    when = run["finished_at"] or run["started_at"] or run["created_at"]
    if when and _parse_ts(when) < now - dt.timedelta(days=days):
        return (f"{label} finished on {when[:10]}, more than {days} days ago (the journal retention, setting "
                f"{RETENTION_SETTING}): it can no longer be undone.")
    if conn.execute("SELECT 1 FROM change_journal WHERE run_id = ? LIMIT 1", (run_id,)).fetchone() is None:
        return f"{label} wrote nothing, so there is nothing to undo."
    by = undone_by(conn, run_id)
    if by is not None:
        return (f"{label} was already undone by run {by}; undo run {by} to bring its changes back, "
                f"then it can be undone again.")
    return None


def _parse_ts(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


# -- table shapes -----------------------------------------------------------------------------

class _Shapes:
    """Primary keys and foreign keys of the tables, read once per plan."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._pk: dict[str, tuple[str, ...]] = {}
        self._int: dict[str, bool] = {}
        self._children: dict[str, list[tuple[str, str, str]]] | None = None

    def pk(self, table: str) -> tuple[str, ...]:
        if table not in self._pk:
            info = self.conn.execute(f"PRAGMA table_info({_q(table)})").fetchall()
            cols = sorted((r["pk"], r["name"]) for r in info if r["pk"])
            self._pk[table] = tuple(c for _, c in cols) or ("rowid",)
            self._int[table] = len(cols) == 1 and any(
                r["name"] == cols[0][1] and r["type"].upper() == "INTEGER" for r in info)
        return self._pk[table]

    def int_key(self, table: str) -> bool:
        self.pk(table)
        return self._int[table]

    def key_value(self, table: str, key: str) -> Any:
        pk = self.pk(table)
        if len(pk) > 1:
            return tuple(json.loads(key))
        return int(key) if self.int_key(table) else key

    def key_text(self, table: str, row: dict[str, Any]) -> str:
        pk = self.pk(table)
        if len(pk) == 1:
            return str(row[pk[0]])
        return json.dumps([row[c] for c in pk], ensure_ascii=False, separators=(",", ":"))

    def children(self, table: str) -> list[tuple[str, str, str]]:
        """(child table, its column, the parent column) of every foreign key onto `table`."""
        if self._children is None:
            self._children = {}
            for (name,) in self.conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"):
                for fk in self.conn.execute(f"PRAGMA foreign_key_list({_q(name)})"):
                    parent = fk["table"]
                    to = fk["to"] or self.pk(parent)[0]
                    self._children.setdefault(parent, []).append((name, fk["from"], to))
        return self._children.get(table, [])

    def existing(self, table: str, keys: Iterable[str]) -> set[str]:
        """The keys among these that have a row in `table` now (the key column only: a 200,000-row
        undo reads 200,000 ids, not 200,000 whole rows)."""
        keys = list(keys)
        pk = self.pk(table)
        if len(pk) != 1 or pk[0] == "rowid":
            return set(self.current(table, keys))
        out: set[str] = set()
        for start in range(0, len(keys), 50_000):
            chunk = [self.key_value(table, k) for k in keys[start:start + 50_000]]
            out.update(str(r[0]) for r in self.conn.execute(
                f"SELECT {_q(pk[0])} FROM {_q(table)} WHERE {_q(pk[0])} IN (SELECT value FROM json_each(?))",
                (json.dumps(chunk),)))
        return out

    def current(self, table: str, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The rows of `table` with these keys, as they are now."""
        keys = list(keys)
        out: dict[str, dict[str, Any]] = {}
        pk = self.pk(table)
        if len(pk) == 1 and pk[0] != "rowid":
            for start in range(0, len(keys), 50_000):
                chunk = [self.key_value(table, k) for k in keys[start:start + 50_000]]
                for row in self.conn.execute(
                        f"SELECT * FROM {_q(table)} WHERE {_q(pk[0])} IN (SELECT value FROM json_each(?))",
                        (json.dumps(chunk),)):
                    out[str(row[pk[0]])] = dict(row)
            return out
        where = " AND ".join(f"{_q(c)} = ?" for c in pk)
        for k in keys:
            row = self.conn.execute(f"SELECT * FROM {_q(table)} WHERE {where}",
                                    json.loads(k) if len(pk) > 1 else [k]).fetchone()
            if row is not None:
                out[k] = dict(row)
        return out


def _q(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not an identifier: {name!r}")
    return f'"{name}"'


# -- the plan ---------------------------------------------------------------------------------

def plan_undo(conn: sqlite3.Connection, run_id: int, *, now: dt.datetime | None = None) -> UndoPlan:
    """What undoing `run_id` would do now, and the rows a later run changed again. A plan whose
    `refusal` is set cannot be carried out (the sentence says why)."""
    plan = check_undo(conn, run_id, now=now)
    if plan.refusal:
        return plan
    shapes = _Shapes(conn)
    entries = conn.execute(
        "SELECT id, table_name, row_key, op, before, after FROM change_journal WHERE run_id = ? ORDER BY id DESC",
        (run_id,)).fetchall()
    first_id = entries[-1]["id"]
    for e in entries:
        _add_entry(plan, shapes, e)
    _count(plan)
    _find_conflicts(conn, plan, shapes, run_id, first_id)
    return plan


def check_undo(conn: sqlite3.Connection, run_id: int, *, now: dt.datetime | None = None) -> UndoPlan:
    """The head of `plan_undo`, in milliseconds whatever the run's size: the run's title, kind and
    status and the refusal, if any; no steps, counts or conflicts (the undo run plans those)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    run = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    run = dict(run) if run is not None else None
    plan = UndoPlan(run_id, title=run["title"] if run else "", kind=run["kind"] if run else "",
                    status=run["status"] if run else "")
    plan.refusal = _refusal(conn, run, run_id, now)
    return plan


def _journal_mark(conn: sqlite3.Connection) -> int:
    """The newest journal row's id: every write committed later journals rows above it."""
    return conn.execute("SELECT coalesce(max(id), 0) FROM change_journal").fetchone()[0]


def _written_since(conn: sqlite3.Connection, plan: UndoPlan, shapes: _Shapes, mark: int) -> bool:
    """Whether a write committed after `mark` touched a table the plan reads: one indexed look
    at the journal rows above the mark (every write journals, store/changeset.py), so an undo
    that nobody wrote across keeps its plan, and one that somebody did is planned again."""
    tables = {s.table for s in plan.steps}
    for t in list(tables):
        tables.update(child for child, _col, _to in shapes.children(t))
    if not tables:
        return False
    marks = ",".join("?" * len(tables))
    return conn.execute(f"SELECT 1 FROM change_journal WHERE id > ? AND table_name IN ({marks}) LIMIT 1",
                        (mark, *sorted(tables))).fetchone() is not None


def _step(plan: UndoPlan, table: str, action: str) -> _Step:
    last = plan.steps[-1] if plan.steps else None
    if last is not None and last.table == table and last.action == action and action in ("delete", "restore",
                                                                                          "reinsert"):
        return last
    step = _Step(table, action)
    plan.steps.append(step)
    return step


def _add_entry(plan: UndoPlan, shapes: _Shapes, e: sqlite3.Row) -> None:
    table, key, op = e["table_name"], e["row_key"], e["op"]
    scoped = key.startswith("{")
    if op == "insert":
        _step(plan, table, "delete").keys.append(key)
    elif op == "insert_range":
        if scoped:
            step = _Step(table, "delete_scope", scope=json.loads(key))
            plan.steps.append(step)
            return
        if key.startswith("rowid "):
            a, b = (int(x) for x in key[6:].split(".."))
            keys = [shapes.key_text(table, dict(r)) for r in shapes.conn.execute(
                f"SELECT * FROM {_q(table)} WHERE rowid BETWEEN ? AND ? ORDER BY rowid", (a, b))]
        else:
            a, b = (int(x) for x in key.split(".."))
            keys = [str(i) for i in range(a, b + 1)]
        _step(plan, table, "delete").keys.extend(keys)
    elif op == "update":
        before, after = decode_image(e["before"]) or {}, decode_image(e["after"]) or {}
        if scoped and "$rows" in before:   # a columnar update: each row's old and new values
            step = _step(plan, table, "restore")
            for k, old, new in columnar_rows(key, before, after):
                _add_restore(step, k, old, new)
            return
        if scoped:   # a stamp: {"<key column>": [[first, last], ...]}
            ranges = next(iter(json.loads(key).values()))
            (column, old), = before.items()
            step = _Step(table, "stamp", column=column, old=old)
            step.keys = [str(i) for a, b in ranges for i in range(a, b + 1)]
            step.left = {k: {column: after.get(column)} for k in step.keys}
            plan.steps.append(step)
            return
        if any(c not in before or before[c] != after[c] for c in after):
            _add_restore(_step(plan, table, "restore"), key, before, after)
    elif op == "delete":
        image = decode_image(e["before"]) or {}
        if scoped:   # columnar: {"$where": {...}, "$rows": {column: [values]}}
            where, columns = image.get("$where", {}), image.get("$rows", {})
            n = len(next(iter(columns.values()))) if columns else 0
            step = _step(plan, table, "reinsert")
            for i in range(n):
                row = {**where, **{c: v[i] for c, v in columns.items()}}
                step.rows[shapes.key_text(table, row)] = row
        else:
            _step(plan, table, "reinsert").rows[key] = image


def _add_restore(step: _Step, key: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    """One row's update, turned round: its changed columns go back to their old values."""
    cols = [c for c in after if c not in before or before[c] != after[c]]
    if not cols:
        return
    old = {c: before.get(c) for c in cols}
    if key in step.changes:   # an earlier change of the same row, in this group: the oldest value wins
        step.changes[key].update(old)
        step.left[key] = {**{c: after[c] for c in cols}, **step.left[key]}
    else:
        step.changes[key] = old
        step.left[key] = {c: after[c] for c in cols}


def is_columnar(row_key: str, before: dict[str, Any] | None) -> bool:
    """Whether a journal row is a columnar update (update_where's big form, see the changeset doc)."""
    return row_key.startswith("{") and isinstance(before, dict) and "$rows" in before and "$where" not in before


def columnar_rows(row_key: str, before: dict[str, Any], after: dict[str, Any] | None
                  ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(key, old values, new values) of every row a columnar update journal row holds (decoded
    images; a column's old and new value may be equal: the row changed in another column)."""
    key_col = json.loads(row_key)["$keys"]
    rows = before.get("$rows") or {}
    keys = rows.get(key_col) or []
    cols = [c for c in rows if c != key_col]
    after = after or {}
    per_row = after.get("$rows") or {}
    same = {c: v for c, v in after.items() if c != "$rows"}
    olds = [rows[c] for c in cols]
    news = [per_row[c] if c in per_row else None for c in cols]
    out = []
    for i, k in enumerate(keys):
        out.append((str(k), {c: o[i] for c, o in zip(cols, olds)},
                    {c: (n[i] if n is not None else same.get(c)) for c, n in zip(cols, news)}))
    return out


def _count(plan: UndoPlan) -> None:
    for s in plan.steps:
        n = len(s.item_keys())
        target = {"delete": plan.delete, "restore": plan.restore, "stamp": plan.restore,
                  "reinsert": plan.reinsert}.get(s.action)
        if target is not None and n:   # delete_scope rows are counted in _find_conflicts
            target[s.table] = target.get(s.table, 0) + n


def _touch_cols(op: str, before: dict | None, after: dict | None) -> set[str] | None:
    """The columns a journal row changed; None = the whole row (insert, delete)."""
    if op != "update":
        return None
    before, after = before or {}, after or {}
    return {c for c in after if c not in before or before[c] != after[c]}


def _find_conflicts(conn: sqlite3.Connection, plan: UndoPlan, shapes: _Shapes, run_id: int, first_id: int) -> None:
    exclude = _chain(conn, run_id) | {run_id}
    # every (table, key) the undo writes, with what it writes: None = whole row, else columns
    touched: dict[tuple[str, str], set[str] | None] = {}
    for s in plan.steps:
        if s.action == "delete_scope":
            continue
        for k in s.item_keys():
            cols = (set(s.changes[k]) if s.action == "restore" else {s.column} if s.action == "stamp" else None)
            prev = touched.get((s.table, k), set())
            touched[(s.table, k)] = None if cols is None or prev is None else prev | cols
    later: dict[tuple[str, str], list[tuple[int, int | None, set[str] | None, dict | None]]] = {}

    def note(table: str, key: str, jid: int, rid: int | None, cols: set[str] | None, before: dict | None) -> None:
        want = touched.get((table, key), False)
        if want is False:
            return
        if cols is not None and want is not None and not (cols & want):
            return
        later.setdefault((table, key), []).append((jid, rid, cols, before))

    conn.execute("DROP TABLE IF EXISTS temp._undo_keys")
    conn.execute("CREATE TEMP TABLE _undo_keys (t TEXT NOT NULL, k TEXT NOT NULL, PRIMARY KEY (t, k)) WITHOUT ROWID")
    try:
        conn.executemany("INSERT OR IGNORE INTO temp._undo_keys VALUES (?, ?)", touched.keys())
        marks = ",".join("?" * len(exclude))
        for r in conn.execute(
                "SELECT u.t, u.k, j.id, j.run_id, j.op, j.before, j.after FROM temp._undo_keys u"
                " CROSS JOIN change_journal j ON j.table_name = u.t AND j.row_key = u.k"
                f" WHERE j.id > ? AND (j.run_id IS NULL OR j.run_id NOT IN ({marks})) ORDER BY j.id",
                (first_id, *exclude)):
            before, after = decode_image(r[5]), decode_image(r[6])
            note(r[0], r[1], r[2], r[3], _touch_cols(r[4], before, after), before)
    finally:
        conn.execute("DROP TABLE IF EXISTS temp._undo_keys")
    # later ranges and scopes (stamps, bulk loads, scoped deletes) of the tables the undo writes
    tables = sorted({t for t, _ in touched} | {s.table for s in plan.steps})
    if tables:
        tmarks = ",".join("?" * len(tables))
        for r in conn.execute(
                "SELECT id, run_id, table_name, row_key, op, before, after FROM change_journal"
                f" WHERE table_name IN ({tmarks}) AND (op = 'insert_range' OR substr(row_key, 1, 1) = '{{')"
                f" AND id > ? AND (run_id IS NULL OR run_id NOT IN ({marks})) ORDER BY id",
                (*tables, first_id, *exclude)):
            table, key, op = r["table_name"], r["row_key"], r["op"]
            if op == "update" and key.startswith('{"$keys"'):   # a columnar update
                a, b = json.loads(key)["$span"]
                if not any(t == table and k.lstrip("-").isdigit() and a <= int(k) <= b for t, k in touched):
                    continue
                for k, old, new in columnar_rows(key, decode_image(r["before"]) or {}, decode_image(r["after"])):
                    cols = {c for c in new if old.get(c) != new[c]}
                    if cols:
                        note(table, k, r["id"], r["run_id"], cols, old)
            elif op == "update" and key.startswith("{"):
                ranges = next(iter(json.loads(key).values()))
                before, after = decode_image(r["before"]), decode_image(r["after"])
                cols = set(after or {})
                for a, b in ranges:
                    if b - a < 100_000:
                        for i in range(a, b + 1):
                            note(table, str(i), r["id"], r["run_id"], cols, before)
                    else:
                        for (t, k) in list(touched):
                            if t == table and k.lstrip("-").isdigit() and a <= int(k) <= b:
                                note(table, k, r["id"], r["run_id"], cols, before)
            elif op == "insert_range" and not key.startswith("{"):
                if key.startswith("rowid "):
                    continue
                a, b = (int(x) for x in key.split(".."))
                for (t, k) in list(touched):
                    if t == table and k.lstrip("-").isdigit() and a <= int(k) <= b:
                        note(table, k, r["id"], r["run_id"], None, None)
            else:   # a scoped bulk load or delete: the rows of the same scope
                for s in plan.steps:
                    if s.table == table and s.action == "delete_scope" and json.loads(key) == s.scope:
                        later.setdefault((table, key), []).append((r["id"], r["run_id"], None, None))
    # a later run that is undone now, and its undo (and the undo's undo, ...), cancel out
    cancelled: set[int] = set()
    for rid in {h[1] for hits in later.values() for h in hits if h[1] is not None}:
        if rid not in cancelled and undone_by(conn, rid) is not None:
            cancelled |= {rid} | _chain(conn, rid)
    if cancelled:
        later = {k: kept for k, v in later.items() if (kept := [h for h in v if h[1] not in cancelled])}
    titles: dict[int, str] = {}

    def run_title(rid: int | None) -> str | None:
        if rid is None:
            return None
        if rid not in titles:
            row = conn.execute("SELECT title FROM runs WHERE id = ?", (rid,)).fetchone()
            titles[rid] = row[0] if row else "(deleted run)"
        return titles[rid]

    def add(table: str, key: str, reason: str, fields: list, rid: int | None) -> UndoConflict:
        c = plan._conflict_index.get((table, key))
        if c is None:
            c = UndoConflict(table, key, reason, fields, rid, run_title(rid))
            plan._conflict_index[(table, key)] = c
            plan.conflicts.append(c)
        return c

    images: dict[tuple[str, str], dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()   # rows an earlier step of the undo already put back
    for s in plan.steps:
        if s.action == "delete_scope":
            cond = " AND ".join(f"{_q(c)} = ?" for c in s.scope)
            rows = conn.execute(f"SELECT * FROM {_q(s.table)} WHERE {cond}", tuple(s.scope.values())).fetchall()
            s.keys = [shapes.key_text(s.table, dict(r)) for r in rows]
            plan.delete[s.table] = plan.delete.get(s.table, 0) + len(rows)
            skey = json.dumps(s.scope, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            hits = later.get((s.table, skey))
            if hits:
                add(s.table, skey, "changed_later", [], hits[-1][1])
            continue
        keys = s.item_keys()
        if s.action == "delete":   # rows the run added: whole rows only of those a later run wrote
            present = shapes.existing(s.table, keys)
            now_rows = shapes.current(s.table, [k for k in keys if k in present and (s.table, k) in later])
        else:
            present, now_rows = set(), shapes.current(s.table, keys)
        for k in keys:
            cur = now_rows.get(k)
            hits = later.get((s.table, k))
            rid = hits[-1][1] if hits else None
            if (s.table, k) in seen:   # the run wrote this row again later: checked at its last write
                if s.action == "reinsert":
                    images.setdefault((s.table, k), s.rows[k])
                continue
            seen.add((s.table, k))
            if s.action == "delete":
                if k not in present:
                    add(s.table, k, "row_gone", [], rid)
                elif hits:
                    fields = []
                    for _jid, _r, cols, before in hits:
                        for c in sorted(cols or ()):
                            if c in (cur or {}) and before is not None and c not in {f for f, _, _ in fields}:
                                fields.append((c, before.get(c), cur.get(c)))
                    add(s.table, k, "changed_later", fields, rid)
                if cur is not None:
                    images[(s.table, k)] = cur
            elif s.action in ("restore", "stamp"):
                left = s.left[k]
                if cur is None:
                    add(s.table, k, "row_gone", [], rid)
                    continue
                images[(s.table, k)] = cur
                diff = [(c, v, cur.get(c)) for c, v in left.items() if c in cur and cur.get(c) != v]
                if diff or hits:
                    add(s.table, k, "changed_later", diff or [(c, v, cur.get(c)) for c, v in left.items()], rid)
            else:   # reinsert
                images[(s.table, k)] = s.rows[k]
                if cur is not None:
                    fields = [(c, None, cur.get(c)) for c in cur if s.rows[k].get(c) != cur.get(c)]
                    add(s.table, k, "key_taken", fields, rid)
                elif hits:
                    add(s.table, k, "changed_later", [], rid)
    _later_dependants(conn, plan, shapes, add, later)
    _name_patrons(conn, plan, images)


def _later_dependants(conn, plan: UndoPlan, shapes: _Shapes, add, later) -> None:
    """Rows the undo deletes (rows the run added) that now have dependants it does not delete."""
    deleted: dict[str, set[str]] = {}
    moved: dict[tuple[str, str], set[str]] = {}   # rows whose columns the undo sets back (a reference moves)
    for s in plan.steps:
        if s.action in ("delete", "delete_scope"):
            deleted.setdefault(s.table, set()).update(s.keys)
        elif s.action == "restore":
            for k, ch in s.changes.items():
                moved.setdefault((s.table, k), set()).update(ch)
        elif s.action == "stamp":
            for k in s.keys:
                moved.setdefault((s.table, k), set()).add(s.column)
    for table, keys in deleted.items():
        if not shapes.int_key(table):
            continue
        pk = shapes.pk(table)[0]
        ids = json.dumps([int(k) for k in keys])
        for child, col, to in shapes.children(table):
            if to != pk:
                continue
            gone = deleted.get(child, set())
            for r in conn.execute(f"SELECT * FROM {_q(child)} WHERE {_q(col)} IN (SELECT value FROM json_each(?))",
                                  (ids,)):
                ck = shapes.key_text(child, dict(r))
                if ck in gone or col in moved.get((child, ck), ()):
                    continue
                parent = str(r[col])
                plan._dependants.setdefault((table, parent), []).append((child, ck))
                hit = conn.execute(
                    "SELECT run_id FROM change_journal WHERE table_name = ? AND row_key = ? ORDER BY id DESC LIMIT 1",
                    (child, ck)).fetchone()
                add(table, parent, "dependants", [], hit[0] if hit else None).fields.append(
                    (f"{child} {ck}", None, "added since"))


def _name_patrons(conn, plan: UndoPlan, images: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Barcode and name of the patron each conflict is about (a patron row, or a row with patron_id)."""
    for c in plan.conflicts:
        img = images.get((c.table, c.key)) or {}
        if c.table == "patrons":
            try:
                c.patron_id = int(c.key)
            except ValueError:
                continue
        elif img.get("patron_id") is not None:
            c.patron_id = int(img["patron_id"])
        if c.patron_id is None:
            continue
        p = images.get(("patrons", str(c.patron_id)))
        if p is None:
            row = conn.execute("SELECT barcode, last_name, first_name FROM patrons WHERE id = ?",
                               (c.patron_id,)).fetchone()
            p = dict(row) if row else {}
        c.barcode = p.get("barcode")
        c.name = ", ".join(x for x in (p.get("last_name"), p.get("first_name")) if x) or None


# -- the run ----------------------------------------------------------------------------------

def start_undo(engine: RunEngine, store: Any, operator: str, run_id: int, *,
               on_conflict: OnConflict = "refuse", accepted: Iterable[tuple[str, str]] | None = None,
               on_plan: Callable[[UndoPlan], None] | None = None) -> RunHandle:
    """Check that `run_id` can be undone and this operator may (UndoRefused / PermissionDenied
    with the sentence if not: `check_undo`, milliseconds) and start the undo run (kind "undo",
    params {"undoes": run_id, "on_conflict": ...}): its row is written before it plans, so a
    long plan is a running run that every console can see. `operator` is who asks; like every
    run, the undo runs and is journalled as the engine's store operator.

    `on_conflict`: "refuse" (nobody chose: any conflict fails the undo, nothing changed), "skip"
    or "overwrite" (what to do with them). `accepted`: the (table, key) of the conflicts the
    operator was shown and chose for; a conflict outside them refuses the undo, as if nobody had
    chosen (None: the choice holds for every conflict, the CLI's flags). `on_plan(plan)` is
    called on the run's thread with the plan checked inside the write transaction (the CLI
    lists a refused undo's conflicts from it)."""
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    from patron_tui.services.permissions import require_undo   # PermissionDenied: who may undo what

    conn = store.connect()
    try:
        require_undo(conn, operator, run_id)
        head = check_undo(conn, run_id)
    finally:
        conn.close()
    if head.refusal:
        raise UndoRefused(head.refusal)
    shown = None if accepted is None else frozenset((str(t), str(k)) for t, k in accepted)
    return engine.start(UNDO_KIND, f"Undo run {run_id}: {head.title}",
                        lambda ctx: undo_run(ctx, run_id, on_conflict, accepted=shown, on_plan=on_plan),
                        params={"undoes": run_id, "on_conflict": on_conflict})


def undo_run(ctx: RunContext, run_id: int, on_conflict: OnConflict = "refuse", *,
             accepted: frozenset[tuple[str, str]] | None = None,
             on_plan: Callable[[UndoPlan], None] | None = None) -> dict[str, Any]:
    """The undo as a run: plan (its row is already written), then in ONE write transaction
    check the plan still holds, refuse on conflicts nobody chose for, and apply every step (see
    the module doc and `start_undo`). Returns the summary."""
    if on_conflict not in ON_CONFLICT:
        raise RunFailed(f"on_conflict must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    skipped: list[str] = []
    counts = {"reinserted": 0, "deleted": 0, "restored": 0}
    ctx.info(f"Planning the undo of run {run_id}.", code="planning")
    mark = _journal_mark(ctx.conn)   # before the plan reads: a write it may not see journals above
    plan = plan_undo(ctx.conn, run_id)
    if plan.refusal:
        raise RunFailed(plan.refusal)
    ctx.check_cancelled()
    with ctx.writer() as w:
        shapes = _Shapes(w.conn)
        again = check_undo(w.conn, run_id)   # milliseconds: e.g. another undo of the run just committed
        if again.refusal:
            raise RunFailed(again.refusal)
        if _written_since(w.conn, plan, shapes, mark):   # under the write lock: what is applied is what was checked
            plan = plan_undo(w.conn, run_id)
            if plan.refusal:
                raise RunFailed(plan.refusal)
        if on_plan is not None:
            on_plan(plan)
        refused = [c for c in plan.conflicts if on_conflict == "refuse"
                   or (accepted is not None and (c.table, c.key) not in accepted)]
        if refused:   # rolled back as the exception leaves the transaction: nothing changed
            ctx.messages(EventKind.WARNING, [(f"Changed again: {c.describe()}.", c.reason, None, c.barcode,
                                              c.patron_id) for c in refused])
            ctx.summary.update({"undoes": run_id, "on_conflict": on_conflict, "conflicts": len(plan.conflicts),
                                "conflicts_refused": len(refused)})
            raise RunFailed(conflicts_refusal(len(refused)))
        ctx.info(plan.describe(), code="plan")
        total = len(plan.steps)
        for i, step in enumerate(plan.steps):
            ctx.check_cancelled()
            _apply_step(w, shapes, plan, step, on_conflict, counts, skipped)
            ctx.progress(i + 1, total)
        # the run's outcome commits with its data (RunContext.writer)
        summary = {"undoes": run_id, "on_conflict": on_conflict, **counts,
                   "conflicts": len(plan.conflicts), "refused": len(skipped)}
        ctx.summary.update(summary)
    word = "Left as it is" if on_conflict == "skip" else "Overwritten"
    ctx.messages(EventKind.SKIPPED if on_conflict == "skip" else EventKind.WARNING, [
        (f"{word}: {c.describe()}.", c.reason, None, c.barcode, c.patron_id) for c in plan.conflicts])
    ctx.messages(EventKind.SKIPPED, [(text, "refused", None, None, None) for text in skipped])
    ctx.info(f"Undid run {run_id}: {counts['reinserted']:,} rows re-inserted, {counts['deleted']:,} deleted, "
             f"{counts['restored']:,} restored; {len(plan.conflicts):,} conflicts "
             f"{'overwritten' if on_conflict == 'overwrite' else 'skipped'}"
             f"{f', {len(skipped):,} rows refused by the database' if skipped else ''}.", code="undone")
    return summary


def _apply_step(w: ChangesetWriter, shapes: _Shapes, plan: UndoPlan, step: _Step, on_conflict: str,
                counts: dict[str, int], skipped: list[str]) -> None:
    table = step.table
    skip = on_conflict == "skip"

    def wanted(k: str) -> bool:
        return not (skip and plan.conflict(table, k) is not None)

    if step.action == "delete_scope":
        skey = json.dumps(step.scope, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        if wanted(skey):
            counts["deleted"] += _guarded(w, lambda: w.delete_where(table, step.scope), [], table, on_conflict,
                                          skipped)
        return
    if step.action == "delete":
        keys = [k for k in step.keys if wanted(k)]
        if not keys:
            return
        if not skip:   # later dependants go first (through the writer), then the rows
            for k in keys:
                for child, ck in plan._dependants.get((table, k), []):
                    _delete_tree(w, shapes, child, ck)
        values = [shapes.key_value(table, k) for k in keys]
        counts["deleted"] += _guarded(
            w, lambda: w.delete_many(table, values),
            [(k, (lambda v=v: w.delete(table, v) is not None and 1 or 0)) for k, v in zip(keys, values)],
            table, on_conflict, skipped)
    elif step.action == "restore":
        items = [(shapes.key_value(table, k), ch) for k, ch in step.changes.items() if wanted(k)]
        if not items:
            return
        set_based = len(items) >= changeset.COLUMNAR_MIN and shapes.int_key(table)
        counts["restored"] += _guarded(
            w, (lambda: _restore_set_based(w, table, items)) if set_based else (lambda: w.update_many(table, items)),
            # row by row only if the bulk write is refused: made then
            ((str(v), (lambda v=v, ch=ch: 1 if w.update(table, v, ch) is not None else 0)) for v, ch in items),
            table, on_conflict, skipped)
    elif step.action == "stamp":
        keys = [int(k) for k in step.keys if wanted(k)]
        if not keys:
            return
        counts["restored"] += _guarded(w, lambda: w.stamp(table, step.column, step.old, keys), [], table,
                                       on_conflict, skipped)
    elif step.action == "reinsert":
        fresh: list[tuple[str, dict[str, Any]]] = []
        taken: list[tuple[str, dict[str, Any]]] = []
        existing = shapes.current(table, [k for k in step.rows if wanted(k)])
        for k, row in step.rows.items():
            if not wanted(k):
                continue
            (taken if k in existing else fresh).append((k, row))
        pk = shapes.pk(table)
        for k, row in taken:   # overwrite: the row that holds the key now becomes the before-image again
            value = shapes.key_value(table, k)
            counts["reinserted"] += _guarded(
                w, lambda value=value, row=row: 1 if w.update(
                    table, value, {c: v for c, v in row.items() if c not in pk}) is not None else 0,
                [], table, on_conflict, skipped)
        if not fresh:
            return
        if shapes.int_key(table):
            bulk = lambda: w.insert_many(table, [row for _, row in fresh])   # noqa: E731
        else:
            bulk = lambda: sum(1 for _, row in fresh if w.insert(table, row) is not None)   # noqa: E731
        counts["reinserted"] += _guarded(
            w, bulk, [(k, (lambda row=row: 1 if w.insert(table, row) is not None else 0)) for k, row in fresh],
            table, on_conflict, skipped)


def _restore_set_based(w: ChangesetWriter, table: str, items: list[tuple[Any, dict[str, Any]]]) -> int:
    """Put many rows' old values back with `update_where` (a key table of the values per set of
    columns), so a big restore is journalled column-wise as the write it undoes was."""
    groups: dict[tuple[str, ...], list[tuple]] = {}
    for key, ch in items:
        groups.setdefault(tuple(ch), []).append((key, *ch.values()))
    conn, done = w.conn, 0
    for cols, rows in groups.items():
        names = [f"v{i}" for i in range(len(cols))]
        conn.execute("DROP TABLE IF EXISTS temp._undo_restore")
        conn.execute(f"CREATE TEMP TABLE _undo_restore (k INTEGER PRIMARY KEY, {', '.join(names)})")
        try:
            conn.executemany(f"INSERT OR REPLACE INTO temp._undo_restore VALUES (?, {', '.join('?' * len(cols))})",
                             rows)
            done += w.update_where(table, {}, keys="_undo_restore", values=dict(zip(cols, names)))
        finally:
            conn.execute("DROP TABLE IF EXISTS temp._undo_restore")
    return done


def _guarded(w: ChangesetWriter, bulk, one_by_one: Iterable, table: str, on_conflict: str,
             skipped: list[str]) -> int:
    """Run `bulk` in a savepoint; if the database refuses it, run the rows one by one (each in a
    savepoint): a refused row is skipped (skip) or fails the undo (overwrite)."""
    conn = w.conn
    conn.execute("SAVEPOINT undo_step")
    try:
        n = bulk()
        conn.execute("RELEASE undo_step")
        return int(n or 0)
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK TO undo_step")
        conn.execute("RELEASE undo_step")
        if not one_by_one:
            return _refused(on_conflict, skipped, table, "", exc)
    n = 0
    for key, fn in one_by_one:
        conn.execute("SAVEPOINT undo_row")
        try:
            n += fn()
            conn.execute("RELEASE undo_row")
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK TO undo_row")
            conn.execute("RELEASE undo_row")
            _refused(on_conflict, skipped, table, key, exc)
    return n


def _refused(on_conflict: str, skipped: list[str], table: str, key: str, exc: Exception) -> int:
    what = f"{table} {key}".strip()
    if on_conflict != "skip":   # overwrite, or refuse (nobody chose to leave a row out)
        raise RunFailed(f"The database refused to put back {what} ({exc}); the undo was rolled back: "
                        f"nothing was changed.")
    skipped.append(f"Not put back: {what}: the database refused it ({exc}).")
    return 0


def _delete_tree(w: ChangesetWriter, shapes: _Shapes, table: str, key: str) -> None:
    """Delete one row and, first, every row that depends on it, through the writer."""
    if shapes.int_key(table):
        pk = shapes.pk(table)[0]
        for child, col, to in shapes.children(table):
            if to != pk:
                continue
            for r in w.conn.execute(f"SELECT * FROM {_q(child)} WHERE {_q(col)} = ?", (int(key),)).fetchall():
                _delete_tree(w, shapes, child, shapes.key_text(child, dict(r)))
    w.delete(table, shapes.key_value(table, key))
