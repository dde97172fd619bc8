"""Query sets: a search statement kept under a name, and what a run acts on.

A set is *live* or *frozen*:

- live: the statement is compiled again every time the set is opened, so the
  set follows the data (a patron who moves to grade 5 joins "Grade 5");
- frozen: `freeze_set` stores the exact patron ids matching at that moment in
  `query_set_members` and sets `frozen_at`; from then on the set is that list,
  whatever the data does, so a batch run over it cannot drift. Freezing
  again replaces the list; `unfreeze_set` makes the set live again.

A set always keeps its statement, and everything that acts on a set shows it
(`Selection.describe()`). Replacing the statement of a frozen set (`save_set`
with `replace=True` and a different statement) makes the set live again:
the stored list no longer answers to the statement the set shows.

Names are trimmed, 1 to 80 characters, without control characters, and
unique regardless of case ("Grade 5" and "grade 5" cannot both exist).
`get_set("name")` looks a set up by name (exactly, then ignoring case),
`get_set(5)` by id.

Every write goes through the changeset writer. The members of a frozen set
are written and removed in bulk (`insert_select` / `delete_where`), one journal
row each, so freezing a million patrons is one statement, not a million.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel

from patron_tui.services.patrons import count_patrons
from patron_tui.services.queries import compile_statement
from patron_tui.store import ChangesetWriter, utc_now

__all__ = [
    "NAME_MAX",
    "QuerySet",
    "QuerySetError",
    "QuerySetExists",
    "QuerySetNotFound",
    "BadSetName",
    "Selection",
    "save_set",
    "list_sets",
    "get_set",
    "delete_set",
    "rename_set",
    "freeze_set",
    "unfreeze_set",
    "set_filter",
    "resolve",
    "check_name",
]

NAME_MAX = 80

#: a frozen list up to this size filters as `id IN (list)` (the planner fetches the few
#: members and sorts them); a bigger one as a per-row EXISTS probe, so a page of a
#: million-patron set walks the sort's index instead of sorting the whole list per page
SMALL_LIST = 20_000
_MEMBERS_IN = "patrons.id IN (SELECT patron_id FROM query_set_members WHERE set_id = ?)"
_MEMBERS_EXIST = (
    "EXISTS (SELECT 1 FROM query_set_members m WHERE m.set_id = ? AND m.patron_id = patrons.id)"
)


class QuerySetError(ValueError):
    """A query-set operation that cannot be done (the message says why)."""


class QuerySetNotFound(QuerySetError, LookupError):
    pass


class QuerySetExists(QuerySetError):
    pass


class BadSetName(QuerySetError):
    pass


class QuerySet(BaseModel):
    """A saved query set as stored."""

    id: int
    name: str
    statement: str
    #: when the member list was taken (UTC); None for a live set
    frozen_at: str | None = None
    created_by: str
    created_at: str
    updated_at: str
    #: how many patron ids the frozen list holds; None for a live set
    member_count: int | None = None

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


_SELECT = (
    "SELECT s.id, s.name, s.statement, s.frozen_at, s.created_by, s.created_at, s.updated_at,"
    " CASE WHEN s.frozen_at IS NULL THEN NULL ELSE"
    " (SELECT count(*) FROM query_set_members m WHERE m.set_id = s.id) END AS member_count"
    " FROM query_sets s"
)


def _model(row: sqlite3.Row) -> QuerySet:
    return QuerySet(**dict(row))


def check_name(name: str) -> str:
    """The trimmed name, or BadSetName saying what is wrong with it."""
    if not isinstance(name, str):
        raise BadSetName("a query set name must be text")
    name = name.strip()
    if not name:
        raise BadSetName("a query set needs a name")
    if len(name) > NAME_MAX:
        raise BadSetName(f"a query set name is at most {NAME_MAX} characters (this one has {len(name)})")
    bad = next((ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise BadSetName(f"a query set name cannot hold the control character U+{ord(bad):04X}")
    return name


def list_sets(conn: sqlite3.Connection) -> list[QuerySet]:
    """Every saved set, by name (ignoring case)."""
    return [_model(r) for r in conn.execute(f"{_SELECT} ORDER BY s.name COLLATE NOCASE, s.id")]


def _find(conn: sqlite3.Connection, name_or_id: str | int) -> QuerySet | None:
    if isinstance(name_or_id, bool):
        raise TypeError("a query set is named by its name or its id")
    if isinstance(name_or_id, int):
        row = conn.execute(f"{_SELECT} WHERE s.id = ?", (name_or_id,)).fetchone()
        return _model(row) if row else None
    name = name_or_id.strip()
    row = conn.execute(f"{_SELECT} WHERE s.name = ?", (name,)).fetchone()
    if row:
        return _model(row)
    folded = name.casefold()
    matches = [qs for qs in list_sets(conn) if qs.name.casefold() == folded]
    return matches[0] if len(matches) == 1 else None


def get_set(conn: sqlite3.Connection, name_or_id: str | int) -> QuerySet:
    """The set with this name (exactly, else ignoring case) or this id."""
    qs = _find(conn, name_or_id)
    if qs is None:
        what = f"id {name_or_id}" if isinstance(name_or_id, int) else repr(str(name_or_id).strip())
        raise QuerySetNotFound(f"no query set {what}")
    return qs


def _name_taken(conn: sqlite3.Connection, name: str, *, other_than: int | None = None) -> QuerySet | None:
    folded = name.casefold()
    for qs in list_sets(conn):
        if qs.name.casefold() == folded and qs.id != other_than:
            return qs
    return None


def save_set(
    conn: sqlite3.Connection,
    operator: str,
    name: str,
    statement: str,
    *,
    replace: bool = False,
    today: date | None = None,
) -> QuerySet:
    """Save `statement` as the set `name`; returns the saved set.

    The statement is compiled first: a bad one raises the compiler's
    StatementError and nothing is saved. A name already taken (ignoring
    case) raises QuerySetExists unless `replace`, which gives that set the
    new statement (a frozen set whose statement changes becomes live).
    """
    name = check_name(name)
    statement = statement.strip()
    compile_statement(statement, conn=conn, today=today)
    now = utc_now()
    with ChangesetWriter(conn, operator=operator, run_id=None) as w:
        # looked up under the write lock: nobody can take the name meanwhile
        existing = _name_taken(conn, name)
        if existing is not None and not replace:
            raise QuerySetExists(
                f"a query set named {existing.name!r} already exists; choose another name or replace it"
            )
        if existing is None:
            set_id = w.insert("query_sets", {
                "name": name, "statement": statement, "frozen_at": None,
                "created_by": operator, "created_at": now, "updated_at": now,
            })
        else:
            set_id = existing.id
            changes: dict[str, Any] = {"name": name, "statement": statement}
            if statement != existing.statement and existing.frozen:
                w.delete_where("query_set_members", {"set_id": set_id})
                changes["frozen_at"] = None
            if any(existing.model_dump()[k] != v for k, v in changes.items()):
                changes["updated_at"] = now
                w.update("query_sets", set_id, changes)
    return get_set(conn, set_id)


def delete_set(conn: sqlite3.Connection, operator: str, name_or_id: str | int) -> QuerySet:
    """Delete a set (and its frozen list); returns the set as it was."""
    qs = get_set(conn, name_or_id)
    with ChangesetWriter(conn, operator=operator, run_id=None) as w:
        # members first: the cascade would delete them unjournalled
        w.delete_where("query_set_members", {"set_id": qs.id})
        w.delete("query_sets", qs.id)
    return qs


def rename_set(conn: sqlite3.Connection, operator: str, name_or_id: str | int, new_name: str) -> QuerySet:
    """Give a set another name (a change of case only is allowed)."""
    qs = get_set(conn, name_or_id)
    new_name = check_name(new_name)
    with ChangesetWriter(conn, operator=operator, run_id=None) as w:
        taken = _name_taken(conn, new_name, other_than=qs.id)
        if taken is not None:
            raise QuerySetExists(f"a query set named {taken.name!r} already exists")
        if new_name != qs.name:
            w.update("query_sets", qs.id, {"name": new_name, "updated_at": utc_now()})
    return get_set(conn, qs.id)


def freeze_set(
    conn: sqlite3.Connection, operator: str, name_or_id: str | int, *, today: date | None = None
) -> QuerySet:
    """Store the patrons matching the set's statement now as its member list.

    Freezing a frozen set takes the list again (replacing the old one). The
    statement is compiled before the write lock is taken; the list is read
    and written inside one transaction, so it is one consistent moment.
    """
    qs = get_set(conn, name_or_id)
    compiled = compile_statement(qs.statement, conn=conn, today=today)
    now = utc_now()
    with ChangesetWriter(conn, operator=operator, run_id=None) as w:
        w.delete_where("query_set_members", {"set_id": qs.id})
        w.insert_select(
            "query_set_members", ("set_id", "patron_id"),
            f"SELECT ?, patrons.id FROM patrons WHERE patrons.is_system = 0 AND ({compiled.where})",
            (qs.id, *compiled.params),
            scope={"set_id": qs.id},
        )
        w.update("query_sets", qs.id, {"frozen_at": now, "updated_at": now})
    return get_set(conn, qs.id)


def unfreeze_set(conn: sqlite3.Connection, operator: str, name_or_id: str | int) -> QuerySet:
    """Make a frozen set live again (its member list is dropped)."""
    qs = get_set(conn, name_or_id)
    if qs.frozen:
        with ChangesetWriter(conn, operator=operator, run_id=None) as w:
            w.delete_where("query_set_members", {"set_id": qs.id})
            w.update("query_sets", qs.id, {"frozen_at": None, "updated_at": utc_now()})
    return get_set(conn, qs.id)


def set_filter(
    conn: sqlite3.Connection, qs: QuerySet, *, today: date | None = None
) -> tuple[str, tuple[Any, ...]]:
    """The `where`/`params` for the patron list reads (patrons.count_patrons, page, ...).

    Live: the compiled statement (StatementError if it no longer compiles);
    frozen: membership in the stored list (written one of two ways by the
    list's size, see SMALL_LIST; both mean the same).
    """
    if qs.frozen:
        small = qs.member_count is not None and qs.member_count <= SMALL_LIST
        return (_MEMBERS_IN if small else _MEMBERS_EXIST), (qs.id,)
    compiled = compile_statement(qs.statement, conn=conn, today=today)
    return compiled.where, tuple(compiled.params)


@dataclass(frozen=True)
class Selection:
    """What a run acts on: a statement, or a saved set, with its filter and count.

    `where`/`params` go to the list reads (and to exports); `statement` is
    what the operator is shown wherever the selection is acted on.
    """

    statement: str
    where: str
    params: tuple[Any, ...]
    count: int
    frozen: bool = False
    set_name: str | None = None
    set_id: int | None = None
    frozen_at: str | None = None

    def describe(self) -> str:
        """One line for headings, previews and run titles (plain text, not markup)."""
        shown = self.statement or "(all patrons)"
        noun = "patron" if self.count == 1 else "patrons"
        if self.set_name is None:
            return f"{shown} - {self.count} {noun}"
        state = f"frozen {self.frozen_at}" if self.frozen else "live"
        return f"set {self.set_name!r} ({state}): {shown} - {self.count} {noun}"


def resolve(
    conn: sqlite3.Connection,
    *,
    set_name: str | int | None = None,
    statement: str | None = None,
    today: date | None = None,
) -> Selection:
    """A Selection from a saved set (by name or id) or from a statement; give exactly one.

    Raises the compiler's StatementError for a bad statement and
    QuerySetNotFound for an unknown set.
    """
    if (set_name is None) == (statement is None):
        raise ValueError("resolve a selection from a set name or a statement, not both or neither")
    if statement is not None:
        compiled = compile_statement(statement, conn=conn, today=today)
        where, params = compiled.where, tuple(compiled.params)
        return Selection(statement=compiled.statement, where=where, params=params,
                         count=count_patrons(conn, where=where, params=params))
    qs = get_set(conn, set_name)
    where, params = set_filter(conn, qs, today=today)
    return Selection(statement=qs.statement, where=where, params=params,
                     count=count_patrons(conn, where=where, params=params),
                     frozen=qs.frozen, set_name=qs.name, set_id=qs.id, frozen_at=qs.frozen_at)
