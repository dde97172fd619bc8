"""Who may do what: the operators table's permissions, checked in one place.

An operator is the login name in `operators`; a login that is not there has no permission at
all. Security level 0 (district administrator) may do everything.
"""

from __future__ import annotations

import sqlite3

__all__ = ["PermissionDenied", "may_use_batch_tools", "require_batch_tools"]

BATCH_TOOLS = "may use batch tools"


class PermissionDenied(PermissionError):
    """An operator lacks a permission; str(exc) is a sentence naming it."""


def _operator(conn: sqlite3.Connection, login: str) -> sqlite3.Row | None:
    return conn.execute(
        "SELECT security_level, may_use_batch_tools FROM operators WHERE login_name = ?", (login,)
    ).fetchone()


def may_use_batch_tools(conn: sqlite3.Connection, login: str) -> bool:
    """Security level 0, or the operator's "may use batch tools" permission."""
    row = _operator(conn, login)
    return row is not None and (row["security_level"] == 0 or bool(row["may_use_batch_tools"]))


def require_batch_tools(conn: sqlite3.Connection, login: str) -> None:
    """PermissionDenied unless `login` may use batch tools (the Tools-menu lock); the sentence
    is `refusal`'s, the same for every permission (issue 14 item 9)."""
    require(conn, login, "batch_tools")


# -- Reset Patron Accounts (issue 8) ---------------------------------------------------------

RESET_PASSWORDS = "may reset patron passwords"
__all__ += ["may_reset_passwords", "operator_level", "outranks", "require_password_reset"]


def operator_level(conn: sqlite3.Connection, login: str) -> int | None:
    """The operator's security level (0 = district administrator), None when not an operator."""
    row = _operator(conn, login)
    return None if row is None else int(row["security_level"])


def outranks(operator_level: int, level: int | None) -> bool:
    """Whether an operator at `operator_level` may change a patron (or group) at security
    level `level`: only a higher level number than their own, except level 0, who may change
    all. An unknown level is never outranked except by level 0."""
    if operator_level == 0:
        return True
    return level is not None and level > operator_level


def may_reset_passwords(conn: sqlite3.Connection, login: str) -> bool:
    """Security level 0, or the operator's "may reset patron passwords" permission."""
    row = conn.execute("SELECT security_level, may_reset_passwords FROM operators WHERE login_name = ?",
                       (login,)).fetchone()
    return row is not None and (row["security_level"] == 0 or bool(row["may_reset_passwords"]))


def require_password_reset(conn: sqlite3.Connection, login: str) -> None:
    """PermissionDenied unless `login` may use batch tools AND reset patron passwords (the two
    permissions Reset Patron Accounts needs)."""
    require_batch_tools(conn, login)
    if not may_reset_passwords(conn, login):
        raise PermissionDenied(
            f"Operator {login!r} does not have the permission \"{RESET_PASSWORDS}\" (security level "
            f"{operator_level(conn, login)}); ask a district administrator for it.")


# -- Change Patron Security Group (issue 8) ------------------------------------------------------

__all__ += ["group_level", "require_may_assign_group"]


def group_level(conn: sqlite3.Connection, code: str) -> int | None:
    """The security level of the security group `code` (None: not in the table)."""
    row = conn.execute("SELECT security_level FROM security_groups WHERE code = ?", (code,)).fetchone()
    return None if row is None else int(row[0])


def require_may_assign_group(conn: sqlite3.Connection, login: str, code: str) -> None:
    """PermissionDenied unless `login` may assign the security group `code` to patrons (only a
    higher security level number than their own, except level 0: `outranks`)."""
    level = operator_level(conn, login)
    if level is None:
        raise PermissionDenied(
            f"Operator {login!r} is not in the operators table, so they may not assign security groups.")
    target = group_level(conn, code)
    if target is None:
        raise PermissionDenied(f"Security group {code!r} is not in the security group table.")
    if not outranks(level, target):
        raise PermissionDenied(
            f"Operator {login!r} (security level {level}) may not assign the security group {code!r} "
            f"(security level {target}): an operator may only assign or change groups with a higher "
            f"security level number than their own, except a district administrator (level 0).")


__all__ += ["patron_level_refusal"]


def patron_level_refusal(operator_level: int, group: str | None, level: int | None) -> str | None:
    """None when an operator at `operator_level` may change or delete a patron whose security
    group is `group` (its security level `level`, None when the group is not in the table),
    else the reason, the same words wherever a patron is skipped for it (Change Patron Security
    Group, Remove Patrons and every other utility: issue 14 item 9). A patron with no security
    group may be changed; otherwise `outranks` decides."""
    if not group or outranks(operator_level, level):
        return None
    if level is None:
        return (f"current security group {group!r} is not in the security group table; only a "
                "district administrator (level 0) may change it")
    return (f"current security group {group!r} (security level {level}) is not one an operator at "
            f"level {operator_level} may change (only higher level numbers)")


# -- the one entry point: require(conn, login, permission) (issue 9) ---------------------------
#
# Every guarded action names one of these permissions; `require` checks it and its refusal is a
# sentence naming what is missing, so the CLI and the console say the same thing. The helpers
# above stay (their callers use them); `require` delegates to them where they exist.

from typing import Any, Literal, get_args  # noqa: E402

Permission = Literal["manage_jobs", "manage_patrons", "import_patrons", "batch_tools", "reset_passwords",
                     "manage_operators", "backup", "restore", "run_background", "protect", "query_sets",
                     "fill_queues", "prune_journal", "replace_database", "mail"]

MANAGE_PATRONS = "manage patrons for the district"

#: permission -> (what it lets an operator do, the operators-table permission it needs)
PERMISSIONS: dict[str, tuple[str, str]] = {
    "manage_jobs": ("manage scheduled patron updates", MANAGE_PATRONS),
    "manage_patrons": ("manage patrons for the district", MANAGE_PATRONS),
    "import_patrons": ("import patron files or resolve their barcode conflicts", MANAGE_PATRONS),
    "batch_tools": ("use batch tools", BATCH_TOOLS),
    "reset_passwords": ("reset patron passwords", RESET_PASSWORDS),
    "manage_operators": ("manage operators", "security level 0 (district administrator)"),
    "backup": ("back up the database", MANAGE_PATRONS),
    "restore": ("restore the database from a backup", "security level 0 (district administrator)"),
    "run_background": ("hand runs to the scheduler", MANAGE_PATRONS),
    # issue 14 item 9: every other write a login can ask for names its permission too
    "protect": ("protect patrons or lift their protection", MANAGE_PATRONS),
    "query_sets": ("save, replace, freeze or delete query sets", BATCH_TOOLS),
    "fill_queues": ("fill the service queues batch updates asked for", BATCH_TOOLS),
    "prune_journal": ("prune the change journal", "security level 0 (district administrator)"),
    "replace_database": ("replace this database with a demo district", "security level 0 (district administrator)"),
    "mail": ("send mail through the district's mail settings", MANAGE_PATRONS),
}

__all__ += ["MANAGE_PATRONS", "PERMISSIONS", "Permission", "has_permission", "require", "refusal", "store_refusal"]


def _operator_row(conn: sqlite3.Connection, login: str) -> sqlite3.Row | None:
    return conn.execute(
        "SELECT security_level, may_manage_district_patrons, may_use_batch_tools, may_reset_passwords"
        " FROM operators WHERE login_name = ?", (login,)).fetchone()


def _granted(row: sqlite3.Row, permission: str) -> bool:
    if row["security_level"] == 0:
        return True   # a district administrator may do everything
    if permission in ("manage_jobs", "manage_patrons", "import_patrons", "backup", "run_background", "protect",
                      "mail"):
        return bool(row["may_manage_district_patrons"])
    if permission in ("batch_tools", "query_sets", "fill_queues"):
        return bool(row["may_use_batch_tools"])
    if permission == "reset_passwords":
        return bool(row["may_use_batch_tools"]) and bool(row["may_reset_passwords"])
    return False   # manage_operators, restore, prune_journal, replace_database: level 0 only


def _check_name(permission: str) -> None:
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}; one of {', '.join(get_args(Permission))}")


def has_permission(conn: sqlite3.Connection, login: str, permission: Permission) -> bool:
    """Whether `login` may do what `permission` guards (an unknown login may do nothing)."""
    _check_name(permission)
    row = _operator_row(conn, login)
    return row is not None and _granted(row, permission)


def refusal(conn: sqlite3.Connection, login: str, permission: Permission) -> str | None:
    """None when allowed, else the sentence `require` raises."""
    _check_name(permission)
    action, needs = PERMISSIONS[permission]
    row = _operator_row(conn, login)
    if row is None:
        what = needs if needs.startswith("security level") else f"the permission \"{needs}\""
        return (f"Operator {login!r} is not in the operators table, so they may not {action}: that needs "
                f"{what}; a district administrator can add them (`patron-tui operators add`).")
    if _granted(row, permission):
        return None
    level = row["security_level"]
    if permission == "reset_passwords" and not row["may_use_batch_tools"]:
        needs = BATCH_TOOLS
    if needs.startswith("security level"):
        return (f"Operator {login!r} (security level {level}) may not {action}: that needs {needs}.")
    return (f"Operator {login!r} may not {action}: that needs the permission \"{needs}\" "
            f"(security level {level} does not have it); ask a district administrator for it.")


def store_refusal(store: Any, permission: Permission) -> str | None:
    """`refusal` for the operator of `store` (a Store: its login), on a connection of its own."""
    conn = store.connect()
    try:
        return refusal(conn, store.operator, permission)
    finally:
        conn.close()


def require(conn: sqlite3.Connection, login: str, permission: Permission) -> None:
    """PermissionDenied (a PermissionError) with a sentence naming the missing permission,
    unless `login` may do what `permission` guards."""
    problem = refusal(conn, login, permission)
    if problem is not None:
        raise PermissionDenied(problem)


# -- scheduled patron updates (issue 6, moved here from services/jobs/store.py) ------------------

__all__ += ["may_manage_jobs", "require_jobs_manager"]


def may_manage_jobs(conn: sqlite3.Connection, login: str) -> bool:
    """May this operator add, edit, delete or run jobs? (security level 0, or "manage patrons
    for the district")"""
    return has_permission(conn, login, "manage_jobs")


def require_jobs_manager(conn: sqlite3.Connection, login: str) -> None:
    """PermissionDenied (a PermissionError) unless `login` may manage scheduled patron updates."""
    require(conn, login, "manage_jobs")


# -- undo (issue 9): taking a run back needs the permission of the run's kind ----------------------
#
# Imports and conflict resolutions need what running them needs ("import_patrons": manage
# patrons for the district), scheduled job runs the jobs permission; batch updates, the queue filler and utilities to the batch tools (Reset
# Patron Accounts also to password resets); an undo needs what the run it undid needed. Any
# other kind (a journal pruning, a kind this table does not know) only a district administrator
# (security level 0) may undo.

import json as _json  # noqa: E402

UNDO_PERMISSIONS: dict[str, Permission] = {
    "import": "import_patrons",
    "job": "manage_jobs",
    "conflict": "import_patrons",
    "batch_update": "batch_tools",
    "queue_fill": "batch_tools",
    "utility": "batch_tools",
}

__all__ += ["UNDO_PERMISSIONS", "undo_permission", "undo_refusal", "require_undo"]


def undo_permission(conn: sqlite3.Connection, run_id: int, _depth: int = 0) -> tuple[str, Permission | None]:
    """(the kind of the run whose changes an undo of `run_id` takes back, the permission it
    needs); None = security level 0 only. An undo of an undo needs what the undone run needed."""
    row = conn.execute("SELECT kind, params FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return "", None
    kind = row["kind"]
    try:
        params = _json.loads(row["params"] or "{}")
    except ValueError:
        params = {}
    params = params if isinstance(params, dict) else {}
    if kind == "undo":
        undoes = params.get("undoes")
        if isinstance(undoes, int) and _depth < 50:
            return undo_permission(conn, undoes, _depth + 1)
        return kind, None
    if kind == "utility" and params.get("utility") == "reset-patron-accounts":
        return kind, "reset_passwords"
    return kind, UNDO_PERMISSIONS.get(kind)


def undo_refusal(conn: sqlite3.Connection, login: str, run_id: int) -> str | None:
    """None when `login` may undo run `run_id`, else the sentence naming the missing permission
    (a run that does not exist is left to the undo's own refusal)."""
    if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
        return None
    kind, permission = undo_permission(conn, run_id)
    what = f"undo run {run_id} (a {kind.replace('_', ' ')} run)"
    if permission is None:
        level = operator_level(conn, login)
        if level == 0:
            return None
        if level is None:
            return (f"Operator {login!r} is not in the operators table, so they may not {what}; "
                    f"a district administrator can add them (`patron-tui operators add`).")
        return (f"Operator {login!r} (security level {level}) may not {what}: that needs security level 0 "
                f"(district administrator).")
    problem = refusal(conn, login, permission)
    if problem is None:
        return None
    return f"To {what} an operator must be allowed to {PERMISSIONS[permission][0]}. {problem}"


def require_undo(conn: sqlite3.Connection, login: str, run_id: int) -> None:
    """PermissionDenied (with the sentence) unless `login` may undo run `run_id`."""
    problem = undo_refusal(conn, login, run_id)
    if problem is not None:
        raise PermissionDenied(problem)
