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
    """PermissionDenied unless `login` may use batch tools (the Tools-menu lock)."""
    row = _operator(conn, login)
    if row is None:
        raise PermissionDenied(
            f"Operator {login!r} is not in the operators table, so they do not have the permission "
            f"\"{BATCH_TOOLS}\"; a district administrator can add them.")
    if not (row["security_level"] == 0 or row["may_use_batch_tools"]):
        raise PermissionDenied(
            f"Operator {login!r} does not have the permission \"{BATCH_TOOLS}\" (security level "
            f"{row['security_level']}); ask a district administrator for it.")


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
