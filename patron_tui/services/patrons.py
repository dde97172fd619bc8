"""Reading patrons for the Patrons section: the list, page by page, and one patron's details.

The list is read in pages ordered by an indexed sort key, so a district of a
million patrons pages as fast as one of a hundred:

- sequential paging is keyset paging: `page(after=<sort key of the last row
  seen>)` continues from that row with an index range search, never an OFFSET;
- `page_at(offset)` is for jumps (End, a scrollbar drag): OFFSET over the same
  index-ordered scan, counted from whichever end of the list is nearer.

Every sort orders by indexed columns ending with `id`, so the order is total
(no two rows tie) and needs no temporary sort:

    last_name  -> (last_name, first_name, id)  index patrons_name
    id         -> (id,)                         the primary key
    site       -> (site, id)                    index patrons_site
    status     -> (status, id)                  index patrons_status
    grade      -> (grade, id)                   index patrons_grade (grade codes as text)

Text sorts compare with SQLite's BINARY collation (the indexes' collation).

System patrons (`is_system = 1`, e.g. the Unknown Patron) are never listed.
Every read takes an optional `where` fragment with its `params`: a
parameterized condition built by code (the search-statement compiler), never
text typed by a user; it is ANDed with the system-patron filter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """A column of the patron list: its field, label and display widths (in cells).

    `min_width` is what the column keeps on an 80-column terminal (all twelve
    fit there), `width` what it grows to when there is room.
    """

    name: str
    label: str
    min_width: int
    width: int
    right: bool = False
    #: an identifier: when cut, keep its end (where barcodes and district IDs differ)
    keep_end: bool = False


#: the list columns, left to right
COLUMNS: tuple[Column, ...] = (
    Column("id", "ID", 7, 8, right=True),
    Column("barcode", "Barcode", 9, 14, keep_end=True),
    Column("district_id", "District ID", 5, 12, keep_end=True),
    Column("last_name", "Last name", 10, 20),
    Column("first_name", "First name", 7, 15),
    Column("nickname", "Nickname", 3, 12),
    Column("site", "Site", 4, 8),
    Column("grade", "Grade", 3, 5),
    Column("homeroom", "Homeroom", 4, 12),
    Column("status", "Status", 8, 11),
    Column("patron_type", "Type", 4, 10),
    Column("email", "Email", 3, 30),
)

#: allowed sorts: name -> (label, the ordering columns, ending with id). Every list
#: column sorts; the first five follow an index, the others sort the matching rows
#: (fine for a set, about a second a page over a whole million-patron district).
SORTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "last_name": ("last name", ("last_name", "first_name", "id")),
    "id": ("ID", ("id",)),
    "site": ("site", ("site", "id")),
    "status": ("status", ("status", "id")),
    "grade": ("grade", ("grade", "id")),
    "barcode": ("barcode", ("barcode", "id")),
    "district_id": ("district ID", ("district_id", "id")),
    "first_name": ("first name", ("first_name", "last_name", "id")),
    "nickname": ("nickname", ("nickname", "id")),
    "homeroom": ("homeroom", ("homeroom", "id")),
    "patron_type": ("type", ("patron_type", "id")),
    "email": ("email", ("email", "id")),
}
INDEXED_SORTS = frozenset({"last_name", "id", "site", "status", "grade"})

#: nullable columns sort as '' so that keyset comparisons never meet a NULL
_SORT_EXPR = {"barcode": "ifnull(barcode, '')", "district_id": "ifnull(district_id, '')"}

DEFAULT_SORT = "last_name"

_LIST_COLUMNS = ", ".join(c.name for c in COLUMNS)


class BadSort(ValueError):
    """A sort that is not in SORTS."""


class PatronNotFound(LookupError):
    """No (non-system) patron has this id."""


def sort_columns(sort: str) -> tuple[str, ...]:
    """The ordering columns of an allowed sort; anything else is refused."""
    try:
        return SORTS[sort][1]
    except (KeyError, TypeError):
        raise BadSort(f"cannot sort patrons by {sort!r}; choose one of {', '.join(SORTS)}") from None


def sort_key(row: dict[str, Any], sort: str) -> tuple[Any, ...]:
    """The keyset key of a listed row for `sort`: the values of its ordering columns."""
    return tuple(("" if row[c] is None else row[c]) if c in _SORT_EXPR else row[c]
                 for c in sort_columns(sort))


def _exprs(cols: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_SORT_EXPR.get(c, c) for c in cols)


def _filter(where: str | None, params: Sequence[Any]) -> tuple[str, list[Any]]:
    if where:
        return f"is_system = 0 AND ({where})", list(params)
    return "is_system = 0", []


def _order(cols: tuple[str, ...], descending: bool) -> str:
    direction = " DESC" if descending else ""
    return ", ".join(f"{c}{direction}" for c in cols)


def count_patrons(conn: sqlite3.Connection, *, where: str | None = None, params: Sequence[Any] = ()) -> int:
    """How many patrons the list holds (system patrons never count)."""
    cond, args = _filter(where, params)
    return conn.execute(f"SELECT count(*) FROM patrons WHERE {cond}", args).fetchone()[0]


def max_patron_id(conn: sqlite3.Connection) -> int:
    """The largest patron id (0 for an empty table): how wide the ID column must be."""
    return conn.execute("SELECT coalesce(max(id), 0) FROM patrons").fetchone()[0]


def page(
    conn: sqlite3.Connection,
    *,
    sort: str = DEFAULT_SORT,
    descending: bool = False,
    after: Sequence[Any] | None = None,
    limit: int = 100,
    where: str | None = None,
    params: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """The next `limit` rows after the row whose sort key is `after` (from the start if None).

    `after` is `sort_key(row, sort)` of the last row seen, e.g. for the default
    sort `(last_name, first_name, id)`. With `descending` the order and the
    comparison are reversed (so `after` continues towards the start).
    """
    cols = sort_columns(sort)
    cond, args = _filter(where, params)
    if after is not None:
        after = tuple(after)
        if len(after) != len(cols):
            raise ValueError(f"sort {sort!r} needs a key of {len(cols)} values ({', '.join(cols)}), got {after!r}")
        op = "<" if descending else ">"
        cond += f" AND ({', '.join(_exprs(cols))}) {op} ({', '.join('?' * len(cols))})"
        args += list(after)
    sql = (
        f"SELECT {_LIST_COLUMNS} FROM patrons WHERE {cond}"
        f" ORDER BY {_order(_exprs(cols), descending)} LIMIT ?"
    )
    return [dict(r) for r in _rows(conn, sql, [*args, max(0, int(limit))])]


def page_at(
    conn: sqlite3.Connection,
    offset: int,
    limit: int = 100,
    *,
    sort: str = DEFAULT_SORT,
    descending: bool = False,
    total: int | None = None,
    where: str | None = None,
    params: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """`limit` rows starting at position `offset` of the list (for jumps, not for scrolling).

    When `total` (the `count_patrons` figure) is given and the offset lies in
    the second half, the rows are read backwards from the end, so End and a
    drag near the bottom cost no more than near the top. The scan walks the
    sort's index but must visit each skipped row to leave out system patrons
    (no index holds `is_system`): on a million patrons sorted by name, the
    middle of the list costs about a second, the ends a few milliseconds.
    """
    cols = _exprs(sort_columns(sort))
    offset, limit = max(0, int(offset)), max(0, int(limit))
    cond, args = _filter(where, params)
    select = f"SELECT {_LIST_COLUMNS} FROM patrons WHERE {cond}"
    if total is not None and offset > total // 2:
        stop = min(total, offset + limit)
        if stop <= offset:
            return []
        sql = f"{select} ORDER BY {_order(cols, not descending)} LIMIT ? OFFSET ?"
        rows = [dict(r) for r in _rows(conn, sql, [*args, stop - offset, total - stop])]
        rows.reverse()
        return rows
    sql = f"{select} ORDER BY {_order(cols, descending)} LIMIT ? OFFSET ?"
    return [dict(r) for r in _rows(conn, sql, [*args, limit, offset])]


def _rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[sqlite3.Row]:
    cur = conn.execute(sql, args)
    cur.row_factory = sqlite3.Row
    return cur.fetchall()


# -- one patron ------------------------------------------------------------------------

def patron_detail(conn: sqlite3.Connection, patron_id: int) -> dict[str, Any]:
    """Everything about one patron, for display.

    Every column of the patron row, except that the password hash is replaced
    by `has_password` and the picture by `picture_bytes` (its size): neither
    is for showing. Plus the patron's dependants, each a list of dicts:
    `notes`, `charges` (and `balance_cents`, the sum of their balances),
    `checkouts`, `holds`, `history` (newest first), `reviews` and `profiles`
    (each with its `subjects` codes and `queue_count`, its service-queue size).
    """
    row = _rows(conn, "SELECT * FROM patrons WHERE id = ? AND is_system = 0", [patron_id])
    if not row:
        raise PatronNotFound(f"no patron with id {patron_id}")
    detail = dict(row[0])
    detail["has_password"] = detail.pop("password_hash") is not None
    picture = detail.pop("picture")
    detail["picture_bytes"] = len(picture) if picture is not None else 0

    def rows(sql: str) -> list[dict[str, Any]]:
        return [dict(r) for r in _rows(conn, sql, [patron_id])]

    detail["notes"] = rows(
        "SELECT id, note_type, text, created_at, created_by FROM notes"
        " WHERE patron_id = ? ORDER BY created_at, id"
    )
    detail["charges"] = rows(
        "SELECT id, kind, description, item_barcode, title, amount_cents, balance_cents, accumulating,"
        " transaction_date, forgiven_at, forgiven_by FROM charges WHERE patron_id = ? ORDER BY transaction_date, id"
    )
    detail["balance_cents"] = sum(c["balance_cents"] for c in detail["charges"])
    detail["checkouts"] = rows(
        "SELECT id, item_barcode, title, site, checked_out_at, due_at FROM checkouts"
        " WHERE patron_id = ? ORDER BY due_at, id"
    )
    detail["holds"] = rows(
        "SELECT id, kind, title, site, placed_at, expires_at FROM holds WHERE patron_id = ? ORDER BY placed_at, id"
    )
    detail["history"] = rows(
        "SELECT id, kind, occurred_at, title, amount_cents, lexile, detail FROM patron_history"
        " WHERE patron_id = ? ORDER BY occurred_at DESC, id DESC"
    )
    detail["reviews"] = rows(
        "SELECT id, title, rating, text, created_at FROM reviews WHERE patron_id = ? ORDER BY created_at, id"
    )
    profiles = rows(
        "SELECT p.*, (SELECT count(*) FROM service_queue q WHERE q.profile_id = p.id) AS queue_count"
        " FROM patron_profiles p WHERE p.patron_id = ? ORDER BY p.medium"
    )
    for profile in profiles:
        profile["subjects"] = [
            r[0] for r in conn.execute(
                "SELECT subject FROM profile_subjects WHERE profile_id = ? ORDER BY subject", (profile["id"],)
            )
        ]
    detail["profiles"] = profiles
    return detail


#: the patron fields of the detail view, in order, with labels
DETAIL_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "ID"),
    ("barcode", "Barcode"),
    ("district_id", "District ID"),
    ("last_name", "Last name"),
    ("first_name", "First name"),
    ("middle_name", "Middle name"),
    ("nickname", "Nickname"),
    ("site", "Site"),
    ("status", "Status"),
    ("patron_type", "Patron type"),
    ("access_level", "Access level"),
    ("persona", "Persona"),
    ("grade", "Grade"),
    ("graduation_year", "Graduation year"),
    ("homeroom", "Homeroom"),
    ("location2", "2nd location"),
    ("policy", "Policy"),
    ("security_group", "Security group"),
    ("gender", "Gender"),
    ("username", "Username"),
    ("has_password", "Password set"),
    ("email", "Email"),
    ("email2", "Email 2"),
    ("phone", "Phone"),
    ("birthdate", "Birthdate"),
    ("account_expires", "Account expires"),
    ("picture_bytes", "Picture (bytes)"),
    ("protected", "Protected"),
    ("created_at", "Created"),
    ("updated_at", "Updated"),
    ("last_seen_import_at", "Last seen by an import"),
    ("inactive_since", "Inactive since"),
)


# -- the protected flag ---------------------------------------------------------------------

def find_patron(conn: sqlite3.Connection, key: str) -> int:
    """A patron's id from its barcode, district ID, or `#id`; PatronNotFound otherwise."""
    key = key.strip()
    if key.startswith("#") and key[1:].isdigit():
        row = conn.execute("SELECT id FROM patrons WHERE id = ?", (int(key[1:]),)).fetchone()
    else:
        row = conn.execute("SELECT id FROM patrons WHERE barcode = ? OR district_id = ? ORDER BY barcode = ? DESC"
                           " LIMIT 1", (key, key, key)).fetchone()
    if row is None:
        raise PatronNotFound(f"no patron with barcode or district ID {key!r}")
    return row[0]


def set_protected(writer, patron_id: int, protected: bool) -> bool:
    """Mark a patron protected (staff accounts...): no inactivation or deletion rule of any job
    ever touches a protected patron. The writer journals it; `protect` checks who may.
    Returns whether the flag changed."""
    row = writer.conn.execute("SELECT protected, is_system FROM patrons WHERE id = ?", (patron_id,)).fetchone()
    if row is None:
        raise PatronNotFound(f"patron {patron_id} is not in the database")
    if row[1] and not protected:
        raise ValueError("the Unknown Patron is a system patron: it is always kept")
    if bool(row[0]) == protected:
        return False
    writer.update("patrons", patron_id, {"protected": 1 if protected else 0})
    return True


def protect(conn, operator: str, patron_ids: list[int], protected: bool) -> list[bool]:
    """Set (or clear) Protected on these patrons as `operator`, in one journalled transaction:
    it needs "manage patrons for the district" (PermissionDenied, a sentence naming it, when
    `operator` lacks it). Returns, per patron, whether its flag changed."""
    from patron_tui.services.permissions import require
    from patron_tui.store import ChangesetWriter

    require(conn, operator, "protect")
    with ChangesetWriter(conn, operator=operator, run_id=None) as w:
        return [set_protected(w, pid, protected) for pid in patron_ids]
