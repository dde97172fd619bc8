"""Check database: the troubleshooting run that says what is wrong with the patron store.

Read-only. Every fault found becomes one run message with a stable `code`, the
patron's `barcode` and `patron_id` where there is a patron, and a text that
names the patron and the fault: a warning for data faults, an error when
SQLite's own integrity check fails. Every check is set-based SQL over the
indexes, so the run stays fast on a district of a million patrons (about 10 s,
most of it SQLite's integrity check); Python only loops over the faults found. System patrons (the Unknown Patron) are never reported.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from patron_tui.runs import RunContext

CHECK_KIND = "check"
CHECK_TITLE = "Check database"

# -- fault codes (stable: the job summary and the log filter key on them) ---------------
INTEGRITY = "integrity"
FOREIGN_KEY = "foreign_key"
CHECK_FAILED = "check_failed"
DUPLICATE_BARCODE = "duplicate_barcode"
DUPLICATE_DISTRICT_ID = "duplicate_district_id"
UNION_SITE = "union_site"
UNKNOWN_GRADE = "unknown_grade"
UNKNOWN_SITE = "unknown_site"
UNKNOWN_POLICY = "unknown_policy"
UNKNOWN_PATRON_TYPE = "unknown_patron_type"
UNKNOWN_SECURITY_GROUP = "unknown_security_group"
UNKNOWN_STATUS = "unknown_status"


class _Orphan:
    """Rows of `table` whose `column` points at a `parent` row that does not exist."""

    def __init__(self, table: str, column: str, parent: str, code: str, what: str) -> None:
        self.table, self.column, self.parent, self.code = table, column, parent, code
        self.what = what  # SQL over alias c: how the row is named in the message

    @property
    def parent_word(self) -> str:
        return "patron" if self.parent == "patrons" else "profile"


ORPHANS: tuple[_Orphan, ...] = (
    _Orphan("notes", "patron_id", "patrons", "orphan_note", "printf('%s note %d', c.note_type, c.id)"),
    _Orphan("charges", "patron_id", "patrons", "orphan_charge",
            "printf('Charge %d (%s, balance %.2f)', c.id, c.kind, c.balance_cents / 100.0)"),
    _Orphan("checkouts", "patron_id", "patrons", "orphan_checkout",
            "printf('Checkout %d (item %s)', c.id, c.item_barcode)"),
    _Orphan("holds", "patron_id", "patrons", "orphan_hold", "printf('Hold %d (%s)', c.id, c.kind)"),
    _Orphan("patron_history", "patron_id", "patrons", "orphan_history",
            "printf('History entry %d (%s)', c.id, c.kind)"),
    _Orphan("reviews", "patron_id", "patrons", "orphan_review", "printf('Review %d', c.id)"),
    _Orphan("patron_profiles", "patron_id", "patrons", "orphan_profile",
            "printf('Profile %d (medium %s)', c.id, c.medium)"),
    _Orphan("profile_subjects", "profile_id", "patron_profiles", "orphan_profile_subject",
            "printf('Profile subject %s', c.subject)"),
    _Orphan("service_queue", "profile_id", "patron_profiles", "orphan_service_queue",
            "printf('Service queue entry %d', c.id)"),
)

# (patron column, reference table, code, the word used in messages)
REFERENCE_CODES: tuple[tuple[str, str, str, str], ...] = (
    ("grade", "grades", UNKNOWN_GRADE, "grade"),
    ("site", "sites", UNKNOWN_SITE, "site"),
    ("policy", "policies", UNKNOWN_POLICY, "policy"),
    ("patron_type", "patron_types", UNKNOWN_PATRON_TYPE, "patron type"),
    ("security_group", "security_groups", UNKNOWN_SECURITY_GROUP, "security group"),
    ("status", "statuses", UNKNOWN_STATUS, "status"),
)

# Grades only mean something for students: staff, teachers and adult patrons
# may have none. A grade that is filled in must still be in the grade table.
GRADED_PATRON_TYPE = "Student"

# what counts as "surrounding whitespace" for near-duplicates
_WS = " \t\r\n\v\f\u00a0"
_OTHERS_SHOWN = 5


def check_database(ctx: RunContext) -> dict[str, Any]:
    """Run every check on the run's connection; returns {"faults", "by_code", ...}."""
    conn = ctx.conn
    found: Counter[str] = Counter()
    checks: list[tuple[str, Callable[[], None]]] = [
        ("integrity", lambda: _integrity(ctx, found)),
        ("foreign keys", lambda: _foreign_keys(ctx, found)),
        *[(f"orphan {o.table}", lambda o=o: _orphans(ctx, found, o)) for o in ORPHANS],
        ("duplicate barcodes", lambda: _near_duplicates(ctx, found, "barcode", DUPLICATE_BARCODE, "barcode")),
        ("duplicate district IDs",
         lambda: _near_duplicates(ctx, found, "district_id", DUPLICATE_DISTRICT_ID, "district ID")),
        ("Union Site", lambda: _union_site(ctx, found)),
        ("reference codes", lambda: _reference_codes(ctx, found)),
    ]
    total = len(checks)
    # a long statement (integrity_check on a big file) stops when the run is cancelled
    conn.set_progress_handler(lambda: 1 if ctx.cancelled else 0, 20_000)
    conn.execute("BEGIN")  # one read snapshot for all checks
    try:
        patrons = conn.execute("SELECT count(*) FROM patrons WHERE is_system = 0").fetchone()[0]
        ctx.info(
            f"Checking {patrons:,} patrons: integrity, foreign keys, orphan rows, duplicate "
            "barcodes and district IDs, the Union Site, reference codes.",
            code="check_started",
        )
        ctx.progress(0, total, force=True)
        for i, (name, run_check) in enumerate(checks, 1):
            ctx.check_cancelled()
            try:
                run_check()
            except sqlite3.DatabaseError as exc:
                ctx.check_cancelled()  # an interrupted statement is a cancel, not a fault
                if isinstance(exc, sqlite3.OperationalError) and "interrupt" in str(exc):
                    raise
                found[CHECK_FAILED] += 1
                ctx.error(f"The {name} check could not run: {exc}", code=CHECK_FAILED)
            ctx.progress(i, total, force=True)
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")
        conn.set_progress_handler(None, 0)
    faults = sum(found.values())
    by_code = dict(sorted(found.items()))
    if faults:
        detail = ", ".join(f"{code} {n:,}" for code, n in by_code.items())
        ctx.info(f"Check finished: {faults:,} fault(s) found ({detail}).", code="check_finished")
    else:
        ctx.info("Check finished: no faults found.", code="check_finished")
    return {"faults": faults, "by_code": by_code, "patrons": patrons, "checks": total}


# -- the checks ---------------------------------------------------------------------------


def _integrity(ctx: RunContext, found: Counter[str]) -> None:
    for (line,) in ctx.conn.execute("PRAGMA integrity_check"):
        if line != "ok":
            found[INTEGRITY] += 1
            ctx.error(f"SQLite integrity check: {line}", code=INTEGRITY)


def _foreign_keys(ctx: RunContext, found: Counter[str]) -> None:
    """`PRAGMA foreign_key_check` for the links the orphan checks do not cover."""
    conn = ctx.conn
    covered = {(o.table, o.parent) for o in ORPHANS}
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )]
    for table in tables:
        parents = {r["table"] for r in conn.execute("SELECT * FROM pragma_foreign_key_list(?)", (table,))}
        if not parents or all((table, p) in covered for p in parents):
            continue
        for row in conn.execute("SELECT * FROM pragma_foreign_key_check(?)", (table,)):
            if (table, row["parent"]) in covered:
                continue
            found[FOREIGN_KEY] += 1
            which = f"Row {row['rowid']} of {table}" if row["rowid"] is not None else f"A row of {table}"
            ctx.warning(f"{which} points at a {row['parent']} row that does not exist.", code=FOREIGN_KEY)


def _orphans(ctx: RunContext, found: Counter[str], o: _Orphan) -> None:
    # Missing parents are found over the child's index (one probe per distinct
    # parent id), then only the orphan rows themselves are read.
    sql = f"""
        WITH missing AS (
            SELECT parent_id FROM (SELECT DISTINCT {o.column} AS parent_id FROM {o.table})
            WHERE parent_id NOT IN (SELECT id FROM {o.parent})
        )
        SELECT {o.what} AS what, c.{o.column} AS parent_id FROM {o.table} c
        WHERE c.{o.column} IN (SELECT parent_id FROM missing)
        ORDER BY c.{o.column}, c.rowid
    """
    for row in ctx.conn.execute(sql):
        found[o.code] += 1
        ctx.warning(
            f"{row['what']} belongs to {o.parent_word} id {row['parent_id']}, which does not exist.",
            code=o.code,
        )


def _near_duplicates(ctx: RunContext, found: Counter[str], column: str, code: str, word: str) -> None:
    """Values equal apart from case and surrounding whitespace ('B100' and ' b100').

    The unique index rules out exact duplicates, so every near-duplicate group
    holds at least one value not in normal form (upper case, trimmed). Those
    are found over the column's index; only their groups are sorted.
    """
    norm = f"upper(trim({column}, :ws))"
    sql = f"""
        WITH odd AS (
            SELECT {column} AS v, {norm} AS k FROM patrons
            WHERE {column} IS NOT NULL AND {column} <> {norm}
        ),
        pool AS (
            SELECT v, k FROM odd
            UNION ALL
            SELECT {column}, {column} FROM patrons WHERE {column} IN (SELECT k FROM odd)
        )
        SELECT p.id, p.{column} AS value, p.last_name, p.first_name, p.barcode, pool.k
        FROM pool JOIN patrons p ON p.{column} = pool.v
        WHERE pool.k <> '' AND p.is_system = 0
        ORDER BY pool.k, p.id
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in ctx.conn.execute(sql, {"ws": _WS}):
        groups.setdefault(row["k"], []).append(row)
    for members in groups.values():
        if len(members) < 2:
            continue
        for row in members:
            others = [m for m in members if m["id"] != row["id"]]
            shown = "; ".join(
                _patron(m) if column == "barcode" else f"{_patron(m)}, {word} {_quoted(m['value'])}"
                for m in others[:_OTHERS_SHOWN]
            )
            if len(others) > _OTHERS_SHOWN:
                shown += f"; and {len(others) - _OTHERS_SHOWN} more"
            found[code] += 1
            ctx.warning(
                f"{_patron(row)}: {word} {_quoted(row['value'])} is a duplicate, apart from case "
                f"or spaces, of {shown}.",
                code=code, barcode=row["barcode"], patron_id=row["id"],
            )


def _union_site(ctx: RunContext, found: Counter[str]) -> None:
    sql = """
        SELECT p.id, p.barcode, p.last_name, p.first_name, p.site
        FROM patrons p JOIN sites s ON s.code = p.site AND s.is_union = 1
        WHERE p.is_system = 0
        ORDER BY p.id
    """
    for row in ctx.conn.execute(sql):
        found[UNION_SITE] += 1
        ctx.warning(
            f"{_patron(row)} is at the Union Site ({row['site']}), where patrons with an unknown "
            "site code go: give them their real site.",
            code=UNION_SITE, barcode=row["barcode"], patron_id=row["id"],
        )


def _reference_codes(ctx: RunContext, found: Counter[str]) -> None:
    """One pass over patrons for every code column that has a reference table."""
    flags = []
    for column, table, _code, _word in REFERENCE_CODES:
        bad = f"{column} NOT IN (SELECT code FROM {table})"
        if column == "grade":
            bad = f"({bad} AND (grade <> '' OR patron_type = '{GRADED_PATRON_TYPE}'))"
        flags.append(f"{bad} AS bad_{column}")
    columns = ", ".join(c for c, *_ in REFERENCE_CODES)
    sql = f"""
        SELECT * FROM (
            SELECT id, barcode, last_name, first_name, {columns}, {", ".join(flags)}
            FROM patrons WHERE is_system = 0
        )
        WHERE {" OR ".join(f"bad_{c}" for c, *_ in REFERENCE_CODES)}
        ORDER BY id
    """
    for row in ctx.conn.execute(sql):
        for column, _table, code, word in REFERENCE_CODES:
            if not row[f"bad_{column}"]:
                continue
            value = row[column]
            if value == "":
                text = f"{_patron(row)} has no {word}."
            else:
                text = f"{_patron(row)}: {word} {_quoted(value)} is not in the {word} table."
            found[code] += 1
            ctx.warning(text, code=code, barcode=row["barcode"], patron_id=row["id"])


# -- wording ------------------------------------------------------------------------------


def _patron(row: Mapping[str, Any]) -> str:
    """'Last, First (barcode B100)': how a message names a patron."""
    last, first = row["last_name"] or "", row["first_name"] or ""
    name = f"{last}, {first}" if last and first else (last or first or "(no name)")
    barcode = row["barcode"]
    if barcode is None:
        return f"{name} (no barcode)"
    # quote a barcode only when spaces around it would otherwise be invisible
    return f"{name} (barcode {_quoted(barcode) if barcode != barcode.strip() else barcode})"


def _quoted(value: Any) -> str:
    return f"'{value}'"
