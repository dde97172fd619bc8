"""Forgive Charges: forgive the selected patrons' open charges of one category, optionally
only those of a transaction date range (the patron balance range is a Selection).

Categories, as the reference defines them:
- all: every open charge, fee and fine;
- lost: kind 'lost', or a description starting "Lost";
- overdue: kind 'overdue', a description starting "Overdue Fine", or a fine still accumulating;
- other: everything that is neither lost nor overdue.
An open charge is one not forgiven with a balance above zero, or a fine still accumulating
(even at 0.00 so far). Credits (negative balances) are not charges and are left alone.
Forgiving sets the balance to 0, stops accumulation and stamps forgiven_at / forgiven_by; the
charge row stays (the record of what was owed). Starting date blank: every past charge up to
the ending date; ending date blank: no upper bound. Dates compare the transaction date's day.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from patron_tui.services.utilities.base import (
    SYSTEM_REASON, Plan, Utility, change, patron_rows, register, skip,
)
from patron_tui.store import ChangesetWriter

CATEGORY_TITLES = {
    "all": "All charges, fees and fines",
    "lost": "Lost fees only",
    "overdue": "Overdue fines only",
    "other": "Other charges/fees",
}

_LOST = "(c.kind = 'lost' OR lower(trim(c.description)) LIKE 'lost%')"
_OVERDUE = "(c.kind = 'overdue' OR lower(trim(c.description)) LIKE 'overdue fine%' OR c.accumulating = 1)"
_CATEGORY_SQL = {
    "all": "1",
    "lost": _LOST,
    "overdue": _OVERDUE,
    "other": f"NOT {_LOST} AND NOT {_OVERDUE}",
}
_OPEN = "c.forgiven_at IS NULL AND (c.balance_cents > 0 OR c.accumulating = 1)"


def money(cents: int) -> str:
    return f"{'-' if cents < 0 else ''}${abs(cents) / 100:,.2f}"


class ForgiveOptions(BaseModel):
    category: Literal["all", "lost", "overdue", "other"] = Field(
        default="all", title="Charge category",
        description="all; lost fees only; overdue fines only (including fines still accumulating); "
                    "other charges/fees (everything but lost and overdue).")
    starting: date | None = Field(default=None, title="Transaction date starting",
                                  description="MM/DD/YYYY; blank forgives every past charge up to the ending date.")
    ending: date | None = Field(default=None, title="And ending",
                                description="MM/DD/YYYY; blank: no ending date.")

    @model_validator(mode="after")
    def _range(self) -> "ForgiveOptions":
        if self.starting and self.ending and self.starting > self.ending:
            raise ValueError("the transaction date range starts after it ends")
        return self


def open_charges(conn, ids: list[int], options: ForgiveOptions) -> list:
    """The charges the options take among these patrons: rows of
    (id, patron_id, balance_cents, accumulating), by patron then charge id."""
    where = [_OPEN, _CATEGORY_SQL[options.category], "c.patron_id IN (SELECT value FROM json_each(?))"]
    params: list = [json.dumps(list(ids))]
    if options.starting:
        where.append("substr(c.transaction_date, 1, 10) >= ?")
        params.append(options.starting.isoformat())
    if options.ending:
        where.append("substr(c.transaction_date, 1, 10) <= ?")
        params.append(options.ending.isoformat())
    return conn.execute(
        "SELECT c.id, c.patron_id, c.balance_cents, c.accumulating FROM charges c WHERE "
        + " AND ".join(f"({w})" for w in where) + " ORDER BY c.patron_id, c.id", params).fetchall()


@register
class ForgiveCharges(Utility):
    name = "forgive-charges"
    title = "Forgive Charges"
    description = "Forgives the selected patrons' charges, fees or fines of a category and transaction date range"
    Options = ForgiveOptions

    def plan(self, conn, ids, options: ForgiveOptions, operator) -> Plan:
        per: dict[int, list] = {}
        for row in open_charges(conn, ids, options):
            per.setdefault(row["patron_id"], []).append(row)
        changes, skipped, without = [], [], 0
        charge_ids: list[int] = []
        for r in patron_rows(conn, ids):
            mine = per.get(r["id"])
            if not mine:
                without += 1
                continue
            if r["is_system"]:
                skipped.append(skip(r, SYSTEM_REASON))
                continue
            total = sum(c["balance_cents"] for c in mine)
            growing = sum(1 for c in mine if c["accumulating"])
            n = len(mine)
            before = f"{n} charge{'' if n == 1 else 's'}, {money(total)}"
            if growing:
                before += f" ({growing} still accumulating)"
            changes.append(change(r, before, f"forgiven ({money(0)})"))
            charge_ids += [c["id"] for c in mine]
        cat = CATEGORY_TITLES[options.category]
        span = (f"transactions {options.starting.strftime('%m/%d/%Y') if options.starting else 'any time'}"
                f" to {options.ending.strftime('%m/%d/%Y') if options.ending else 'now'}")
        notes = [f"{cat}; {span}: {len(charge_ids)} open charges to forgive."]
        if without:
            notes.append(f"{without} selected patrons have no open charges of this category and dates.")
        return Plan(selected=len(ids), changes=changes, skipped=skipped, notes=notes, column="Open charges",
                    data={"charge_ids": charge_ids})

    def apply(self, writer: ChangesetWriter, plan: Plan, options: ForgiveOptions, ctx) -> None:
        stamp = {"balance_cents": 0, "accumulating": 0, "forgiven_at": writer.ts, "forgiven_by": writer.operator}
        writer.update_many("charges", [(cid, stamp) for cid in plan.data.get("charge_ids", [])])
