"""Selections: which patrons a utility acts on, as one SQL condition over `patrons`.

The Selections tab of every utility: a saved query set, a search statement, and the
reference's selection fields (patrons in grade, graduation date range or relative date,
status, homeroom, site, patron type, patron balance range). Every one given narrows the
selection (they are AND-ed); a selection with none at all is refused ("choose patrons"),
so no utility acts on the whole district by accident.

Graduation dates: a patron record keeps a graduation *year*; the graduation date is June 30
of that year (the end of the school year), so "graduated between 06/01/2025 and 07/31/2025"
takes the class of 2025 and "graduated within the last 30 days" on 07/15/2025 takes it too.
Patron balance: the sum of the balances of the patron's open (not forgiven) charges, in
dollars; credits count negative.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from decimal import Decimal

from pydantic import BaseModel, Field

from patron_tui.services.utilities.terms import DEFAULT_TERMS, Terms

__all__ = ["Selections", "SelectionError", "selection_where", "selected_ids", "GRADUATION_MONTH_DAY"]

GRADUATION_MONTH_DAY = (6, 30)

_BALANCE = ("(SELECT coalesce(sum(c.balance_cents), 0) FROM charges c"
            " WHERE c.patron_id = patrons.id AND c.forgiven_at IS NULL)")
_GRAD_DATE = "printf('%04d-06-30', patrons.graduation_year)"


class SelectionError(ValueError):
    """A selection that cannot be used; the message is a sentence naming the field."""


class Selections(BaseModel):
    """Which patrons: every field given narrows the selection; none at all is refused."""

    query_set: str | None = Field(default=None, title="Query set")
    statement: str | None = Field(default=None, title="Search statement")
    grades: list[str] = Field(default_factory=list, title="Patrons in {grade}")
    graduation_from: date | None = Field(default=None, title="Graduation date from")
    graduation_to: date | None = Field(default=None, title="Graduation date to")
    graduated_within_days: int | None = Field(default=None, ge=0, le=36_500,
                                              title="Graduated within the last N days")
    statuses: list[str] = Field(default_factory=list, title="Status")
    homerooms: list[str] = Field(default_factory=list, title="{location}")
    sites: list[str] = Field(default_factory=list, title="Site")
    patron_types: list[str] = Field(default_factory=list, title="Patron type")
    balance_min: Decimal | None = Field(default=None, title="Patron balance from")
    balance_max: Decimal | None = Field(default=None, title="Patron balance to")

    def is_empty(self) -> bool:
        lists = (self.grades, self.statuses, self.homerooms, self.sites, self.patron_types)
        return not any((
            self.query_set, self.statement is not None, any(v.strip() for lst in lists for v in lst),
            self.graduation_from, self.graduation_to, self.graduated_within_days is not None,
            self.balance_min is not None, self.balance_max is not None,
        ))

    def describe(self, terms: Terms = DEFAULT_TERMS) -> str:
        """One line for screens and reports (plain text)."""
        parts: list[str] = []
        if self.query_set:
            parts.append(f"query set {self.query_set!r}")
        if self.statement is not None:
            parts.append(f"statement {self.statement or '(all patrons)'!r}")
        for label, values in ((terms.grade, self.grades), ("status", self.statuses),
                              (terms.location, self.homerooms), ("site", self.sites),
                              ("patron type", self.patron_types)):
            if values:
                parts.append(f"{label} {', '.join(values)}")
        if self.graduation_from or self.graduation_to:
            a = self.graduation_from.strftime("%m/%d/%Y") if self.graduation_from else "any"
            b = self.graduation_to.strftime("%m/%d/%Y") if self.graduation_to else "any"
            parts.append(f"graduated {a} to {b}")
        if self.graduated_within_days is not None:
            parts.append(f"graduated within the last {self.graduated_within_days} days")
        if self.balance_min is not None or self.balance_max is not None:
            a = f"{self.balance_min:.2f}" if self.balance_min is not None else "any"
            b = f"{self.balance_max:.2f}" if self.balance_max is not None else "any"
            parts.append(f"balance {a} to {b}")
        return "; ".join(parts) or "(no patrons chosen)"


def _in(col: str, values: list[str]) -> tuple[str, list]:
    vals = [v.strip() for v in values if v.strip()]
    return f"patrons.{col} COLLATE NOCASE IN ({', '.join('?' * len(vals))})", vals


def _cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def selection_where(conn: sqlite3.Connection, sel: Selections, *, today: date | None = None,
                    needs_selection: bool = True) -> tuple[str, tuple]:
    """The SQL condition (over table `patrons`, no alias) and its parameters.

    SelectionError when nothing is chosen (and the utility needs a selection), for an
    unknown query set or a bad statement (the compiler's position and message), or for a
    range whose start is after its end."""
    from patron_tui.services.queries import StatementError, compile_statement
    from patron_tui.services.query_sets import QuerySetNotFound, get_set, set_filter

    today = today or date.today()
    if sel.is_empty():
        if needs_selection:
            raise SelectionError("Choose patrons: give a query set, a search statement or a selection field.")
        return "1", ()
    where: list[str] = []
    params: list = []
    if sel.query_set:
        try:
            qs = get_set(conn, sel.query_set)
            w, p = set_filter(conn, qs, today=today)
        except QuerySetNotFound as exc:
            raise SelectionError(f"Query set: {exc}") from exc
        except StatementError as exc:
            raise SelectionError(f"Query set {sel.query_set!r}: its statement no longer compiles: {exc}") from exc
        where.append(w)
        params += p
    if sel.statement is not None:
        try:
            compiled = compile_statement(sel.statement, conn=conn, today=today)
        except StatementError as exc:
            raise SelectionError(f"Search statement: {exc}") from exc
        where.append(compiled.where)
        params += compiled.params
    for col, values in (("grade", sel.grades), ("status", sel.statuses), ("homeroom", sel.homerooms),
                        ("site", sel.sites), ("patron_type", sel.patron_types)):
        if any(v.strip() for v in values):
            w, p = _in(col, values)
            where.append(w)
            params += p
    if sel.graduation_from and sel.graduation_to and sel.graduation_from > sel.graduation_to:
        raise SelectionError("Graduation date: the start date is after the end date.")
    if sel.graduation_from:
        where.append(f"patrons.graduation_year IS NOT NULL AND {_GRAD_DATE} >= ?")
        params.append(sel.graduation_from.isoformat())
    if sel.graduation_to:
        where.append(f"patrons.graduation_year IS NOT NULL AND {_GRAD_DATE} <= ?")
        params.append(sel.graduation_to.isoformat())
    if sel.graduated_within_days is not None:
        where.append(f"patrons.graduation_year IS NOT NULL AND {_GRAD_DATE} BETWEEN ? AND ?")
        params += [(today - timedelta(days=sel.graduated_within_days)).isoformat(), today.isoformat()]
    if sel.balance_min is not None and sel.balance_max is not None and sel.balance_min > sel.balance_max:
        raise SelectionError("Patron balance: the lower amount is above the upper amount.")
    if sel.balance_min is not None:
        where.append(f"{_BALANCE} >= ?")
        params.append(_cents(sel.balance_min))
    if sel.balance_max is not None:
        where.append(f"{_BALANCE} <= ?")
        params.append(_cents(sel.balance_max))
    return " AND ".join(f"({w})" for w in where), tuple(params)


def selected_ids(conn: sqlite3.Connection, where: str, params: tuple) -> list[int]:
    """The ids of the selected patrons, ascending."""
    return [r[0] for r in conn.execute(f"SELECT id FROM patrons WHERE {where} ORDER BY id", params)]
