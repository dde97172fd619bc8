"""The patron store: one SQLite database, opened through `Store`.

`Store(path).connect()` gives a connection with the project's pragmas and an
up-to-date schema; `Store.create(path)` makes a new database with its
reference tables and its first operator (a district administrator).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from patron_tui.store import defaults
from patron_tui.store.changeset import ChangesetWriter, utc_now
from patron_tui.store.db import as_database, connect, write_transaction
from patron_tui.store.identity import current_login
from patron_tui.store.schema import SCHEMA_VERSION, SchemaTooNew, migrate
from patron_tui.store.db import DatabaseBusy
from patron_tui.store.trouble import StoreTrouble, explain

__all__ = [
    "ChangesetWriter",
    "Store",
    "StoreError",
    "StoreTrouble",
    "as_database",
    "connect",
    "current_login",
    "utc_now",
    "write_transaction",
    "SCHEMA_VERSION",
]


class StoreError(RuntimeError):
    pass


class Store:
    """A patron database on disk. Cheap to create; hands out connections."""

    def __init__(self, path: str | os.PathLike[str], *, operator: str | None = None) -> None:
        self.path = Path(path)
        self.operator = operator or current_login()

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def connect(self) -> sqlite3.Connection:
        """A new connection (one per thread), schema migrated."""
        if not self.exists():
            raise StoreError(f"{self.path}: no patron database here (create one with `patron-tui demo`)")
        conn = None
        try:
            conn = connect(self.path)
            migrate(conn)
        except (sqlite3.DatabaseError, SchemaTooNew, DatabaseBusy) as exc:
            if conn is not None:
                conn.close()
            # a bad day (busy, read-only, full, damaged, newer) is its sentence (store/trouble.py)
            trouble = explain(exc, self.path)
            if trouble is not None:
                raise trouble from None
            raise StoreError(f"{self.path}: not a usable patron database ({exc})") from exc
        return conn

    def writer(self, conn: sqlite3.Connection, run_id: int | None) -> ChangesetWriter:
        return ChangesetWriter(conn, operator=self.operator, run_id=run_id)

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, operator: str | None = None) -> "Store":
        """Create a new, empty district: schema, reference tables, first operator."""
        store = cls(path, operator=operator)
        if store.exists():
            raise StoreError(f"{store.path}: a database already exists here")
        store.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(store.path)
        try:
            migrate(conn)
            seed_reference_tables(conn, store.operator)
        finally:
            conn.close()
        return store


def seed_reference_tables(conn: sqlite3.Connection, operator: str) -> None:
    with ChangesetWriter(conn, operator=operator, run_id=None) as w:
        w.insert("sites", defaults.UNION_SITE)
        for pos, (code, name) in enumerate(defaults.GRADES):
            w.insert("grades", {"code": code, "name": name, "position": pos,
                                "is_last": int(code == defaults.GRADES[-1][0])})
        for code, name, account_days, loan_days in defaults.POLICIES:
            w.insert("policies", {"code": code, "name": name, "account_days": account_days,
                                  "loan_days": loan_days})
        for code, name, level in defaults.SECURITY_GROUPS:
            w.insert("security_groups", {"code": code, "name": name, "security_level": level})
        for table, rows in (
            ("patron_types", defaults.PATRON_TYPES),
            ("access_levels", defaults.ACCESS_LEVELS),
            ("personas", defaults.PERSONAS),
            ("statuses", defaults.STATUSES),
            ("media", defaults.MEDIA),
            ("subjects", defaults.SUBJECTS),
        ):
            for code, name in rows:
                w.insert(table, {"code": code, "name": name})
        for key, value in defaults.SETTINGS.items():
            w.insert("settings", {"key": key, "value": value})
        now = utc_now()
        w.insert("patrons", {**defaults.UNKNOWN_PATRON, "created_at": now, "updated_at": now,
                             "inactive_since": now})
        w.insert("operators", {
            "login_name": operator, "display_name": operator, "security_level": 0,
            "may_manage_district_patrons": 1, "may_use_batch_tools": 1,
            "may_reset_passwords": 1, "created_at": now,
        })


def get_settings(conn: sqlite3.Connection) -> dict[str, str]:
    return {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM settings")}
