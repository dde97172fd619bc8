"""The job form's fourth section: Inactivation / Deletion (Destiny's step 9), with a live
preview of how many patrons each rule would take today.

`rules_section(rules)` yields the section's widgets (ids start with ``rule-``) for the job
form to mount; `read_rules(screen)` reads them back as the `inactivation` field of a job (a
dict the job model validates: its errors come back under the section); `RulesPreview`
counts, on a worker thread, what each rule would do today over the real data
(`services.inactivation.preview`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Checkbox, Input, Label, Select, Static

from patron_tui.services.inactivation import InactivationRules, rule_title
from patron_tui.ui.screens.import_run import MarkedCheckbox

DELETE_INACTIVE_CHOICES = [
    ("and have no checkouts and no fines", "no_checkouts_no_fines"),
    ("no checkouts, fine balance less than", "fines_below"),
    ("regardless of checkouts and fines", "regardless"),
]
OUTSTANDING_CHOICES = [
    ("the record has been inactive for (days)", "inactive_days"),
    ("the Grad Year value was (years ago)", "grad_years"),
    ("the patron has reached age", "age"),
]
RULES_CSS = """
JobFormScreen .rule-row { height: 1; }
JobFormScreen .rule-row > Label { width: 16; }
JobFormScreen .rule-row > Input { width: 10; }
JobFormScreen .rule-row > Input.-wide { width: 1fr; }
JobFormScreen .rule-row > Select { width: 1fr; }
JobFormScreen .rule-row > Checkbox { width: auto; }
JobFormScreen .rule-row > .rule-unit { width: auto; padding: 0 1; color: $foreground-muted; }
JobFormScreen #rule-preview { height: auto; padding: 0 0 0 2; color: $foreground; }
"""


def _digits(value: Any) -> str:
    return "" if value is None else str(value)


def _row(label: str, *widgets) -> Horizontal:
    return Horizontal(Label(Content(label)), *widgets, classes="rule-row")


def _unit(text: str) -> Label:
    return Label(Content(text), classes="rule-unit")


def rules_section(rules: InactivationRules | None):
    """The section's widgets, filled from `rules` (None: a new job, every rule off)."""
    r = rules or InactivationRules()
    di, do = r.delete_inactive, r.delete_outstanding
    yield Static(Content("Inactivation / Deletion (after a Full update)"), classes="form-section")
    yield _row("Runs when read >", Input(value=_digits(r.records_read_greater_than), id="rule-threshold",
                                         compact=True, restrict=r"[0-9]*", max_length=6),
               _unit("records (0-999,999), fewer than 100 skipped"))
    yield _row("and at least", Input(value=_digits(r.min_percent_of_previous), id="rule-percent", compact=True,
                                     restrict=r"[0-9]*", max_length=3, placeholder="off"),
               _unit("% of last Full whose rules ran (blank: off; 90 advised)"))
    yield _row("Patron types", Input(value=", ".join(r.patron_types), id="rule-types", compact=True,
                                     placeholder="all (or: Student, Guest)", classes="-wide"))
    yield _row("Access levels", Input(value=", ".join(r.access_levels), id="rule-levels", compact=True,
                                      placeholder="all", classes="-wide"))
    yield _row("Personas", Input(value=", ".join(r.personas), id="rule-personas", compact=True,
                                 placeholder="all", classes="-wide"))
    yield Static(Content("Active patrons"), classes="field-hint")
    yield _row("", MarkedCheckbox(Content("Inactivate if not updated in the past"),
                                  value=r.inactivate_days is not None, id="rule-inactivate", compact=True),
               Input(value=_digits(r.inactivate_days), id="rule-inactivate-days", compact=True,
                     restrict=r"[0-9]*", max_length=5), _unit("days"))
    yield _row("", MarkedCheckbox(Content("… and set the Homeroom to undefined"), value=r.set_homeroom_undefined,
                                  id="rule-homeroom", compact=True))
    yield _row("", MarkedCheckbox(Content('… and preface Username with "Inactive-", remove the Password'),
                                  value=r.preface_username, id="rule-username", compact=True))
    yield _row("", MarkedCheckbox(Content("Delete graduated seniors without transactions (new school year)"),
                                  value=r.delete_graduated_seniors, id="rule-seniors", compact=True))
    yield Static(Content("Inactive patrons"), classes="field-hint")
    yield _row("", MarkedCheckbox(Content("Delete if inactive for"), value=di is not None,
                                  id="rule-delete-inactive", compact=True),
               Input(value=_digits(di.days if di else None), id="rule-inactive-days", compact=True,
                     restrict=r"[0-9]*", max_length=5), _unit("days"))
    yield _row("", Select(DELETE_INACTIVE_CHOICES, value=di.condition if di else "no_checkouts_no_fines",
                          allow_blank=False, id="rule-inactive-how", compact=True),
               Input(value="" if not di or di.fine_below_cents is None else f"{di.fine_below_cents / 100:.2f}",
                     id="rule-fine-below", compact=True, restrict=r"[0-9.]*", max_length=9, placeholder="0.00"))
    yield _row("", MarkedCheckbox(Content("Delete with outstanding transactions where"), value=do is not None,
                                  id="rule-delete-outstanding", compact=True))
    yield _row("", Select(OUTSTANDING_CHOICES, value=do.by if do else "inactive_days", allow_blank=False,
                          id="rule-outstanding-by", compact=True),
               Input(value=_digits(do.value if do else None), id="rule-outstanding-value", compact=True,
                     restrict=r"[0-9]*", max_length=2, placeholder="0-99"))
    yield Static(Content(""), id="err-inactivation", classes="field-error")
    yield Static(Content("Preview: counting…"), id="rule-preview")


def _int_or_text(text: str) -> int | str:
    text = text.strip()
    return int(text) if text.isdigit() else text


def read_rules(screen) -> dict[str, Any]:
    """The section's values as the job's `inactivation` field (validated by the job model)."""
    def value(wid: str) -> str:
        return screen.query_one(f"#{wid}", Input).value

    def checked(wid: str) -> bool:
        return screen.query_one(f"#{wid}", Checkbox).value

    def chosen(wid: str) -> str:
        return str(screen.query_one(f"#{wid}", Select).value)

    def codes(wid: str) -> list[str]:
        return [c.strip() for c in value(wid).split(",") if c.strip()]

    rules: dict[str, Any] = {
        "records_read_greater_than": _int_or_text(value("rule-threshold") or "0"),
        "min_percent_of_previous": _int_or_text(value("rule-percent")) if value("rule-percent").strip() else None,
        "patron_types": codes("rule-types"), "access_levels": codes("rule-levels"),
        "personas": codes("rule-personas"),
        "inactivate_days": _int_or_text(value("rule-inactivate-days")) if checked("rule-inactivate") else None,
        "set_homeroom_undefined": checked("rule-homeroom"),
        "preface_username": checked("rule-username"),
        "delete_graduated_seniors": checked("rule-seniors"),
        "delete_inactive": None, "delete_outstanding": None,
    }
    if checked("rule-delete-inactive"):
        how = chosen("rule-inactive-how")
        rule: dict[str, Any] = {"days": _int_or_text(value("rule-inactive-days")), "condition": how}
        if how == "fines_below":
            amount = value("rule-fine-below").strip()
            try:
                rule["fine_below_cents"] = round(float(amount) * 100) if amount else None
            except ValueError:
                rule["fine_below_cents"] = amount
        rules["delete_inactive"] = rule
    if checked("rule-delete-outstanding"):
        rules["delete_outstanding"] = {"by": chosen("rule-outstanding-by"),
                                       "value": _int_or_text(value("rule-outstanding-value"))}
    return rules


def preview_text(counts: dict[str, dict[str, int]], rules: InactivationRules, today: dt.date) -> str:
    """One line per rule: what it would do today."""
    if not counts:
        return "Preview: no rule is set; a Full update inactivates and deletes nobody."
    lines = [f"Preview, as of {today.isoformat()} (before tonight's file):"]
    for rule, c in counts.items():
        parts = [f"{v:,} {k.replace('_', ' ')}" for k, v in c.items() if v] or ["nobody"]
        lines.append(f"  {rule_title(rules, rule)}: {', '.join(parts)}")
    return "\n".join(lines)


__all__ = ["RULES_CSS", "preview_text", "read_rules", "rules_section"]
