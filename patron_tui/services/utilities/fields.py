"""Field utilities: change one patron field (grade, location, policy, status, site, ...) of
the selected patrons, and Recompute Due Dates.

Rules every one of them keeps:
- the Unknown Patron (the system patron) is always skipped;
- a patron already at the target value is unchanged: skipped with the reason "already X";
- `plan()` reads the selected rows once; `apply()` writes the planned changes with one
  `update_many` (grouped, set-based), stamping `updated_at`.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from patron_tui.services.permissions import (
    PermissionDenied, group_level, operator_level, patron_level_refusal, require_may_assign_group,
)
from patron_tui.services.utilities.base import (
    SYSTEM_REASON, Change, Plan, Utility, UtilityError, change, patron_rows, register, set_rows, skip,
)
from patron_tui.services.utilities.terms import Terms
from patron_tui.store import ChangesetWriter

__all__ = [
    "AdvancePatronGrade", "AdvanceAllGrades", "ChangePatronGrade", "ChangePatronLocation",
    "ChangePatronLocation2", "ChangePatronPolicy", "RecomputeDueDates", "ChangePatronSecurityGroup",
    "ChangePatronStatus", "MovePatronsToSite", "ReassignUnionSitePatrons", "POLICY_NOTE",
]

POLICY_NOTE = ("Due dates of current loans do not change with a new policy: run Recompute Due Dates "
               "after this utility to set them from the patrons' policies.")


def _shown(value: str) -> str:
    return value if value else "blank"


def _setting_on(conn: sqlite3.Connection, key: str) -> bool:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return row is not None and str(row[0]).strip().lower() in ("on", "1", "true", "yes")


def _union_site(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT code FROM sites WHERE is_union = 1").fetchone()
    return row[0] if row else None


class _SetColumn(Utility):
    """Set one patrons column to one value (the option's) on every selected patron."""

    column: ClassVar[str]
    label: ClassVar[str]          # the column header, may use terms: "{grade}"

    def target(self, conn: sqlite3.Connection, options: Any) -> str:
        raise NotImplementedError

    def refuse(self, row: sqlite3.Row, context: dict[str, Any]) -> str | None:
        """Why this patron is skipped (before the "already" test), or None."""
        return None

    def context(self, conn: sqlite3.Connection, options: Any, operator: str) -> dict[str, Any]:
        return {}

    def plan(self, conn: sqlite3.Connection, ids: list[int], options: Any, operator: str) -> Plan:
        new = self.target(conn, options)
        ctx = self.context(conn, options, operator)
        ctx["terms"] = Terms.load(conn)
        plan = Plan(selected=len(ids), column=self.label)
        for row in patron_rows(conn, ids, [self.column]):
            if row["is_system"]:
                plan.skipped.append(skip(row, SYSTEM_REASON))
            elif (why := self.refuse(row, ctx)) is not None:
                plan.skipped.append(skip(row, why))
            elif row[self.column] == new:
                plan.skipped.append(skip(row, f"already {_shown(new)}"))
            else:
                plan.changes.append(change(row, row[self.column], new))
        return plan

    def extra_changes(self, c: Change, writer: ChangesetWriter) -> dict[str, Any]:
        """Other columns that change with this one (hashable values); {} for none."""
        return {}

    def apply(self, writer: ChangesetWriter, plan: Plan, options: Any, ctx: Any) -> None:
        # every change sets the same value: one set-based update per shape of extra columns
        groups: dict[tuple, list[int]] = {}
        for c in plan.changes:
            extra = self.extra_changes(c, writer)
            groups.setdefault((c.after, *sorted(extra.items())), []).append(c.patron_id)
        for (after, *extra), ids in groups.items():
            set_rows(writer, "patrons", ids, {self.column: after, **dict(extra), "updated_at": writer.ts})


# -- grades ----------------------------------------------------------------------------------------

def _grade_table(conn: sqlite3.Connection) -> list[tuple[str, bool]]:
    return [(r[0], bool(r[1])) for r in conn.execute("SELECT code, is_last FROM grades ORDER BY position")]


class _Advance(Utility):
    """Move patrons to the next grade of the grade table; the last grade stays."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def plan(self, conn: sqlite3.Connection, ids: list[int], options: Any, operator: str) -> Plan:
        terms = Terms.load(conn)
        table = _grade_table(conn)
        index = {code: i for i, (code, _) in enumerate(table)}
        folded = {code.casefold(): i for i, (code, _) in reversed(list(enumerate(table)))}
        last = next((i for i, (_, is_last) in enumerate(table) if is_last), len(table) - 1)
        plan = Plan(selected=len(ids), column="{grade}", notes=[
            "If policies are named after {grade}s, change them with Change Patron Policy after this utility."])
        for row in patron_rows(conn, ids, ["grade"]):
            grade = row["grade"]
            if row["is_system"]:
                plan.skipped.append(skip(row, SYSTEM_REASON))
                continue
            if not grade:
                plan.skipped.append(skip(row, f"has no {terms.grade}"))
                continue
            i = index.get(grade, folded.get(grade.casefold()))
            if i is None:
                plan.skipped.append(skip(row, f"{terms.grade} {grade!r} is not in the {terms.grade} table"))
            elif i >= last:
                plan.skipped.append(skip(row, f"already in the last {terms.grade} ({table[i][0]}): stays"))
            else:
                plan.changes.append(change(row, grade, table[i + 1][0]))
        return plan

    def apply(self, writer: ChangesetWriter, plan: Plan, options: Any, ctx: Any) -> None:
        writer.update_many("patrons", ((c.patron_id, {"grade": c.after, "updated_at": writer.ts})
                                       for c in plan.changes))


@register
class AdvancePatronGrade(_Advance):
    name = "advance-patron-grade"
    title = "Advance Patron {grade}"
    description = "Moves the selected patrons to the next {grade} of the {grade} table; the last {grade} stays"


@register
class AdvanceAllGrades(_Advance):
    name = "advance-all-grades"
    title = "Advance All {grade}s"
    description = "Moves every patron to the next {grade} of the {grade} table at once; the last {grade} stays"
    needs_selection = False


@register
class ChangePatronGrade(_SetColumn):
    name = "change-patron-grade"
    title = "Change Patron {grade}"
    description = "Changes the {grade} of the selected patrons to the {grade} given"
    column = "grade"
    label = "{grade}"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        new_grade: str = Field(title="Change {grade} to", description="a {grade} of the {grade} table",
                               min_length=1, json_schema_extra={"choices": "grades"})

    def target(self, conn, options) -> str:
        return options.new_grade


# -- locations --------------------------------------------------------------------------------------

@register
class ChangePatronLocation(_SetColumn):
    name = "change-patron-location"
    title = "Change Patron {location}"
    description = "Changes the {location} of the selected patrons to the {location} given"
    column = "homeroom"
    label = "{location}"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        new_location: str = Field(title="Change {location} to", min_length=1, max_length=100,
                                  description="the new {location}",
                                  json_schema_extra={"choices": "homerooms"})

    def check(self, conn, operator, options) -> None:
        if not options.new_location.strip():
            raise UtilityError(Terms.load(conn).apply("Change {location} to: give the new {location}."))

    def target(self, conn, options) -> str:
        return options.new_location.strip()


@register
class ChangePatronLocation2(_SetColumn):
    name = "change-patron-2nd-location"
    title = "Change Patron {location2}"
    description = "Changes or adds the {location2} of the selected patrons; blank removes it"
    column = "location2"
    label = "{location2}"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        new_location2: str = Field(default="", title="Change {location2} to", max_length=100,
                                   description="blank removes the current {location2}")

    def target(self, conn, options) -> str:
        return options.new_location2.strip()


# -- policy and due dates ----------------------------------------------------------------------------

@register
class ChangePatronPolicy(_SetColumn):
    name = "change-patron-policy"
    title = "Change Patron Policy"
    description = "Changes the policy of the selected patrons to the policy given"
    column = "policy"
    label = "Policy"
    follow_up = "recompute-due-dates"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        new_policy: str = Field(title="Change Policy to", min_length=1, json_schema_extra={"choices": "policies"})

    def target(self, conn, options) -> str:
        return options.new_policy

    def plan(self, conn, ids, options, operator) -> Plan:
        plan = super().plan(conn, ids, options, operator)
        plan.notes.append(POLICY_NOTE)
        if plan.changes:
            loans = conn.execute(
                "SELECT count(*) FROM checkouts WHERE patron_id IN (SELECT value FROM json_each(?))",
                (f"[{','.join(str(c.patron_id) for c in plan.changes)}]",)).fetchone()[0]
            if loans:
                plan.notes.append(f"{loans} current loan{'s' if loans != 1 else ''} of these patrons keep "
                                  "their due dates until Recompute Due Dates runs.")
        return plan


def _due(checked_out_at: str, old_due: str, loan_days: int) -> str | None:
    try:
        start = date.fromisoformat(checked_out_at[:10])
    except (TypeError, ValueError):
        return None
    suffix = old_due[10:] if old_due and len(old_due) > 10 else "T23:59:59.000000Z"
    return (start + timedelta(days=loan_days)).isoformat() + suffix


@register
class RecomputeDueDates(Utility):
    name = "recompute-due-dates"
    title = "Recompute Due Dates"
    description = ("Sets the due date of the selected patrons' current loans from their policies "
                   "(checked out + the policy's loan days)")

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def plan(self, conn, ids, options, operator) -> Plan:
        plan = Plan(selected=len(ids), column="Due date")
        loans: dict[int, list[sqlite3.Row]] = {}
        for k in conn.execute(
                "SELECT k.id, k.patron_id, k.item_barcode, k.checked_out_at, k.due_at FROM checkouts k"
                " WHERE k.patron_id IN (SELECT value FROM json_each(?)) ORDER BY k.patron_id, k.id",
                (f"[{','.join(map(str, ids))}]",)):
            loans.setdefault(k["patron_id"], []).append(k)
        days = {r[0]: r[1] for r in conn.execute("SELECT code, loan_days FROM policies")}
        without = 0
        for row in patron_rows(conn, ids, ["policy"]):
            if row["is_system"]:
                plan.skipped.append(skip(row, SYSTEM_REASON))
                continue
            mine = loans.get(row["id"], [])
            if not mine:
                without += 1
                continue
            loan_days = days.get(row["policy"])
            if loan_days is None:
                plan.skipped.append(skip(row, f"policy {row['policy']!r} is not in the policy table: "
                                              "its loans keep their due dates"))
                continue
            moved = bad = 0
            for k in mine:
                new = _due(k["checked_out_at"], k["due_at"], loan_days)
                if new is None:
                    bad += 1
                    plan.skipped.append(skip(row, f"item {k['item_barcode']}: checkout date "
                                                  f"{k['checked_out_at']!r} is not a date; due date kept"))
                elif new != k["due_at"]:
                    plan.changes.append(change(row, k["due_at"], new, row_id=k["id"]))
                    moved += 1
            if not moved and not bad:
                plan.skipped.append(skip(row, f"already due as policy {row['policy']} says ({loan_days} days)"))
        if without:
            plan.notes.append(f"{without} selected patron{'s have' if without != 1 else ' has'} no current loans.")
        return plan

    def apply(self, writer, plan, options, ctx) -> None:
        writer.update_many("checkouts", ((c.row_id, {"due_at": c.after}) for c in plan.changes))


# -- security group -----------------------------------------------------------------------------------

@register
class ChangePatronSecurityGroup(_SetColumn):
    name = "change-patron-security-group"
    title = "Change Patron Security Group"
    description = ("Changes the security group of the selected patrons; only groups with a higher "
                   "security level number than the operator's (except level 0)")
    column = "security_group"
    label = "Security group"
    checks_levels = True   # refuse() below: the current group's level, per patron

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        new_security_group: str = Field(title="New Security Group", min_length=1,
                                        json_schema_extra={"choices": "security_groups"})

    def target(self, conn, options) -> str:
        return options.new_security_group

    def check(self, conn, operator, options) -> None:
        require_may_assign_group(conn, operator, options.new_security_group)

    def context(self, conn, options, operator) -> dict[str, Any]:
        levels = {r[0]: r[1] for r in conn.execute("SELECT code, security_level FROM security_groups")}
        level = operator_level(conn, operator)
        if level is None:
            raise PermissionDenied(f"Operator {operator!r} is not in the operators table.")
        return {"levels": levels, "operator_level": level}

    def refuse(self, row, context) -> str | None:
        current = row["security_group"]
        return patron_level_refusal(context["operator_level"], current, context["levels"].get(current))


# -- status ---------------------------------------------------------------------------------------------

@register
class ChangePatronStatus(_SetColumn):
    """Inactive patrons get `inactive_since` (the inactivation rules count from it); patrons
    changed from Inactive to another status lose it."""

    name = "change-patron-status"
    title = "Change Patron Status"
    description = "Changes the status of the selected patrons to the status given"
    column = "status"
    label = "Status"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        new_status: str = Field(title="Change Status to", min_length=1, json_schema_extra={"choices": "statuses"})

    def target(self, conn, options) -> str:
        return options.new_status

    def extra_changes(self, c: Change, writer: ChangesetWriter) -> dict[str, Any]:
        if c.after == "Inactive":
            return {"inactive_since": writer.ts}
        if c.before == "Inactive":
            return {"inactive_since": None}
        return {}


# -- sites ------------------------------------------------------------------------------------------------

class _SiteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    new_site: str = Field(title="New Site", min_length=1, description="not the Union Site",
                          json_schema_extra={"choices": "target_sites"})


class _ToSite(_SetColumn):
    column = "site"
    label = "Site"
    Options = _SiteOptions

    def target(self, conn, options) -> str:
        return options.new_site

    def check(self, conn, operator, options) -> None:
        if options.new_site == _union_site(conn):
            raise UtilityError("New Site: the Union Site is not a target; choose the site the patrons belong to.")


@register
class MovePatronsToSite(_ToSite):
    name = "move-patrons-to-site"
    title = "Move Patrons to Site"
    description = "Moves the selected patrons from their current site to the site given (centralized catalog)"

    def available(self, conn) -> str | None:
        if not _setting_on(conn, "centralized_catalog"):
            return ("Move Patrons to Site is only available with a centralized catalog "
                    "(the centralized_catalog setting is off).")
        return None


@register
class ReassignUnionSitePatrons(_ToSite):
    name = "reassign-union-site-patrons"
    title = "Reassign Union Site Patrons"
    description = "Assigns the selected patrons who are at the Union Site to the site given"

    def context(self, conn, options, operator) -> dict[str, Any]:
        return {"union": _union_site(conn)}

    def refuse(self, row, context) -> str | None:
        if row["site"] != context["union"]:
            return f"not at the Union Site (at {row['site']})"
        return None
