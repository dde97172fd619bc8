"""Inactivation and deletion after a Full update (the "Inactivation / Deletion" rules of a job).

`InactivationRules` holds a job's rules; `safeguard(...)` says whether they may run after an
import; `select(conn, rules, today, ...)` finds, for each rule, the patrons it takes today
(`preview` counts them); `apply_rules(writer, ...)` carries the outcome out through the
changeset writer and returns one `Outcome` per patron.

When the rules run (`safeguard`): only after a Full update that did not fail, with fewer than
100 skipped records, whose "patron records read" is greater than `records_read_greater_than`
(0 to 999,999; equal does not run), and, when `min_percent_of_previous` is set, whose records
read are at least that percentage of what the job's previous Full run read.

Which previous Full run (`previous_full`, issue 14 item 8): the last one whose rules RAN, not
merely the last one. A held run read a file nobody trusted (that is why it was held), so it must
not become the yardstick: after A read 500, B read 212 (held), C with 441 is 88% of A, held,
though it is 208% of B. Each job run records in its summary `inactivation.ran` (true/false) and
`inactivation.compared_with` (the run it compared with); a held run hands its yardstick on, so
the chain survives "delete previously run jobs" pruning the trusted run. A job none of whose
earlier Full runs ran its rules (the rules were just added) compares with the LARGEST earlier
complete Full run: none of them is known good, and a truncated file can only be smaller, so the
largest is the one a bad file cannot pass for. We chose "last that ran" over "the largest of
the recent ones" everywhere because a district that really shrinks (a school leaves) would then
stay held until the large run aged out, with no way to say "this smaller file is right"; with
"last that ran" one run accepted by a lower percentage (or threshold) becomes the new yardstick.

Who they may touch: patrons of the listed patron types, access levels and personas (an empty
list does not restrict); never a protected patron, never the Unknown Patron.

The rules, with `today` the server's date:
- inactivate Active patrons not updated in the past N days: the last import that delivered
  them (or, for a patron no import ever delivered, its creation) is MORE than N days before
  today. Status becomes Inactive, `inactive_since` today; optionally the homeroom is cleared
  ("undefined"); optionally the username is prefaced with ``Inactive-`` and the password removed;
- delete graduated seniors without transactions at the beginning of the new school year:
  grade 12 and a graduation year not after the year the current school year started in (it
  starts on the 1st of the district's "statistical year starts in" month): on 2021-10-15 with
  August, the 2021 school year has begun, so a senior of 2020 or 2021 goes, one of 2022 stays;
- delete patrons Inactive for N days (`inactive_since` at least N days before today) that have
  no checkouts and no fines / no checkouts and a fine balance below an amount / regardless of
  checkouts and fines;
- delete Inactive patrons with outstanding transactions where the record has been inactive for
  N days, or the graduation year was N or more years ago, or the patron has reached age N
  (`relativedelta`: a 29 February birthday counts on 28 February in other years); N is 0 to 99.
Deleting a patron with outstanding transactions (checkouts, or unpaid fines: a "fine balance
below" patron too) also needs the job option "allow patrons with outstanding transactions to be
deleted"; without it such a patron is kept, and the outcome says so ("kept_back"). A patron several rules take gets the strongest action (delete before
inactivate), named after the first rule that deletes it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron_tui.services.queries import school_year_start
from patron_tui.services.removal import delete_patrons, outstanding
from patron_tui.store.changeset import ChangesetWriter

MAX_SKIPPED = 100          # a Full update with this many skipped records or more runs no rule
RULES = ("inactivate", "delete_seniors", "delete_inactive", "delete_outstanding")
RULE_NAMES = {
    "inactivate": "Inactivate patrons not updated in the past {n} days",
    "delete_seniors": "Delete graduated seniors without transactions",
    "delete_inactive": "Delete patrons inactive for {n} days",
    "delete_outstanding": "Delete patrons with outstanding transactions",
}


class DeleteInactive(BaseModel):
    model_config = ConfigDict(frozen=True)
    days: int = Field(ge=0, le=99_999)
    condition: Literal["no_checkouts_no_fines", "fines_below", "regardless"] = "no_checkouts_no_fines"
    fine_below_cents: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _amount(self) -> DeleteInactive:
        if self.condition == "fines_below" and self.fine_below_cents is None:
            raise ValueError("fine_below_cents: the amount the fine balance must stay below is missing")
        return self


class DeleteOutstanding(BaseModel):
    model_config = ConfigDict(frozen=True)
    by: Literal["inactive_days", "grad_years", "age"]
    value: int = Field(ge=0, le=99)


class InactivationRules(BaseModel):
    """One job's Inactivation / Deletion section."""

    model_config = ConfigDict(frozen=True)

    records_read_greater_than: int = Field(default=0, ge=0, le=999_999)
    patron_types: tuple[str, ...] = ()
    access_levels: tuple[str, ...] = ()
    personas: tuple[str, ...] = ()
    inactivate_days: int | None = Field(default=None, ge=0, le=99_999)
    set_homeroom_undefined: bool = False
    preface_username: bool = False
    delete_graduated_seniors: bool = False
    delete_inactive: DeleteInactive | None = None
    delete_outstanding: DeleteOutstanding | None = None
    min_percent_of_previous: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def _exclusive(self) -> InactivationRules:
        if self.delete_outstanding is not None and self.delete_inactive is not None \
                and self.delete_inactive.condition == "regardless":
            raise ValueError("delete_outstanding: not with delete_inactive 'regardless' (that already "
                             "takes patrons with outstanding transactions)")
        return self

    @property
    def any_rule(self) -> bool:
        return (self.inactivate_days is not None or self.delete_graduated_seniors
                or self.delete_inactive is not None or self.delete_outstanding is not None)


def rule_title(rules: InactivationRules, rule: str) -> str:
    """A rule's name as the reference words it, with the job's number of days."""
    n = (rules.inactivate_days if rule == "inactivate"
         else rules.delete_inactive.days if rule == "delete_inactive" and rules.delete_inactive else "")
    return RULE_NAMES[rule].format(n=n)


@dataclass(frozen=True, slots=True)
class Outcome:
    patron_id: int
    name: str
    barcode: str | None
    rule: str              # one of RULES
    action: Literal["inactivated", "deleted", "kept_back"]
    reason: str


# -- when ----------------------------------------------------------------------------------

LAST_RAN = "the last Full update whose rules ran"
LARGEST = "the largest earlier Full update (none of this job's Full updates has run its rules yet)"


@dataclass(frozen=True, slots=True)
class Baseline:
    """The Full run the "% of the previous Full update" safeguard compares with."""

    run_id: int
    read: int
    date: str      # the day that run started, YYYY-MM-DD
    why: str       # LAST_RAN or LARGEST

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "read": self.read, "date": self.date, "why": self.why}

    @classmethod
    def from_dict(cls, d: object) -> Baseline | None:
        if not isinstance(d, dict):
            return None
        try:
            return cls(int(d["run_id"]), int(d["read"]), str(d.get("date") or "?"), str(d.get("why") or LAST_RAN))
        except (KeyError, TypeError, ValueError):
            return None

    def text(self) -> str:
        """E.g. 'the 500 read by run 12 on 2026-12-01, the last Full update whose rules ran'."""
        return f"the {self.read:,} read by run {self.run_id} on {self.date}, {self.why}"


def _rules_ran(inactivation: dict) -> bool:
    if "ran" in inactivation:
        return inactivation["ran"] is True
    # a summary written before `ran` existed: counts were recorded only when the rules ran
    return "inactivated" in inactivation and not inactivation.get("held")


def previous_full(conn, job_id: int, before_run_id: int) -> Baseline | None:
    """The Full run of job `job_id` (before run `before_run_id`) that the percentage safeguard
    compares with (see the module doc): the newest succeeded, not dry-run Full run whose rules
    ran, or the yardstick the newest held one recorded; failing both, the largest such run."""
    rows = conn.execute(
        "SELECT id, substr(coalesce(started_at, created_at), 1, 10), json_extract(summary, '$.read'),"
        " json_extract(summary, '$.inactivation') FROM runs WHERE job_id = ? AND id < ?"
        " AND status = 'succeeded' AND json_extract(summary, '$.mode') = 'full'"
        " AND coalesce(json_extract(summary, '$.dry_run'), 0) = 0 ORDER BY id DESC",
        (job_id, before_run_id)).fetchall()
    complete: list[Baseline] = []
    for run_id, day, read, raw in rows:
        if read is None:
            continue
        try:
            inactivation = json.loads(raw) if raw else {}
        except ValueError:
            inactivation = {}
        inactivation = inactivation if isinstance(inactivation, dict) else {}
        if _rules_ran(inactivation):
            return Baseline(int(run_id), int(read), day or "?", LAST_RAN)
        carried = Baseline.from_dict(inactivation.get("compared_with"))
        if carried is not None:
            return carried
        complete.append(Baseline(int(run_id), int(read), day or "?", LARGEST))
    return max(complete, key=lambda b: (b.read, b.run_id), default=None)


def safeguard(rules: InactivationRules, *, mode: str, status: str, read: int, skipped: int,
              previous_full_read: int | None = None, previous: Baseline | None = None) -> str | None:
    """None when the rules may run after this import, else the sentence saying which
    safeguard held them back. `previous` (see `previous_full`) names the run compared with;
    `previous_full_read` is its count alone, for callers without a run."""
    if not rules.any_rule:
        return "no inactivation or deletion rule is set"
    if mode != "full":
        return "the rules run only after a Full update; this was Incremental"
    if status != "succeeded":
        return f"the update did not succeed ({status}); no patron was inactivated or deleted"
    if skipped >= MAX_SKIPPED:
        return f"{skipped:,} records were skipped (the rules need fewer than {MAX_SKIPPED})"
    if read <= rules.records_read_greater_than:
        return (f"{read:,} patron records were read, not more than the job's threshold of "
                f"{rules.records_read_greater_than:,}: the file may be incomplete")
    if rules.min_percent_of_previous and previous is not None and previous.read:
        if read < previous.read * rules.min_percent_of_previous / 100:
            return (f"{read:,} records read is {read * 100 // previous.read}% of {previous.text()}; the job "
                    f"needs at least {rules.min_percent_of_previous}%: the file may be incomplete")
    elif rules.min_percent_of_previous and previous_full_read:
        need = previous_full_read * rules.min_percent_of_previous / 100
        if read < need:
            return (f"{read:,} records read is less than {rules.min_percent_of_previous}% of the "
                    f"{previous_full_read:,} the previous Full update read: the file may be incomplete")
    return None


# -- who ----------------------------------------------------------------------------------

def _scope(rules: InactivationRules) -> tuple[str, list]:
    where = ["p.is_system = 0", "p.protected = 0"]
    params: list = []
    for col, values in (("patron_type", rules.patron_types), ("access_level", rules.access_levels),
                        ("persona", rules.personas)):
        if values:
            where.append(f"p.{col} IN ({', '.join('?' * len(values))})")
            params += list(values)
    return " AND ".join(where), params


_BALANCE = ("(SELECT coalesce(sum(c.balance_cents), 0) FROM charges c WHERE c.patron_id = p.id"
            " AND c.forgiven_at IS NULL AND c.balance_cents > 0)")
_CHECKOUTS = "EXISTS (SELECT 1 FROM checkouts k WHERE k.patron_id = p.id)"
_ROW = ("p.id, p.last_name, p.first_name, p.barcode, p.grade, p.graduation_year, p.birthdate, "
        f"p.inactive_since, {_CHECKOUTS} AS has_checkouts, {_BALANCE} AS balance")


def _start_month(conn) -> int:
    row = conn.execute("SELECT value FROM settings WHERE key = 'statistical_year_start_month'").fetchone()
    try:
        month = int(row[0]) if row else 8
    except (TypeError, ValueError):
        month = 8
    return month if 1 <= month <= 12 else 8


def select(conn, rules: InactivationRules, today: dt.date, *, allow_outstanding: bool
           ) -> dict[str, list[tuple]]:
    """For each rule that is set, the patrons it takes today: rows of
    (id, name, barcode, action, reason)."""
    scope, params = _scope(rules)
    out: dict[str, list[tuple]] = {}

    def rows(extra: str, args: Iterable = ()) -> list:
        return conn.execute(f"SELECT {_ROW} FROM patrons p WHERE {scope} AND {extra} ORDER BY p.id",
                            [*params, *args]).fetchall()

    def name(r) -> str:
        return ", ".join(x for x in (r[1], r[2]) if x) or "(no name)"

    if rules.inactivate_days is not None:
        cutoff = (today - dt.timedelta(days=rules.inactivate_days)).isoformat()
        out["inactivate"] = [
            (r[0], name(r), r[3], "inactivated", f"not updated by an import since {when[:10]}")
            for r in conn.execute(
                f"SELECT {_ROW}, coalesce(p.last_seen_import_at, p.created_at) AS seen FROM patrons p"
                f" WHERE {scope} AND p.status = 'Active'"
                " AND substr(coalesce(p.last_seen_import_at, p.created_at), 1, 10) < ? ORDER BY p.id",
                [*params, cutoff]).fetchall()
            for when in (r[10],)
        ]
    if rules.delete_graduated_seniors:
        start = school_year_start(today, _start_month(conn))
        out["delete_seniors"] = [
            (r[0], name(r), r[3], "deleted",
             f"grade 12, graduation year {r[5]}: the {start.year} school year began on {start.isoformat()}")
            for r in rows("p.grade = '12' AND p.graduation_year IS NOT NULL AND p.graduation_year <= ?",
                          [start.year])
            if not r[8] and not r[9]
        ]
    if rules.delete_inactive is not None:
        rule = rules.delete_inactive
        cutoff = (today - dt.timedelta(days=rule.days)).isoformat()
        taken = []
        for r in rows("p.status = 'Inactive' AND p.inactive_since IS NOT NULL"
                      " AND substr(p.inactive_since, 1, 10) <= ?", [cutoff]):
            since = f"inactive since {r[7][:10]}"
            busy = bool(r[8] or r[9])
            if rule.condition == "no_checkouts_no_fines":
                if not busy:
                    taken.append((r[0], name(r), r[3], "deleted", f"{since}, no checkouts, no fines"))
            else:
                if rule.condition == "fines_below":
                    if r[8] or r[9] >= (rule.fine_below_cents or 0):
                        continue
                    why = (f"{since}, no checkouts, fines {r[9] / 100:.2f} below "
                           f"{(rule.fine_below_cents or 0) / 100:.2f}")
                else:
                    why = f"{since}, regardless of checkouts and fines"
                action = "deleted" if not busy or allow_outstanding else "kept_back"
                if action == "kept_back":
                    why += ("; kept: it has outstanding transactions and the job does not allow "
                            "deleting such patrons")
                taken.append((r[0], name(r), r[3], action, why))
        out["delete_inactive"] = taken
    if rules.delete_outstanding is not None:
        rule2 = rules.delete_outstanding
        taken = []
        for r in rows(f"p.status = 'Inactive' AND ({_CHECKOUTS} OR {_BALANCE} > 0)"):
            why = None
            if rule2.by == "inactive_days":
                if r[7] and dt.date.fromisoformat(r[7][:10]) <= today - dt.timedelta(days=rule2.value):
                    why = f"inactive since {r[7][:10]} ({rule2.value} days or more)"
            elif rule2.by == "grad_years":
                if r[5] is not None and r[5] <= today.year - rule2.value:
                    why = f"graduation year {r[5]}, {rule2.value} or more years ago"
            else:
                born = _date(r[6])
                if born is not None and born + relativedelta(years=rule2.value) <= today:
                    why = f"born {born.isoformat()}: has reached age {rule2.value}"
            if why is None:
                continue
            why += ", with outstanding transactions"
            if allow_outstanding:
                taken.append((r[0], name(r), r[3], "deleted", why))
            else:
                taken.append((r[0], name(r), r[3], "kept_back",
                              why + "; kept: the job does not allow deleting such patrons"))
        out["delete_outstanding"] = taken
    return out


def _date(text) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(text)[:10]) if text else None
    except ValueError:
        return None


def preview(conn, rules: InactivationRules, today: dt.date, *, allow_outstanding: bool) -> dict[str, dict[str, int]]:
    """Per rule: how many patrons it would inactivate / delete / keep back today."""
    counts: dict[str, dict[str, int]] = {}
    for rule, taken in select(conn, rules, today, allow_outstanding=allow_outstanding).items():
        c = counts.setdefault(rule, {"inactivated": 0, "deleted": 0, "kept_back": 0})
        for *_, action, _why in taken:
            c[action] += 1
    return counts


# -- do -----------------------------------------------------------------------------------

def apply_rules(writer: ChangesetWriter, rules: InactivationRules, today: dt.date, *,
                allow_outstanding: bool) -> list[Outcome]:
    """Carry today's outcome out through the writer (one transaction: the caller's); one
    Outcome per patron touched or kept back."""
    conn = writer.conn
    decided: dict[int, Outcome] = {}
    for rule, taken in select(conn, rules, today, allow_outstanding=allow_outstanding).items():
        for pid, name, barcode, action, why in taken:
            prev = decided.get(pid)
            rank = {"deleted": 2, "kept_back": 1, "inactivated": 0}
            if prev is None or rank[action] > rank[prev.action]:
                decided[pid] = Outcome(pid, name, barcode, rule, action, why)
    inactivate = [o.patron_id for o in decided.values() if o.action == "inactivated"]
    if inactivate:
        stamp = writer.ts
        changes = []
        rows = conn.execute("SELECT id, username FROM patrons WHERE id IN (SELECT value FROM json_each(?))",
                            (_json(inactivate),)).fetchall()
        for pid, username in rows:
            change: dict = {"status": "Inactive", "inactive_since": stamp, "updated_at": stamp}
            if rules.set_homeroom_undefined:
                change["homeroom"] = ""
            if rules.preface_username:
                change["password_hash"] = None
                if username and not username.startswith("Inactive-"):
                    change["username"] = "Inactive-" + username
            changes.append((pid, change))
        writer.update_many("patrons", changes)
    doomed = [o.patron_id for o in decided.values() if o.action == "deleted"]
    busy = outstanding(conn, doomed) if doomed else set()
    if busy and not allow_outstanding:   # select() keeps such patrons back; never delete one here
        raise AssertionError("a patron with outstanding transactions was chosen for deletion")
    delete_patrons(writer, [p for p in doomed if p not in busy])
    delete_patrons(writer, sorted(busy), with_transactions=True)
    return sorted(decided.values(), key=lambda o: (o.rule, o.patron_id))


def _json(ids: list[int]) -> str:
    return json.dumps(ids)


__all__ = [
    "Baseline", "DeleteInactive", "DeleteOutstanding", "InactivationRules", "LARGEST", "LAST_RAN", "MAX_SKIPPED",
    "Outcome", "RULES", "RULE_NAMES", "apply_rules", "preview", "previous_full", "rule_title", "safeguard",
    "select",
]
