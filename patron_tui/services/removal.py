"""Deleting patrons consistently: every dependant row goes first, through the writer.

A patron's notes, holds, history, per-medium profiles (with their subjects and service
queue), query-set memberships and (where the caller allows it) charges and checkouts are
deleted with it; reviews pass to the Unknown Patron (they belong to the catalog); import
conflicts that name the patron forget it. Every row is journalled by the changeset writer, so
an undo can put the patron back whole. The caller decides who may be deleted; this module
only refuses a patron with outstanding transactions (checkouts, or charges with a balance)
unless `with_transactions=True`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from patron_tui.store.changeset import ChangesetWriter


class RemovalRefused(ValueError):
    """A patron cannot be deleted as asked (system patron, or outstanding transactions)."""


def _ids_json(ids: Iterable[int]) -> str:
    return json.dumps(list(ids))


def outstanding(conn, ids: Iterable[int]) -> set[int]:
    """The patrons among `ids` with checkouts or an unpaid charge."""
    js = _ids_json(ids)
    rows = conn.execute(
        "SELECT patron_id FROM checkouts WHERE patron_id IN (SELECT value FROM json_each(?))"
        " UNION SELECT patron_id FROM charges WHERE balance_cents > 0 AND forgiven_at IS NULL"
        " AND patron_id IN (SELECT value FROM json_each(?))", (js, js))
    return {r[0] for r in rows}


def delete_patrons(writer: ChangesetWriter, ids: Iterable[int], *, with_transactions: bool = False) -> int:
    """Delete these patrons and their dependants; returns the patrons deleted."""
    ids = sorted(set(ids))
    if not ids:
        return 0
    conn = writer.conn
    js = _ids_json(ids)
    system = [r[0] for r in conn.execute(
        "SELECT id FROM patrons WHERE is_system = 1 AND id IN (SELECT value FROM json_each(?))", (js,))]
    if system:
        raise RemovalRefused(f"patron {system[0]} is a system patron (the Unknown Patron) and is never deleted")
    if not with_transactions:
        busy = outstanding(conn, ids)
        if busy:
            raise RemovalRefused(f"{len(busy)} of the patrons have outstanding transactions "
                                 f"(checkouts or unpaid charges), e.g. patron {min(busy)}")

    def keys(sql: str) -> list[Any]:
        return [r[0] if len(r) == 1 else tuple(r) for r in conn.execute(sql, (js,))]

    where = "patron_id IN (SELECT value FROM json_each(?))"
    profiles = f"SELECT id FROM patron_profiles WHERE {where}"
    writer.delete_many("service_queue", keys(f"SELECT id FROM service_queue WHERE profile_id IN ({profiles})"))
    writer.delete_many("profile_subjects",
                       keys(f"SELECT profile_id, subject FROM profile_subjects WHERE profile_id IN ({profiles})"))
    writer.delete_many("patron_profiles", keys(profiles))
    for table in ("notes", "holds", "patron_history", "charges", "checkouts"):
        writer.delete_many(table, keys(f"SELECT id FROM {table} WHERE {where}"))
    writer.delete_many("query_set_members", keys(f"SELECT set_id, patron_id FROM query_set_members WHERE {where}"))
    reviews = keys(f"SELECT id FROM reviews WHERE {where}")
    if reviews:
        unknown = conn.execute("SELECT id FROM patrons WHERE is_system = 1 ORDER BY id LIMIT 1").fetchone()
        if unknown is None:
            raise RemovalRefused("the district has no Unknown Patron to take the deleted patrons' reviews")
        writer.update_many("reviews", [(rid, {"patron_id": unknown[0]}) for rid in reviews])
    for col in ("holder_id", "target_id"):
        writer.update_many("import_conflicts", [
            (cid, {col: None}) for cid in keys(f"SELECT id FROM import_conflicts WHERE {col} IN "
                                               "(SELECT value FROM json_each(?))")])
    return writer.delete_many("patrons", ids)


__all__ = ["RemovalRefused", "delete_patrons", "outstanding"]
