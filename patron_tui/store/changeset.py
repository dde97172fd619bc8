"""The changeset writer: the one way anything in the project writes data.

Every write records, in the same transaction as the write itself, who made it
(the operator's login name), in which run, the table, the row's key and the
row's before- and after-image in `change_journal`. Undo, the audit trail and
job summaries read from there.

Two paths:
- small writes (`insert`, `update`, `delete`) for forms and utilities;
- bulk writes (`insert_many`, `update_many`, `delete_many`) built on one
  `executemany` per statement inside the writer's single `BEGIN IMMEDIATE`
  transaction, for imports of hundreds of thousands of rows.

Images are JSON objects of column -> value; BLOBs are stored as
{"$b64": "..."} so that a before-image restores byte for byte.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

Row = Mapping[str, Any]
Key = Any  # a single primary-key value, or a tuple for composite keys

_BATCH = 5_000


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"cannot journal a value of type {type(value).__name__}")


def encode_image(row: Row | None) -> str | None:
    if row is None:
        return None
    return json.dumps(dict(row), ensure_ascii=False, default=_json_default, separators=(",", ":"))


def decode_image(text: str | None) -> dict[str, Any] | None:
    """The inverse of `encode_image` (BLOBs come back as bytes)."""
    if text is None:
        return None

    def hook(obj: dict[str, Any]) -> Any:
        if len(obj) == 1 and "$b64" in obj:
            return base64.b64decode(obj["$b64"])
        return obj

    return json.loads(text, object_hook=hook)


class WriterClosed(RuntimeError):
    pass


class ChangesetWriter:
    """A write transaction that journals every row it touches.

    Use as a context manager: `BEGIN IMMEDIATE` on enter, `COMMIT` on a clean
    exit, `ROLLBACK` on any exception, so a failure leaves neither a partial
    write nor a journal row.
    """

    def __init__(self, conn: sqlite3.Connection, *, operator: str, run_id: int | None) -> None:
        if not operator:
            raise ValueError("the changeset writer needs the operator's login name")
        self.conn = conn
        self.operator = operator
        self.run_id = run_id
        self.ts = utc_now()
        self._open = False
        self._pk_cache: dict[str, tuple[str, ...]] = {}
        self._col_cache: dict[str, tuple[str, ...]] = {}
        self.counts: dict[str, int] = {"insert": 0, "update": 0, "delete": 0}

    # -- transaction -----------------------------------------------------------
    def __enter__(self) -> "ChangesetWriter":
        self.conn.execute("BEGIN IMMEDIATE")
        self._open = True
        self.ts = utc_now()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._open = False
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        elif self.conn.in_transaction:
            # SQLite rolls back by itself on an interrupt or a full disk; a second
            # ROLLBACK would raise and hide the real error
            self.conn.execute("ROLLBACK")

    def _check(self) -> None:
        if not self._open:
            raise WriterClosed("write outside the changeset writer's transaction")

    # -- table shape -------------------------------------------------------------
    def primary_key(self, table: str) -> tuple[str, ...]:
        pk = self._pk_cache.get(table)
        if pk is None:
            info = self.conn.execute(f"PRAGMA table_info({_ident(table)})").fetchall()
            if not info:
                raise KeyError(f"no table named {table!r}")
            cols = sorted((r["pk"], r["name"]) for r in info if r["pk"])
            pk = tuple(name for _, name in cols) or ("rowid",)
            self._pk_cache[table] = pk
            self._col_cache[table] = tuple(r["name"] for r in info)
        return pk

    def columns(self, table: str) -> tuple[str, ...]:
        self.primary_key(table)
        return self._col_cache[table]

    def _key_text(self, table: str, key: Key) -> str:
        pk = self.primary_key(table)
        if len(pk) == 1:
            return str(key[0] if isinstance(key, tuple) else key)
        return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))

    def _key_of(self, table: str, row: Row) -> Key:
        pk = self.primary_key(table)
        if len(pk) == 1:
            return row[pk[0]]
        return tuple(row[c] for c in pk)

    def _where(self, table: str) -> str:
        return " AND ".join(f"{_ident(c)} = ?" for c in self.primary_key(table))

    @staticmethod
    def _key_params(key: Key) -> tuple:
        return key if isinstance(key, tuple) else (key,)

    # -- reads used for before-images -------------------------------------------------
    def fetch(self, table: str, key: Key) -> dict[str, Any] | None:
        row = self.conn.execute(
            f"SELECT * FROM {_ident(table)} WHERE {self._where(table)}", self._key_params(key)
        ).fetchone()
        return dict(row) if row is not None else None

    def _fetch_many(self, table: str, keys: Sequence[Key]) -> dict[Any, dict[str, Any]]:
        pk = self.primary_key(table)
        found: dict[Any, dict[str, Any]] = {}
        if len(pk) != 1:
            for key in keys:
                row = self.fetch(table, key)
                if row is not None:
                    found[key] = row
            return found
        col = _ident(pk[0])
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT * FROM {_ident(table)} WHERE {col} IN ({marks})", chunk
            ):
                found[row[pk[0]]] = dict(row)
        return found

    # -- journal -------------------------------------------------------------------
    def _journal(self, rows: Iterable[tuple[str, str, str, str | None, str | None]]) -> None:
        self.conn.executemany(
            "INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op, before, after)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (self.run_id, self.operator, self.ts, table, key, op, before, after)
                for table, key, op, before, after in rows
            ),
        )

    # -- small writes ----------------------------------------------------------------
    def insert(self, table: str, row: Row) -> Key:
        """Insert one row; returns its key (the new id for integer keys)."""
        self._check()
        cols = list(row)
        cur = self.conn.execute(
            f"INSERT INTO {_ident(table)} ({', '.join(map(_ident, cols))})"
            f" VALUES ({', '.join('?' * len(cols))})",
            [row[c] for c in cols],
        )
        pk = self.primary_key(table)
        if len(pk) == 1 and pk[0] not in row:
            key: Key = cur.lastrowid
            after = {pk[0]: key, **row}
        else:
            key = self._key_of(table, row)
            after = dict(row)
        self._journal([(table, self._key_text(table, key), "insert", None, encode_image(after))])
        self.counts["insert"] += 1
        return key

    def update(self, table: str, key: Key, changes: Row) -> dict[str, Any] | None:
        """Change some columns of one row.

        Returns the before-image, or None when the row does not exist. Columns
        whose value does not change are not written and not journalled; an
        update that changes nothing writes nothing.
        """
        self._check()
        before = self.fetch(table, key)
        if before is None:
            return None
        diff = {c: v for c, v in changes.items() if before.get(c) != v or c not in before}
        if diff:
            self._apply_update(table, key, diff)
            self._journal(
                [(table, self._key_text(table, key), "update", encode_image(before), encode_image(diff))]
            )
            self.counts["update"] += 1
        return before

    def delete(self, table: str, key: Key) -> dict[str, Any] | None:
        """Delete one row; returns its before-image (None if it was not there)."""
        self._check()
        before = self.fetch(table, key)
        if before is None:
            return None
        self.conn.execute(f"DELETE FROM {_ident(table)} WHERE {self._where(table)}", self._key_params(key))
        self._journal([(table, self._key_text(table, key), "delete", encode_image(before), None)])
        self.counts["delete"] += 1
        return before

    def _apply_update(self, table: str, key: Key, diff: Row) -> None:
        sets = ", ".join(f"{_ident(c)} = ?" for c in diff)
        self.conn.execute(
            f"UPDATE {_ident(table)} SET {sets} WHERE {self._where(table)}",
            [*diff.values(), *self._key_params(key)],
        )

    # -- bulk writes -------------------------------------------------------------------
    def insert_many(
        self,
        table: str,
        rows: Iterable[Row],
        *,
        journal: Literal["full", "range"] = "full",
    ) -> int:
        """Insert many rows with one `executemany` per batch.

        Integer-keyed rows without an id get fresh consecutive ids (the writer
        holds the write lock, so nobody else can take them). `journal="range"`
        records the whole load as one 'insert_range' row (for loads into fresh
        ids, such as building a demo district); "full" journals every row.
        Returns the number of rows inserted.
        """
        self._check()
        pk = self.primary_key(table)
        int_key = len(pk) == 1 and self._is_integer_pk(table, pk[0])
        next_id = None
        if int_key:
            next_id = self.conn.execute(
                f"SELECT coalesce(max({_ident(pk[0])}), 0) + 1 FROM {_ident(table)}"
            ).fetchone()[0]
        first_id = next_id
        first_rowid = None
        if journal == "range" and not int_key:
            # composite-key tables with rowids: journal the rowid range
            first_rowid = self.conn.execute(
                f"SELECT coalesce(max(rowid), 0) + 1 FROM {_ident(table)}"
            ).fetchone()[0]
        total = 0
        cols: list[str] | None = None
        sql = ""
        batch: list[tuple] = []
        jbatch: list[tuple] = []

        def flush() -> None:
            if batch:
                self.conn.executemany(sql, batch)
                batch.clear()
            if jbatch:
                self._journal(jbatch)
                jbatch.clear()

        for row in rows:
            if int_key and row.get(pk[0]) is None:
                row = {pk[0]: next_id, **{k: v for k, v in row.items() if k != pk[0]}}
            if int_key:
                next_id = max(next_id, row[pk[0]] + 1)
            if cols is None:
                cols = list(row)
                sql = (
                    f"INSERT INTO {_ident(table)} ({', '.join(map(_ident, cols))})"
                    f" VALUES ({', '.join('?' * len(cols))})"
                )
            elif len(row) != len(cols):
                raise ValueError(f"insert_many into {table}: rows must all have the same columns")
            batch.append(tuple(row[c] for c in cols))
            if journal == "full":
                jbatch.append(
                    (table, self._key_text(table, self._key_of(table, row)), "insert", None, encode_image(row))
                )
            total += 1
            if len(batch) >= _BATCH:
                flush()
        flush()
        if journal == "range" and total:
            if int_key:
                self._journal([(table, f"{first_id}..{next_id - 1}", "insert_range", None, None)])
            else:
                last_rowid = self.conn.execute(f"SELECT max(rowid) FROM {_ident(table)}").fetchone()[0]
                self._journal([(table, f"rowid {first_rowid}..{last_rowid}", "insert_range", None, None)])
        self.counts["insert"] += total
        return total

    def update_many(self, table: str, items: Iterable[tuple[Key, Row]]) -> int:
        """Apply (key, changes) pairs; journals before-images fetched in batches.

        Returns how many rows actually changed (no-op changes are skipped).
        """
        self._check()
        changed = 0
        pending: list[tuple[Key, Row]] = []

        def flush() -> None:
            nonlocal changed
            befores = self._fetch_many(table, [k for k, _ in pending])
            grouped: dict[tuple[str, ...], list[tuple]] = {}
            jrows = []
            for key, changes in pending:
                before = befores.get(key)
                if before is None:
                    continue
                diff = {c: v for c, v in changes.items() if before.get(c) != v}
                if not diff:
                    continue
                cols = tuple(diff)
                grouped.setdefault(cols, []).append((*diff.values(), *self._key_params(key)))
                jrows.append(
                    (table, self._key_text(table, key), "update", encode_image(before), encode_image(diff))
                )
            for cols, params in grouped.items():
                sets = ", ".join(f"{_ident(c)} = ?" for c in cols)
                self.conn.executemany(
                    f"UPDATE {_ident(table)} SET {sets} WHERE {self._where(table)}", params
                )
            self._journal(jrows)
            changed += len(jrows)
            pending.clear()

        for item in items:
            pending.append(item)
            if len(pending) >= _BATCH:
                flush()
        if pending:
            flush()
        self.counts["update"] += changed
        return changed

    def delete_many(self, table: str, keys: Iterable[Key]) -> int:
        """Delete rows by key, journalling each before-image. Returns rows deleted."""
        self._check()
        deleted = 0
        pending: list[Key] = []

        def flush() -> None:
            nonlocal deleted
            befores = self._fetch_many(table, pending)
            present = [k for k in pending if k in befores]
            self._journal(
                (table, self._key_text(table, k), "delete", encode_image(befores[k]), None) for k in present
            )
            self.conn.executemany(
                f"DELETE FROM {_ident(table)} WHERE {self._where(table)}",
                [self._key_params(k) for k in present],
            )
            deleted += len(present)
            pending.clear()

        for key in keys:
            pending.append(key)
            if len(pending) >= _BATCH:
                flush()
        if pending:
            flush()
        self.counts["delete"] += deleted
        return deleted

    def _is_integer_pk(self, table: str, col: str) -> bool:
        for r in self.conn.execute(f"PRAGMA table_info({_ident(table)})"):
            if r["name"] == col:
                return r["type"].upper() == "INTEGER"
        return False


def _ident(name: str) -> str:
    """Quote an identifier (table and column names come from code, never users)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not an identifier: {name!r}")
    return f'"{name}"'
