"""The changeset writer: the one way anything in the project writes data.

Every write records, in the same transaction as the write itself, who made it
(the operator's login name), in which run, the table, the row's key and the
row's images in `change_journal`. Undo, the audit trail and job summaries
read from there.

What each operation journals (nothing is lost, and nothing is stored twice):
- insert: the key; `after` is NULL. The inserted row is the row itself, or,
  once the row changes again, the next journal entry's before-image (every
  write goes through this writer): `inserted_image()` reads it back;
- update: `before` and `after` hold the written columns only, old and new
  values (what undo restores and what the audit shows, "from what to what");
  a row whose values would not change is neither written nor journalled;
- delete: `before` is the whole row, so undo can put it back with its id.

Two paths:
- small writes (`insert`, `update`, `delete`) for forms and utilities;
- bulk writes (`insert_many`, `update_many`, `delete_many`, `stamp`) built on one
  `executemany` per statement inside the writer's single `BEGIN IMMEDIATE`
  transaction, for imports of hundreds of thousands of rows, and the set-based
  `update_where` over a temporary key table (batch updates, field utilities).

Images are JSON objects of column -> value; BLOBs are stored as
{"$hex": "..."} so that a before-image restores byte for byte. The bulk paths
build images inside SQLite (`json_object`) in one `INSERT ... SELECT` per
batch, so journalling costs no Python per row.

What SQLite would do by itself on a delete (`ON DELETE CASCADE` dependants deleted,
`ON DELETE SET NULL` references cleared) the writer does first, through itself, so it is
journalled too: every delete path (`delete`, `delete_many`, `delete_where`) deletes or clears
the dependants rows of the rows it is about to delete (nothing when the caller already did).
Undo restores only what the journal holds. The journal's own reference to `runs` is left to
SQLite (the journal does not journal itself).

Scoped bulk writes, for rows that belong to one owner and are never looked
up one by one in the journal (the members of a frozen query set:
`query_set_members` rows with one `set_id`), each journalled as ONE row
whose `row_key` is the scope as a JSON object, e.g.
`{"set_id":5}` (other keys are a plain value, a JSON array or `a..b`, so a
key starting with `{` always means a scope):
- `insert_select(table, columns, select_sql, params, scope=...)`: one
  `INSERT INTO table (...) SELECT ...`, journalled as op 'insert_range' with
  no images. The scope must hold no rows before and every inserted row
  after, so undo is "delete the rows of the scope";
- `delete_where(table, scope)`: deletes every row of the scope, journalled
  as op 'delete' whose `before` is a columnar image
  `{"$where": {"set_id":5}, "$rows": {"patron_id": [3,4,9]}}`: the scope's
  values once, then each other column as a list, all lists in the same
  row order (BLOBs as {"$hex": ...}); undo re-inserts row i as the scope
  plus the i-th value of every list. A scope that holds no rows writes and
  journals nothing.

Three more compact shapes, all op 'update' with a `row_key` starting with `{` (so migration 8's
partial index `change_journal_ranges` holds them and a reader finds them without a scan):
- `stamp` (one column to one value on many keys): one row per distinct old value, `row_key`
  `{"id": [[first, last], ...]}` (runs of consecutive keys), `before` `{column: old}`,
  `after` `{column: new}`;
- `update_where` from `COLUMNAR_MIN` (1,000) changed rows on (a batch update of a whole
  district): the columnar form, one row per `COLUMNAR_SLICE` (50,000) changed rows in key order,
  `row_key` `{"$keys":"id","$span":[first,last],"$n":n}` (the key column, the slice's lowest and
  highest key, its row count), `before` `{"$rows": {"id": [3,4,9], "max_items_out": [2,5,2],
  "status_of_service": ["Active", ...]}}` (the key column's list, then each written column's old
  values, all lists in the same row order, BLOBs as {"$hex": ...}), `after` the new values:
  `{"max_items_out": 12, ...}` when one value is for every row, and each column whose values
  come row by row from the key table as a list under "$rows" in the same order
  (`{"status_of_service": "Active", "$rows": {"next_service_date": [...]}}`). Like the per-row
  form it holds every written column of every changed row (a reader drops equal pairs); undo
  sets row i's changed columns back to the i-th old values. Below `COLUMNAR_MIN` changed rows
  `update_where` journals one 'update' row per row, as `update_many` does.
A reader tells them apart by the row_key: `{"$keys"...` is columnar, a scope whose value is a
list of pairs is a stamp, and an op 'delete' or 'insert_range' scope is a scoped write.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from datetime import datetime, timezone
from typing import Any, Literal

from patron_tui.store.db import begin_immediate

Row = Mapping[str, Any]
Key = Any  # a single primary-key value, or a tuple for composite keys

_BATCH = 5_000
COLUMNAR_MIN = 1_000       # changed rows from which update_where journals column-wise
COLUMNAR_SLICE = 50_000    # at most this many rows per columnar journal row (bounds its JSON)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$hex": bytes(value).hex().upper()}
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
        if len(obj) == 1:
            if "$hex" in obj:
                return bytes.fromhex(obj["$hex"])
            if "$b64" in obj:
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

    def __init__(self, conn: sqlite3.Connection, *, operator: str, run_id: int | None,
                 before_commit: Callable[["ChangesetWriter"], None] | None = None) -> None:
        if not operator:
            raise ValueError("the changeset writer needs the operator's login name")
        self.conn = conn
        # called on a clean exit, inside the transaction, just before COMMIT: what must commit
        # with the data or not at all (a run's outcome: RunContext.writer); raising rolls back
        self.before_commit = before_commit
        self.committed = False
        self.operator = operator
        self.run_id = run_id
        self.ts = utc_now()
        self._open = False
        self._pk_cache: dict[str, tuple[str, ...]] = {}
        self._col_cache: dict[str, tuple[str, ...]] = {}
        self._dep_cache: dict[str, list[tuple[str, str, str, str]]] | None = None
        self.counts: dict[str, int] = {"insert": 0, "update": 0, "delete": 0}

    # -- transaction -----------------------------------------------------------
    def __enter__(self) -> "ChangesetWriter":
        begin_immediate(self.conn)
        self._open = True
        self.ts = utc_now()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._open = False
        if exc_type is None:
            try:
                if self.before_commit is not None:
                    self.before_commit(self)
                self.conn.execute("COMMIT")
                self.committed = True
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
        key: Key = cur.lastrowid if len(pk) == 1 and pk[0] not in row else self._key_of(table, row)
        self._journal([(table, self._key_text(table, key), "insert", None, None)])
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
            old = {c: before[c] for c in diff}
            self._journal([(table, self._key_text(table, key), "update", encode_image(old), encode_image(diff))])
            self.counts["update"] += 1
        return before

    def delete(self, table: str, key: Key) -> dict[str, Any] | None:
        """Delete one row; returns its before-image (None if it was not there)."""
        self._check()
        before = self.fetch(table, key)
        if before is None:
            return None
        self._cascade(table, self._where(table), self._key_params(key))
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
        holds the write lock, so nobody else can take them). "full" journals
        every row's key; "range" records the whole load as one 'insert_range' row (for loads
        into fresh ids, such as building a demo district). Returns the number
        of rows inserted.
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
        first_rowid = self._max_rowid(table) + 1
        total = 0
        cols: list[str] | None = None
        getter: Callable[[Row], Any] | None = None
        add_id = False
        sql = ""
        batch: list[tuple] = []
        batch_keys: list[Any] = []

        def flush() -> None:
            if not batch:
                return
            before_rowid = self._max_rowid(table) if journal == "full" and not int_key else 0
            self.conn.executemany(sql, batch)
            if journal == "full":
                if int_key:
                    self.conn.execute(
                        "INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op)"
                        " SELECT ?, ?, ?, ?, CAST(value AS TEXT), 'insert' FROM json_each(?)",
                        (self.run_id, self.operator, self.ts, table, json.dumps(batch_keys)),
                    )
                else:  # rowid tables take consecutive rowids while we hold the lock
                    self._journal_select(table, "insert", before=False, after=False,
                                         where="rowid > ?", params=(before_rowid,))
            batch.clear()
            batch_keys.clear()

        for row in rows:
            if cols is None:
                given = [c for c in row if not (int_key and c == pk[0] and row[c] is None)]
                add_id = int_key and pk[0] not in given
                cols = ([pk[0]] if add_id else []) + given
                getter = itemgetter(*given) if len(given) > 1 else (lambda r, c=given[0]: (r[c],))
                sql = (
                    f"INSERT INTO {_ident(table)} ({', '.join(map(_ident, cols))})"
                    f" VALUES ({', '.join('?' * len(cols))})"
                )
                width = len(row)
            elif len(row) != width:
                raise ValueError(f"insert_many into {table}: rows must all have the same columns")
            values = getter(row)
            if add_id:
                values = (next_id, *values)
                batch_keys.append(next_id)
                next_id += 1
            elif int_key:
                key = row[pk[0]]
                if key is None:
                    raise ValueError(f"insert_many into {table}: give every row an id, or none")
                next_id = max(next_id, key + 1)
                batch_keys.append(key)
            batch.append(values)
            total += 1
            if len(batch) >= _BATCH:
                flush()
        flush()
        if journal == "range" and total:
            if int_key:
                self._journal([(table, f"{first_id}..{next_id - 1}", "insert_range", None, None)])
            else:
                self._journal([(table, f"rowid {first_rowid}..{self._max_rowid(table)}",
                                "insert_range", None, None)])
        self.counts["insert"] += total
        return total

    def insert_values(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[tuple],
        *,
        wrap: Mapping[str, str] | None = None,
        constants: Mapping[str, str | int | float | None] | None = None,
    ) -> int:
        """Insert value tuples (in `columns` order) into an integer-keyed table under fresh
        consecutive ids, journalled as one 'insert_range' row; returns the first id.

        The fast path of a bulk load: no dict per row, one `executemany`. `wrap` puts a
        column's placeholder inside an SQL expression (`{"barcode": "nullif(?, '')"}`);
        `constants` are columns with one value for every row, written into the statement."""
        self._check()
        pk = self.primary_key(table)
        if not (len(pk) == 1 and self._is_integer_pk(table, pk[0])):
            raise ValueError(f"insert_values into {table}: needs an integer primary key")
        first_id = self.conn.execute(
            f"SELECT coalesce(max({_ident(pk[0])}), 0) + 1 FROM {_ident(table)}").fetchone()[0]
        if not rows:
            return first_id
        wrap = wrap or {}
        constants = constants or {}
        # with no id given SQLite takes max(id) + 1 for each row: consecutive, as we hold the lock
        names = [*columns, *constants]
        values = [wrap.get(c, "?") for c in columns] + [_sql_literal(v) for v in constants.values()]
        self.conn.executemany(
            f"INSERT INTO {_ident(table)} ({', '.join(map(_ident, names))}) VALUES ({', '.join(values)})", rows)
        last_id = first_id + len(rows) - 1
        got = self.conn.execute(f"SELECT max({_ident(pk[0])}) FROM {_ident(table)}").fetchone()[0]
        if got != last_id:   # a trigger or an explicit id in `wrap`: the range would be wrong
            raise RuntimeError(f"insert_values into {table}: expected ids {first_id}..{last_id}, max is {got}")
        self._journal([(table, f"{first_id}..{last_id}", "insert_range", None, None)])
        self.counts["insert"] += len(rows)
        return first_id

    def update_many(self, table: str, items: Iterable[tuple[Key, Row]]) -> int:
        """Apply (key, changes) pairs; returns how many rows actually changed.

        Rows whose values would not change are neither written nor journalled.
        For integer-keyed tables the changes go to a temporary table and three
        set-based statements journal the before-images, the written values and
        apply them; other tables take the row-by-row path.
        """
        self._check()
        pk = self.primary_key(table)
        if not (len(pk) == 1 and self._is_integer_pk(table, pk[0])):
            changed = sum(1 for key, changes in items if self._update_one(table, key, changes))
            return changed
        changed = 0
        groups: dict[tuple[str, ...], dict[Any, tuple]] = {}
        pending = 0
        for key, changes in items:
            if not changes:
                continue
            cols = tuple(changes)
            # a key changed twice with the same columns: the last change wins, as it would one by one
            groups.setdefault(cols, {})[key] = (key, *changes.values())
            pending += 1
            if pending >= 50_000:
                changed += self._flush_updates(table, pk[0], groups)
                pending = 0
        changed += self._flush_updates(table, pk[0], groups)
        self.counts["update"] += changed
        return changed

    def stamp(self, table: str, column: str, value: Any, keys: Sequence[int]) -> int:
        """Set one column to one value on many integer-keyed rows (an import's "last seen"
        stamp on every patron it read). Journalled compactly: one 'update' row per distinct
        old value, whose `row_key` is a scope `{"<key column>": [[first, last], ...]}` (runs of
        consecutive keys), `before` `{column: old}` and `after` `{column: value}`; undo sets the
        column back to `before` on every key of the scope. Rows already holding `value` are
        neither written nor journalled. Returns the rows changed."""
        self._check()
        if not keys:
            return 0
        pk = self.primary_key(table)
        if not (len(pk) == 1 and self._is_integer_pk(table, pk[0])):
            raise TypeError(f"stamp needs an integer-keyed table; {table} is keyed on {pk}")
        if column not in self.columns(table):
            raise KeyError(f"{table} has no column {column!r}")
        key, col, tab = _ident(pk[0]), _ident(column), _ident(table)
        conn = self.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _cw_stamp (k INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM temp._cw_stamp")
        conn.execute("INSERT OR IGNORE INTO temp._cw_stamp SELECT value FROM json_each(?)", (json.dumps(list(keys)),))
        conn.execute(
            "WITH s AS (SELECT c.k, t." + col + " AS old FROM temp._cw_stamp c CROSS JOIN " + tab + " t"
            " ON t." + key + " = c.k WHERE t." + col + " IS NOT ?),"
            " g AS (SELECT old, k, k - row_number() OVER (PARTITION BY old ORDER BY k) AS grp FROM s),"
            " r AS (SELECT old, min(k) AS a, max(k) AS b FROM g GROUP BY old, grp)"
            " INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op, before, after)"
            " SELECT ?, ?, ?, ?, json_object(?, json_group_array(json_array(a, b))), 'update',"
            " json_object(?, " + _json_value("old") + "), json_object(?, ?) FROM r GROUP BY old",
            (value, self.run_id, self.operator, self.ts, table, pk[0], column, column, value),
        )
        cur = conn.execute(
            "UPDATE " + tab + " SET " + col + " = ? WHERE " + key + " IN (SELECT c.k FROM temp._cw_stamp c"
            " CROSS JOIN " + tab + " t ON t." + key + " = c.k WHERE t." + col + " IS NOT ?)",
            (value, value),
        )
        conn.execute("DELETE FROM temp._cw_stamp")
        self.counts["update"] += cur.rowcount
        return cur.rowcount

    def _update_one(self, table: str, key: Key, changes: Row) -> bool:
        before = self.fetch(table, key)
        if before is None:
            return False
        diff = {c: v for c, v in changes.items() if before.get(c) != v}
        if not diff:
            return False
        self._apply_update(table, key, diff)
        old = {c: before[c] for c in diff}
        self._journal([(table, self._key_text(table, key), "update", encode_image(old), encode_image(diff))])
        self.counts["update"] += 1
        return True

    def _flush_updates(self, table: str, key_col: str, groups: dict[tuple[str, ...], dict[Any, tuple]]) -> int:
        changed = 0
        for cols, rows in groups.items():
            for c in cols:
                if c not in self.columns(table):
                    raise KeyError(f"{table} has no column {c!r}")
            values = ", ".join(f"v{i}" for i in range(len(cols)))
            self.conn.execute("DROP TABLE IF EXISTS temp._cw_change")
            self.conn.execute(f"CREATE TEMP TABLE _cw_change (k INTEGER PRIMARY KEY, {values})")
            self.conn.executemany(
                f"INSERT INTO temp._cw_change VALUES (?, {', '.join('?' * len(cols))})", rows.values()
            )
            differs = " OR ".join(f"t.{_ident(c)} IS NOT c.v{i}" for i, c in enumerate(cols))
            after = "json_object(" + ", ".join(
                f"'{c}', {_json_value(f'c.v{i}')}" for i, c in enumerate(cols)
            ) + ")"
            # old and new values of the change set's columns (a reader drops equal pairs)
            before = "json_object(" + ", ".join(
                f"'{c}', {_json_value(f't.{_ident(c)}')}" for c in cols
            ) + ")"
            cur = self.conn.execute(
                "INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op, before, after)"
                f" SELECT ?, ?, ?, ?, CAST(t.{_ident(key_col)} AS TEXT), 'update', {before},"
                f" {after} FROM temp._cw_change c CROSS JOIN {_ident(table)} t ON t.{_ident(key_col)} = c.k"
                f" WHERE {differs}",
                (self.run_id, self.operator, self.ts, table),
            )
            changed += cur.rowcount
            # driven by the change table (CROSS JOIN keeps it the outer loop): an
            # UPDATE ... FROM let SQLite scan the whole target table once per batch
            key = _ident(key_col)
            targets = ", ".join(_ident(c) for c in cols)
            self.conn.execute(
                f"UPDATE {_ident(table)} SET ({targets}) ="
                f" (SELECT {values} FROM temp._cw_change WHERE k = {_ident(table)}.{key})"
                f" WHERE {key} IN (SELECT c.k FROM temp._cw_change c CROSS JOIN {_ident(table)} t"
                f" ON t.{key} = c.k WHERE {differs})"
            )
            self.conn.execute("DROP TABLE temp._cw_change")
        groups.clear()
        return changed

    def delete_many(self, table: str, keys: Iterable[Key]) -> int:
        """Delete rows by key, journalling each before-image. Returns rows deleted."""
        self._check()
        pk = self.primary_key(table)
        if not (len(pk) == 1 and self._is_integer_pk(table, pk[0])):
            return sum(1 for key in keys if self.delete(table, key) is not None)
        deleted = 0
        pending: list[Key] = []
        col = _ident(pk[0])

        def flush() -> None:
            nonlocal deleted
            where = f"{col} IN (SELECT value FROM json_each(?))"
            params = (json.dumps(pending),)
            self._cascade(table, where, params)
            deleted += self._journal_select(table, "delete", before=True, after=False,
                                            where=where, params=params)
            self.conn.execute(f"DELETE FROM {_ident(table)} WHERE {where}", params)
            pending.clear()

        for key in keys:
            pending.append(key)
            if len(pending) >= _BATCH:
                flush()
        if pending:
            flush()
        self.counts["delete"] += deleted
        return deleted

    # -- scoped bulk writes (see the module doc) -------------------------------------------
    def _scope_sql(self, table: str, scope: Mapping[str, Any]) -> tuple[str, str, tuple]:
        """(row_key, WHERE condition, its params) of a scope {column: value}."""
        if not scope:
            raise ValueError(f"a scoped write on {table} needs a scope (column -> value)")
        cols = self.columns(table)
        for c in scope:
            if c not in cols:
                raise KeyError(f"{table} has no column {c!r}")
        cond = " AND ".join(f"{_ident(c)} = ?" for c in scope)
        key = json.dumps(dict(scope), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return key, cond, tuple(scope.values())

    def insert_select(
        self,
        table: str,
        columns: Sequence[str],
        select_sql: str,
        params: Sequence[Any] = (),
        *,
        scope: Mapping[str, Any],
    ) -> int:
        """`INSERT INTO table (columns) <select_sql>` journalled as one 'insert_range' row.

        `select_sql` is a SELECT built by code (never user text) with `?`
        placeholders for `params`. Every inserted row must lie in `scope`, and
        the scope must be empty before: otherwise ValueError, and the
        writer's transaction rolls back when it leaves the `with`. Returns the
        number of rows inserted; nothing is journalled when it is 0.
        """
        self._check()
        key, cond, scope_params = self._scope_sql(table, scope)
        known = self.columns(table)
        for c in columns:
            if c not in known:
                raise KeyError(f"{table} has no column {c!r}")
        quoted = _ident(table)
        if self.conn.execute(f"SELECT 1 FROM {quoted} WHERE {cond} LIMIT 1", scope_params).fetchone():
            raise ValueError(f"insert_select into {table}: scope {key} already holds rows; delete them first")
        cur = self.conn.execute(
            f"INSERT INTO {quoted} ({', '.join(map(_ident, columns))}) {select_sql}", tuple(params)
        )
        inserted = cur.rowcount
        in_scope = self.conn.execute(f"SELECT count(*) FROM {quoted} WHERE {cond}", scope_params).fetchone()[0]
        if in_scope != inserted:
            raise ValueError(
                f"insert_select into {table}: {inserted - in_scope} inserted row(s) lie outside scope {key}"
            )
        if inserted:
            self._journal([(table, key, "insert_range", None, None)])
        self.counts["insert"] += inserted
        return inserted

    def delete_where(self, table: str, scope: Mapping[str, Any]) -> int:
        """Delete every row of `scope`, journalled as one 'delete' row with a
        columnar before-image (see the module doc). Returns rows deleted."""
        self._check()
        key, cond, scope_params = self._scope_sql(table, scope)
        rest = [c for c in self.columns(table) if c not in scope]
        if not rest:
            raise ValueError(f"delete_where on {table}: the scope names every column")
        rows = "json_object(" + ", ".join(
            f"'{c}', json_group_array({_json_value(_ident(c))})" for c in rest
        ) + ")"
        self.conn.execute(
            "INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op, before, after)"
            f" SELECT ?, ?, ?, ?, ?, 'delete', json_object('$where', json(?), '$rows', {rows}), NULL"
            f" FROM {_ident(table)} WHERE {cond} HAVING count(*) > 0",
            (self.run_id, self.operator, self.ts, table, key, key, *scope_params),
        )
        self._cascade(table, cond, scope_params)
        deleted = self.conn.execute(f"DELETE FROM {_ident(table)} WHERE {cond}", scope_params).rowcount
        self.counts["delete"] += deleted
        return deleted

    # -- what SQLite would cascade, done through the writer (see the module doc) ---------------
    def _dependants(self, table: str) -> list[tuple[str, str, str, str]]:
        """(child table, its column, the parent column, CASCADE | SET NULL) of every foreign key
        onto `table` that SQLite acts on by itself when a row of `table` is deleted."""
        if self._dep_cache is None:
            deps: dict[str, list[tuple[str, str, str, str]]] = {}
            for (name,) in self.conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                    " AND name <> 'change_journal'").fetchall():
                for fk in self.conn.execute(f"PRAGMA foreign_key_list({_ident(name)})").fetchall():
                    action = fk["on_delete"].upper()
                    if action in ("CASCADE", "SET NULL"):
                        deps.setdefault(fk["table"], []).append((name, fk["from"], fk["to"] or "", action))
            self._dep_cache = deps
        return self._dep_cache.get(table, [])

    def _cascade(self, table: str, where: str, params: tuple) -> None:
        """Before the rows of `table` matching `where` are deleted: delete (CASCADE) or clear
        (SET NULL) the rows that reference them, through the writer, so the journal holds them."""
        for child, col, to, action in self._dependants(table):
            to = to or self.primary_key(table)[0]
            rows = self.conn.execute(
                f"SELECT * FROM {_ident(child)} WHERE {_ident(col)} IN"
                f" (SELECT {_ident(to)} FROM {_ident(table)} WHERE {where})", params).fetchall()
            if not rows:
                continue
            keys = [self._key_of(child, dict(r)) for r in rows]
            if action == "CASCADE":
                self.delete_many(child, keys)
            else:
                self.update_many(child, [(k, {col: None}) for k in keys])

    def inserted_image(self, table: str, key: Key, journal_id: int) -> dict[str, Any] | None:
        """The row as the insert journalled at `journal_id` left it (see module doc)."""
        return inserted_image(self.conn, table, self._key_text(table, key), journal_id)

    # -- images built by SQLite ----------------------------------------------------------
    def _image_sql(self, table: str, alias: str) -> str:
        """`json_object(...)` of every column of `alias` (BLOBs as {"$hex": ...})."""
        return "json_object(" + ", ".join(
            f"'{c}', {_json_value(f'{alias}.{_ident(c)}')}" for c in self.columns(table)
        ) + ")"

    def _key_sql(self, table: str, alias: str) -> str:
        pk = self.primary_key(table)
        if len(pk) == 1:
            return f"CAST({alias}.{_ident(pk[0])} AS TEXT)"
        return "json_array(" + ", ".join(f"{alias}.{_ident(c)}" for c in pk) + ")"

    def _journal_select(self, table: str, op: str, *, before: bool, after: bool, where: str,
                        params: tuple) -> int:
        image = self._image_sql(table, "t")
        cur = self.conn.execute(
            "INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op, before, after)"
            f" SELECT ?, ?, ?, ?, {self._key_sql(table, 't')}, ?,"
            f" {image if before else 'NULL'}, {image if after else 'NULL'}"
            f" FROM {_ident(table)} AS t WHERE {where}",
            (self.run_id, self.operator, self.ts, table, op, *params),
        )
        return cur.rowcount

    def _max_rowid(self, table: str) -> int:
        return self.conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {_ident(table)}").fetchone()[0]

    def _is_integer_pk(self, table: str, col: str) -> bool:
        for r in self.conn.execute(f"PRAGMA table_info({_ident(table)})"):
            if r["name"] == col:
                return r["type"].upper() == "INTEGER"
        return False

    # -- set-based update over a key table (batch profile updates) ---------------------------
    def update_where(
        self,
        table: str,
        changes: Mapping[str, Any],
        *,
        keys: str,
        values: Mapping[str, str] | None = None,
    ) -> int:
        """Set columns on every row of an integer-keyed `table` whose key is in the temporary
        table `keys` (column `k`, its primary key), set-based.

        `changes` gives one value for every row (bound as parameters); `values` maps a column
        to a column of `keys` holding each row's own value (`{"next_service_date": "nsd"}`).
        Rows whose values would not change are neither written nor journalled. Journalled,
        below `COLUMNAR_MIN` changed rows, as `update_many` journals: one 'update' row per row
        that changes, whose `before` and `after` hold the change's columns, old and new values
        (a reader drops equal pairs); from `COLUMNAR_MIN` on, column-wise: one 'update' row
        per `COLUMNAR_SLICE` changed rows (see the module doc), built by one
        `INSERT ... SELECT` with aggregates per slice. Then one UPDATE. Returns the rows changed."""
        self._check()
        values = dict(values or {})
        pk = self.primary_key(table)
        if not (len(pk) == 1 and self._is_integer_pk(table, pk[0])):
            raise TypeError(f"update_where needs an integer-keyed table; {table} is keyed on {pk}")
        cols = [*changes, *values]
        if not cols:
            return 0
        if set(changes) & set(values):
            raise ValueError("update_where: a column is given both a value and a key-table column")
        if pk[0] in cols:
            raise ValueError(f"update_where: the key column {pk[0]} cannot be changed")
        for c in cols:
            if c not in self.columns(table):
                raise KeyError(f"{table} has no column {c!r}")
        tab, key, src = _ident(table), _ident(pk[0]), "temp." + _ident(keys)
        # numbered parameters: ?1..?4 the journal's run/operator/ts/table, ?5.. the values
        exprs = [f"?{5 + i}" for i in range(len(changes))] + [f"c.{_ident(v)}" for v in values.values()]
        differs = " OR ".join(f"t.{_ident(c)} IS NOT {e}" for c, e in zip(cols, exprs))
        params = (self.run_id, self.operator, self.ts, table, *changes.values())
        joined = f"FROM {src} c CROSS JOIN {tab} t ON t.{key} = c.k WHERE ({differs})"
        # enough changed rows for the columnar form? (stops at the threshold)
        probe = self.conn.execute(
            f"SELECT count(*) FROM (SELECT 1 {joined} LIMIT {int(COLUMNAR_MIN)})", params if changes else ()
        ).fetchone()[0]
        if not probe:
            return 0
        if probe >= COLUMNAR_MIN:
            changed = self._journal_columnar(table, pk[0], cols, exprs, joined, params, dict(changes), values)
        else:
            changed = self._journal_per_row(table, key, cols, exprs, joined, params, dict(changes), values)
        if changed:
            sets = ", ".join(
                f"{_ident(c)} = {e}" if e.startswith("?")
                else f"{_ident(c)} = (SELECT {e} FROM {src} c WHERE c.k = {tab}.{key})"
                for c, e in zip(cols, exprs))
            # ?1..?4 are not used here; numbered parameters still bind by position
            self.conn.execute(
                f"UPDATE {tab} SET {sets} WHERE {key} IN (SELECT c.k {joined})",
                params if changes else (),
            )
        self.counts["update"] += changed
        return changed

    def _journal_per_row(self, table: str, key: str, cols: list[str], exprs: list[str], joined: str,
                         params: tuple, changes: dict[str, Any], values: dict[str, str]) -> int:
        """update_where's small form: one 'update' journal row per changed row."""
        # the same `after` for every row when no value comes from the key table: one text
        after = (f"?{5 + len(changes)}" if not values else
                 "json_object(" + ", ".join(f"'{c}', {_json_value(e)}" for c, e in zip(cols, exprs)) + ")")
        journal_params = params + ((encode_image(changes),) if not values else ())

        def journal(image: Callable[[str], str]) -> int:
            before = "json_object(" + ", ".join(f"'{c}', {image(f't.{_ident(c)}')}" for c in cols) + ")"
            return self.conn.execute(
                "INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op, before, after)"
                f" SELECT ?1, ?2, ?3, ?4, CAST(t.{key} AS TEXT), 'update', {before}, {after} {joined}",
                journal_params,
            ).rowcount

        try:   # plain values first; a BLOB (json_object refuses it; the statement did nothing) as {"$hex": ...}
            return journal(lambda col: col)
        except sqlite3.OperationalError as exc:
            if "BLOB" not in str(exc):
                raise
            return journal(_json_value)

    def _journal_columnar(self, table: str, key_col: str, cols: list[str], exprs: list[str], joined: str,
                          params: tuple, changes: dict[str, Any], values: dict[str, str]) -> int:
        """update_where's columnar form (see the module doc): one 'update' journal row per slice of
        `COLUMNAR_SLICE` changed rows, in key order, each one `INSERT ... SELECT` with aggregates."""
        n_const = len(changes)
        after_at, last_at = 5 + n_const, 6 + n_const    # ?after (the one-for-all values), ?last key
        per_row = [(c, e) for c, e in zip(cols, exprs) if not e.startswith("?")]
        inner_cols = ", ".join([f"t.{_ident(c)} AS b{i}" for i, c in enumerate(cols)]
                               + [f"{e} AS a{i}" for i, (_c, e) in enumerate(per_row)])
        inner = (f"SELECT c.k AS k, {inner_cols} {joined} AND c.k > ?{last_at}"
                 f" ORDER BY c.k LIMIT {int(COLUMNAR_SLICE)}")
        row_key = (f"json_object('$keys', '{key_col}', '$span', json_array(min(k), max(k)),"
                   " '$n', count(*))")
        statement_params = (*params, encode_image(changes))

        def statement(image: Callable[[str], str]) -> str:
            before = ("json_object('$rows', json_object("
                      + ", ".join([f"'{key_col}', json_group_array(k)"]
                                  + [f"'{c}', json_group_array({image(f'b{i}')})" for i, c in enumerate(cols)])
                      + "))")
            after = f"?{after_at}"
            if per_row:
                after = (f"json_insert(?{after_at}, '$.\"$rows\"', json_object("
                         + ", ".join(f"'{c}', json_group_array({image(f'a{i}')})"
                                     for i, (c, _e) in enumerate(per_row)) + "))")
            return ("INSERT INTO change_journal (run_id, operator, ts, table_name, row_key, op, before, after)"
                    f" SELECT ?1, ?2, ?3, ?4, {row_key}, 'update', {before}, {after}"
                    f" FROM ({inner}) HAVING count(*) > 0"
                    " RETURNING json_extract(row_key, '$.\"$span\"[1]'), json_extract(row_key, '$.\"$n\"')")

        plain, wrapped = statement(lambda col: col), statement(_json_value)
        changed, last = 0, -(1 << 63)
        while True:
            try:   # plain values first; a BLOB (json_group_array refuses it; nothing written) as {"$hex": ...}
                got = self.conn.execute(plain, (*statement_params, last)).fetchall()
            except sqlite3.OperationalError as exc:
                if "BLOB" not in str(exc):
                    raise
                got = self.conn.execute(wrapped, (*statement_params, last)).fetchall()
            if not got:
                break
            last, n = got[0]
            changed += n
            if n < COLUMNAR_SLICE:
                break
        return changed

def inserted_image(conn: sqlite3.Connection, table: str, row_key: str, journal_id: int) -> dict[str, Any] | None:
    """The row an insert created (see the module doc): the row as it is now, or as
    a later delete journalled it, with every later update's before-values laid back."""
    later = conn.execute(
        "SELECT op, before FROM change_journal WHERE table_name = ? AND row_key = ? AND id > ? ORDER BY id",
        (table, row_key, journal_id),
    ).fetchall()
    updates = []
    base: dict[str, Any] | None = None
    for entry in later:
        if entry["op"] == "update":
            updates.append(decode_image(entry["before"]) or {})
        elif entry["op"] == "delete":
            base = decode_image(entry["before"])
            break
        else:
            break
    if base is None:
        pk = [r["name"] for r in conn.execute(f"PRAGMA table_info({_ident(table)})") if r["pk"]]
        keys = json.loads(row_key) if len(pk) > 1 else [row_key]
        row = conn.execute(
            f"SELECT * FROM {_ident(table)} WHERE " + " AND ".join(f"{_ident(c)} = ?" for c in pk), keys
        ).fetchone()
        if row is None:
            return None
        base = dict(row)
    for old in reversed(updates):
        base.update(old)
    return base


def _json_value(expr: str) -> str:
    """A column value as JSON: BLOBs (which JSON cannot hold) as {"$hex": ...}."""
    return f"CASE WHEN typeof({expr}) = 'blob' THEN json_object('$hex', hex({expr})) ELSE {expr} END"


def _sql_literal(value: str | int | float | None) -> str:
    """A constant written into a statement (insert_values): NULL, a number, or a quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"not an SQL constant: {value!r}")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("an SQL constant cannot hold a NUL")
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _ident(name: str) -> str:
    """Quote an identifier (table and column names come from code, never users)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not an identifier: {name!r}")
    return f'"{name}"'
