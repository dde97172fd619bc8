"""The audit trail: who changed what, when, in which run, from what to what; and the journal's
retention.

`history(conn, patron=..., operator=..., run_id=..., since=..., table=..., limit=..., offset=...)`
reads the change journal (store/changeset.py) newest first as `AuditEntry`s with field-level
changes derived from the journal's images:
- an update: the written columns whose value changed, old and new;
- an insert: the row as the insert made it (`inserted_image`: the row now, with every later
  change laid back), each non-empty field from nothing;
- a delete: the whole before-image, each field to nothing.
For a patron (barcode, district ID or `#id`; a deleted patron is found by the barcode or
district ID its deletion journalled) the history holds the patron's own rows and the rows of
its dependants (notes, charges, holds, history, profiles with their subjects and service queue,
reviews, checkouts, import conflicts: every table with a foreign key onto patrons, and one level
further), including dependants since deleted or moved to another patron; a `stamp` (one journal
row for a run of keys) or a bulk load ('insert_range') that covers the patron is expanded into
the patron's own entry, and so is a columnar update (`update_where`'s form for big batch
updates: the keys and old values column-wise) that holds one of the patron's rows: its entry
shows that row's own old and new values. Lookups go through the journal's (table, key) index
and migration 8's partial index of range and scope rows (a columnar row is opened, with
`json_each` over its key list, only when its key span covers one of the keys), so a patron's
history costs a few index reads however large the journal is. Outside a patron's history a
columnar row is one entry whose changes are the values it set on every row.

Retention: runs older than the `journal_retention_days` setting (default 400) lose their
journal rows to `prune_journal` (a run of kind "journal_prune"); the run rows stay, their
summary noting `journal_pruned` (the date), and such a run can no longer be undone
(services/undo.py says so). The journal and the run rows are bookkeeping: pruning deletes and
marks them directly (the changeset writer cannot journal its own journal).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from patron_tui.runs import RunContext, RunEngine, RunHandle
from patron_tui.services.undo import RETENTION_SETTING, columnar_rows, is_columnar, retention_days
from patron_tui.store.changeset import decode_image, encode_image, inserted_image, utc_now
from patron_tui.store.db import write_transaction

PRUNE_KIND = "journal_prune"

__all__ = ["AuditEntry", "AuditError", "FieldChange", "PRUNE_KIND", "history", "prune_journal",
           "prune_preview", "resolve_patron", "start_prune"]


class AuditError(ValueError):
    """A question the audit trail cannot answer (an unknown patron); str(exc) says why."""


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclass
class AuditEntry:
    journal_id: int
    ts: str
    operator: str
    run_id: int | None
    run_title: str | None
    run_kind: str | None
    table: str
    key: str
    op: str                          # insert | update | delete (a bulk load is an insert)
    changes: list[FieldChange] = field(default_factory=list)
    patron_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"journal_id": self.journal_id, "ts": self.ts, "operator": self.operator, "run_id": self.run_id,
                "run_title": self.run_title, "run_kind": self.run_kind, "table": self.table, "key": self.key,
                "op": self.op, "patron_id": self.patron_id,
                "changes": [{"field": c.field, "before": _plain(c.before), "after": _plain(c.after)}
                            for c in self.changes]}


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$hex": bytes(value).hex().upper()}
    return value


# -- which patron ------------------------------------------------------------------------------

def resolve_patron(conn: sqlite3.Connection, text: str) -> int:
    """The patron id of a barcode, a district ID or `#id`, now or (for a deleted patron) in the
    journal. AuditError when none matches."""
    text = text.strip()
    if text.startswith("#") and text[1:].isdigit():
        return int(text[1:])
    row = conn.execute("SELECT id FROM patrons WHERE barcode = ? UNION ALL SELECT id FROM patrons WHERE"
                       " district_id = ? LIMIT 1", (text, text)).fetchone()
    if row is not None:
        return int(row[0])
    row = conn.execute(
        "SELECT row_key FROM change_journal WHERE table_name = 'patrons' AND op IN ('delete', 'update')"
        " AND (json_extract(before, '$.barcode') = ?1 OR json_extract(before, '$.district_id') = ?1)"
        " ORDER BY id DESC LIMIT 1", (text,)).fetchone()
    if row is not None and row[0].isdigit():
        return int(row[0])
    raise AuditError(f"No patron has the barcode or district ID {text!r}, now or in the change journal.")


# -- reading the journal ---------------------------------------------------------------------------

_COLS = "j.id, j.run_id, j.operator, j.ts, j.table_name, j.row_key, j.op, j.before, j.after"
_RANGES = "(op = 'insert_range' OR substr(row_key, 1, 1) = '{')"   # the partial index's condition
_COLUMNAR = '{"$keys"'   # how a columnar update's row_key starts (8 characters)


def history(conn: sqlite3.Connection, *, patron: str | None = None, operator: str | None = None,
            run_id: int | None = None, since: dt.date | str | None = None, table: str | None = None,
            limit: int = 100, offset: int = 0) -> list[AuditEntry]:
    """Journal entries, newest first, filtered (see the module doc). AuditError for an unknown
    patron."""
    since_text = since.isoformat() if isinstance(since, dt.date) else since
    if patron is not None:
        pid = resolve_patron(conn, patron)
        rows = _patron_rows(conn, pid)
        rows = [r for r in rows if _keep(r, operator, run_id, since_text, table)]
        rows.sort(key=lambda r: r[0]["id"], reverse=True)
        page = rows[offset:offset + limit]
    else:
        where, params = ["1 = 1"], []
        if run_id is not None:
            where.append("j.run_id = ?")
            params.append(run_id)
        if operator is not None:
            where.append("j.operator = ?")
            params.append(operator)
        if since_text is not None:
            where.append("j.ts >= ?")
            params.append(since_text)
        if table is not None:
            where.append("j.table_name = ?")
            params.append(table)
        page = [(dict(r), None, None) for r in conn.execute(
            f"SELECT {_COLS} FROM change_journal j WHERE {' AND '.join(where)} ORDER BY j.id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset))]
    runs: dict[int, tuple[str, str]] = {}
    ids = sorted({r[0]["run_id"] for r in page if r[0]["run_id"] is not None})
    if ids:
        for r in conn.execute("SELECT id, title, kind FROM runs WHERE id IN (SELECT value FROM json_each(?))",
                              (json.dumps(ids),)):
            runs[r[0]] = (r[1], r[2])
    return [_entry(conn, row, key, patron_of, runs) for row, key, patron_of in page]


def _keep(item, operator, run_id, since, table) -> bool:
    r = item[0]
    return ((operator is None or r["operator"] == operator) and (run_id is None or r["run_id"] == run_id)
            and (since is None or r["ts"] >= since) and (table is None or r["table_name"] == table))


def _children(conn: sqlite3.Connection, parent: str) -> list[tuple[str, str]]:
    """(child table, column) of every foreign key onto `parent`'s id."""
    out = []
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"):
        for fk in conn.execute(f"PRAGMA foreign_key_list({_q(name)})"):
            if fk["table"] == parent and (fk["to"] in (None, "id")):
                out.append((name, fk["from"]))
    return out


def _pk(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r["name"] for r in sorted(conn.execute(f"PRAGMA table_info({_q(table)})"), key=lambda r: r["pk"])
            if r["pk"]]


def _q(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not an identifier: {name!r}")
    return f'"{name}"'


def _key_text(pk: list[str], row: dict[str, Any]) -> str:
    if len(pk) == 1:
        return str(row[pk[0]])
    return json.dumps([row[c] for c in pk], ensure_ascii=False, separators=(",", ":"))


def _rows_of(conn: sqlite3.Connection, table: str, column: str, owners: list[int]) -> set[str]:
    """Keys of `table` rows whose `column` is one of `owners`: now, or in a journal image."""
    pk = _pk(conn, table)
    if not pk or not owners:
        return set()
    js = json.dumps(owners)
    keys = {_key_text(pk, dict(r)) for r in conn.execute(
        f"SELECT * FROM {_q(table)} WHERE {_q(column)} IN (SELECT value FROM json_each(?))", (js,))}
    path = "$." + column
    for (k,) in conn.execute(
            "SELECT row_key FROM change_journal WHERE table_name = ? AND substr(row_key, 1, 1) <> '{'"
            " AND op <> 'insert_range' AND (json_extract(before, ?) IN (SELECT value FROM json_each(?))"
            " OR json_extract(after, ?) IN (SELECT value FROM json_each(?)))", (table, path, js, path, js)):
        keys.add(k)
    return keys


def _entries_for(conn: sqlite3.Connection, table: str, keys: set[str], patron_of: int) -> list[tuple]:
    """(journal row, the key it is about, patron id) for every journal row on these keys of `table`,
    ranges and stamps that cover one expanded to that key."""
    out: list[tuple] = []
    if not keys:
        return out
    for start in range(0, len(keys), 500):
        chunk = sorted(keys)[start:start + 500]
        for r in conn.execute(
                f"SELECT {_COLS} FROM change_journal j WHERE j.table_name = ? AND j.row_key IN"
                f" (SELECT value FROM json_each(?))", (table, json.dumps(chunk))):
            out.append((dict(r), r["row_key"], patron_of))
    ints = {int(k) for k in keys if k.lstrip("-").isdigit()}
    if ints:
        for r in conn.execute(f"SELECT {_COLS} FROM change_journal j WHERE j.table_name = ? AND {_RANGES}",
                              (table,)):
            key = r["row_key"]
            if key.startswith(_COLUMNAR):
                continue   # below
            if key.startswith("{"):
                if r["op"] != "update":
                    continue
                ranges = next(iter(json.loads(key).values()))
                hit = [i for i in ints if any(a <= i <= b for a, b in ranges)]
            elif key.startswith("rowid "):
                continue
            else:
                a, b = (int(x) for x in key.split(".."))
                hit = [i for i in ints if a <= i <= b]
            for i in hit:
                out.append((dict(r), str(i), patron_of))
        out += _columnar_entries(conn, table, ints, patron_of)
    return out


def _columnar_entries(conn: sqlite3.Connection, table: str, ints: set[int], patron_of: int) -> list[tuple]:
    """The rows of columnar updates (update_where's big form) about these keys of `table`, each
    as a journal row of its own whose images are that row's old and new values. Only the
    partial index's rows of `table` whose key span covers one of the keys are opened."""
    out: list[tuple] = []
    hits: dict[int, tuple[dict[str, Any], list[int]]] = {}
    for r in conn.execute(
            f"SELECT {_COLS}, e.value AS k FROM change_journal j, json_each(j.before,"
            " '$.\"$rows\".' || json_extract(j.row_key, '$.\"$keys\"')) e"
            f" WHERE j.table_name = ? AND {_RANGES} AND j.op = 'update' AND substr(j.row_key, 1, 8) = ?"
            " AND json_extract(j.row_key, '$.\"$span\"[0]') <= ? AND json_extract(j.row_key, '$.\"$span\"[1]') >= ?"
            " AND e.value IN (SELECT value FROM json_each(?))",
            (table, _COLUMNAR, max(ints), min(ints), json.dumps(sorted(ints)))):
        row = dict(r)
        k = row.pop("k")
        hits.setdefault(row["id"], (row, []))[1].append(k)
    for row, ks in hits.values():
        wanted = {str(k) for k in ks}
        for k, old, new in columnar_rows(row["row_key"], decode_image(row["before"]) or {},
                                         decode_image(row["after"])):
            if k in wanted:
                out.append(({**row, "before": encode_image(old), "after": encode_image(new)}, k, patron_of))
    return out


def _patron_rows(conn: sqlite3.Connection, pid: int) -> list[tuple]:
    rows = _entries_for(conn, "patrons", {str(pid)}, pid)
    for child, col in _children(conn, "patrons"):
        keys = _rows_of(conn, child, col, [pid])
        rows += _entries_for(conn, child, keys, pid)
        ids = [int(k) for k in keys if k.lstrip("-").isdigit()]
        if ids:
            for grandchild, gcol in _children(conn, child):
                rows += _entries_for(conn, grandchild, _rows_of(conn, grandchild, gcol, ids), pid)
    seen: set[tuple[int, str]] = set()
    out = []
    for row, key, p in rows:
        if (row["id"], key) not in seen:
            seen.add((row["id"], key))
            out.append((row, key, p))
    return out


def _entry(conn: sqlite3.Connection, row: dict[str, Any], key: str | None, patron_of: int | None,
           runs: dict[int, tuple[str, str]]) -> AuditEntry:
    table, op = row["table_name"], row["op"]
    key = key or row["row_key"]
    changes: list[FieldChange] = []
    before, after = decode_image(row["before"]), decode_image(row["after"])
    shown = "insert" if op == "insert_range" else op
    if op == "update" and is_columnar(key, before):   # one entry about all its rows: the one-for-all values
        changes = [FieldChange(c, None, v) for c, v in (after or {}).items() if c != "$rows"]
    elif op == "update":
        changes = [FieldChange(c, (before or {}).get(c), v) for c, v in (after or {}).items()
                   if (before or {}).get(c) != v]
    elif op in ("insert", "insert_range") and not key.startswith("{") and ".." not in key:
        image = inserted_image(conn, table, key, row["id"]) or {}
        changes = [FieldChange(c, None, v) for c, v in image.items() if v not in (None, "")]
    elif op == "delete" and before is not None and "$rows" not in before:
        changes = [FieldChange(c, v, None) for c, v in before.items() if v not in (None, "")]
    title, kind = runs.get(row["run_id"], (None, None))
    pid = patron_of
    if pid is None and table == "patrons" and key.isdigit():
        pid = int(key)
    return AuditEntry(row["id"], row["ts"], row["operator"], row["run_id"], title, kind, table, key, shown,
                      changes, pid)


# -- retention -----------------------------------------------------------------------------------

def _cutoff(conn: sqlite3.Connection, now: dt.datetime | None) -> tuple[int, str]:
    days = retention_days(conn)
    now = now or dt.datetime.now(dt.timezone.utc)
    return days, (now - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _old_runs(conn: sqlite3.Connection, cutoff: str) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT id FROM runs WHERE status NOT IN ('queued', 'running')"
        " AND coalesce(finished_at, started_at, created_at) < ?"
        " AND EXISTS (SELECT 1 FROM change_journal j WHERE j.run_id = runs.id) ORDER BY id", (cutoff,))]


def prune_preview(conn: sqlite3.Connection, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """What `prune_journal` would delete now: {"retention_days", "cutoff", "runs", "rows"}."""
    days, cutoff = _cutoff(conn, now)
    runs = _old_runs(conn, cutoff)
    rows = conn.execute(
        "SELECT count(*) FROM change_journal WHERE run_id IN (SELECT value FROM json_each(?))",
        (json.dumps(runs),)).fetchone()[0]
    rows += conn.execute("SELECT count(*) FROM change_journal WHERE run_id IS NULL AND ts < ?",
                         (cutoff,)).fetchone()[0]
    return {"retention_days": days, "cutoff": cutoff, "runs": len(runs), "run_ids": runs, "rows": rows}


def prune_journal(ctx: RunContext, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The pruning run: delete the journal rows of runs that ended before the retention (and
    of writes made outside any run before it), one run per short transaction; each pruned run's
    summary gets `journal_pruned`. Returns the summary."""
    conn = ctx.conn
    days, cutoff = _cutoff(conn, now)
    runs = _old_runs(conn, cutoff)
    ctx.info(f"Pruning the change journal of {len(runs):,} runs that ended before {cutoff[:10]} "
             f"({RETENTION_SETTING} = {days}).", code="prune")
    rows = 0
    stamp = utc_now()
    for i, rid in enumerate(runs):
        ctx.check_cancelled()
        with write_transaction(conn):
            rows += conn.execute("DELETE FROM change_journal WHERE run_id = ?", (rid,)).rowcount
            conn.execute("UPDATE runs SET summary = json_set(CASE WHEN json_valid(summary) THEN summary ELSE '{}'"
                         " END, '$.journal_pruned', ?) WHERE id = ?", (stamp, rid))
        ctx.progress(i + 1, len(runs))
    with write_transaction(conn):
        rows += conn.execute("DELETE FROM change_journal WHERE run_id IS NULL AND ts < ?", (cutoff,)).rowcount
    ctx.info(f"Journal pruned: {rows:,} rows of {len(runs):,} runs; those runs can no longer be undone.",
             code="pruned")
    return {"retention_days": days, "cutoff": cutoff, "runs": len(runs), "rows": rows}


def start_prune(engine: RunEngine, store: Any, operator: str, *, now: dt.datetime | None = None) -> RunHandle:
    """Start the pruning run (kind "journal_prune")."""
    conn = store.connect()
    try:
        days = retention_days(conn)
    finally:
        conn.close()
    return engine.start(PRUNE_KIND, f"Prune the change journal (runs older than {days} days)",
                        lambda ctx: prune_journal(ctx, now=now), params={"retention_days": days})
