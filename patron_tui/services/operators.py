"""Operators: who may use the console, and what they may do.

The Unix login name is the operator (store/identity.py). The first person to create a
database is a district administrator (security level 0); only a level-0 operator adds,
edits or removes operators, and the last level-0 operator can neither be removed nor
demoted (someone must always be able to manage the others). Every change is written
through the changeset writer, so the audit trail shows who changed whom.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from patron_tui.services.permissions import PermissionDenied, require
from patron_tui.store.changeset import ChangesetWriter, utc_now

__all__ = ["Operator", "OperatorError", "add_operator", "current_operator", "edit_operator",
           "get_operator", "list_operators", "remove_operator"]

#: the flag columns of `operators`, by the name the services and the CLI use
FLAGS = {
    "manage_patrons": "may_manage_district_patrons",
    "batch_tools": "may_use_batch_tools",
    "reset_passwords": "may_reset_passwords",
}


class OperatorError(ValueError):
    """A refused operator change; str(exc) is a sentence saying why."""


@dataclass(frozen=True)
class Operator:
    id: int
    login_name: str
    display_name: str
    security_level: int
    manage_patrons: bool
    batch_tools: bool
    reset_passwords: bool
    created_at: str

    @property
    def is_administrator(self) -> bool:
        return self.security_level == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _from_row(row: sqlite3.Row) -> Operator:
    return Operator(
        id=row["id"], login_name=row["login_name"], display_name=row["display_name"],
        security_level=int(row["security_level"]),
        manage_patrons=bool(row["may_manage_district_patrons"]),
        batch_tools=bool(row["may_use_batch_tools"]),
        reset_passwords=bool(row["may_reset_passwords"]),
        created_at=row["created_at"],
    )


def list_operators(conn: sqlite3.Connection) -> list[Operator]:
    """Every operator, district administrators first, then by login name."""
    return [_from_row(r) for r in conn.execute(
        "SELECT * FROM operators ORDER BY security_level, login_name COLLATE NOCASE")]


def get_operator(conn: sqlite3.Connection, login: str) -> Operator | None:
    row = conn.execute("SELECT * FROM operators WHERE login_name = ?", (login,)).fetchone()
    return _from_row(row) if row is not None else None


def current_operator(conn: sqlite3.Connection, login: str) -> Operator | None:
    """The operator the login name `login` is (None: not an operator, so no permission at all)."""
    return get_operator(conn, login)


def _check_login(login: str) -> str:
    login = (login or "").strip()
    if not login:
        raise OperatorError("login name: give the operator's Unix login name")
    if len(login) > 64 or any(c.isspace() or not c.isprintable() for c in login):
        raise OperatorError(f"login name: {login!r} is not a login name (no spaces or control characters)")
    return login


def _check_level(level: int) -> int:
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        raise OperatorError(f"security level: must be a whole number 0 or more, not {level!r}")
    return level


def _administrators(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM operators WHERE security_level = 0").fetchone()[0]


def add_operator(conn: sqlite3.Connection, by: str, login: str, *, display_name: str = "",
                 security_level: int = 5, manage_patrons: bool = False, batch_tools: bool = False,
                 reset_passwords: bool = False) -> Operator:
    """Add the operator `login` (as `by`, who must be a district administrator)."""
    login = _check_login(login)
    _check_level(security_level)
    with ChangesetWriter(conn, operator=by, run_id=None) as w:
        require(conn, by, "manage_operators")
        if get_operator(conn, login) is not None:
            raise OperatorError(f"login name: {login!r} is an operator already (edit them instead)")
        w.insert("operators", {
            "login_name": login, "display_name": (display_name or login).strip(),
            "security_level": security_level, "may_manage_district_patrons": int(manage_patrons),
            "may_use_batch_tools": int(batch_tools), "may_reset_passwords": int(reset_passwords),
            "created_at": utc_now(),
        })
    found = get_operator(conn, login)
    assert found is not None
    return found


def edit_operator(conn: sqlite3.Connection, by: str, login: str, *, display_name: str | None = None,
                  security_level: int | None = None, manage_patrons: bool | None = None,
                  batch_tools: bool | None = None, reset_passwords: bool | None = None) -> Operator:
    """Change what is given (None leaves a field alone), as `by` (a district administrator).
    The last district administrator cannot be demoted."""
    if security_level is not None:
        _check_level(security_level)
    changes: dict[str, Any] = {}
    if display_name is not None:
        changes["display_name"] = display_name.strip()
    if security_level is not None:
        changes["security_level"] = security_level
    for name, value in (("manage_patrons", manage_patrons), ("batch_tools", batch_tools),
                        ("reset_passwords", reset_passwords)):
        if value is not None:
            changes[FLAGS[name]] = int(value)
    with ChangesetWriter(conn, operator=by, run_id=None) as w:
        require(conn, by, "manage_operators")
        current = get_operator(conn, login)
        if current is None:
            raise OperatorError(f"there is no operator with the login name {login!r}")
        if (current.security_level == 0 and security_level not in (None, 0)
                and _administrators(conn) <= 1):
            raise OperatorError(
                f"{login!r} is the last district administrator (security level 0): make another "
                f"operator a district administrator first, so someone can still manage operators")
        if changes:
            w.update("operators", current.id, changes)
    found = get_operator(conn, login)
    assert found is not None
    return found


def remove_operator(conn: sqlite3.Connection, by: str, login: str) -> Operator:
    """Remove the operator `login` (as `by`, a district administrator); returns who was removed.
    The last district administrator cannot be removed."""
    with ChangesetWriter(conn, operator=by, run_id=None) as w:
        require(conn, by, "manage_operators")
        current = get_operator(conn, login)
        if current is None:
            raise OperatorError(f"there is no operator with the login name {login!r}")
        if current.security_level == 0 and _administrators(conn) <= 1:
            raise OperatorError(
                f"{login!r} is the last district administrator (security level 0) and cannot be "
                f"removed: make another operator a district administrator first")
        w.delete("operators", current.id)
    return current


__all__ += ["FLAGS", "PermissionDenied"]
