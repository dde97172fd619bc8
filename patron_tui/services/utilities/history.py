"""Remove Patron History and Remove Patron Pictures.

History: everything but Lexile history goes from the selected patrons' histories (payments,
renewals, lost items, refunds, returned items); Lexile entries stay. Pictures: the picture is
cleared. Patrons with nothing to remove are left alone (counted in a note, not skipped).
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from patron_tui.services.utilities.base import (
    SYSTEM_REASON, Plan, Utility, change, patron_rows, register, skip,
)
from patron_tui.store import ChangesetWriter

_KIND_WORDS = {"payment": "payment", "renewal": "renewal", "lost": "lost item", "refund": "refund",
               "return": "return"}


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


class NoOptions(BaseModel):
    """This utility has no options."""


@register
class RemovePatronHistory(Utility):
    name = "remove-patron-history"
    title = "Remove Patron History"
    description = "Removes everything but Lexile history from the selected patrons' histories"
    Options = NoOptions
    removes_data = True

    def plan(self, conn, ids, options, operator) -> Plan:
        rows = patron_rows(conn, ids)
        kinds: dict[int, dict[str, int]] = {}
        for pid, kind, n in conn.execute(
                "SELECT patron_id, kind, count(*) FROM patron_history"
                " WHERE patron_id IN (SELECT value FROM json_each(?)) GROUP BY patron_id, kind ORDER BY kind",
                (json.dumps(list(ids)),)):
            kinds.setdefault(pid, {})[kind] = n
        changes, skipped, without = [], [], 0
        for r in rows:
            k = kinds.get(r["id"], {})
            gone = {kind: n for kind, n in k.items() if kind != "lexile"}
            if r["is_system"]:
                if gone:
                    skipped.append(skip(r, SYSTEM_REASON))
                continue
            if not gone:
                without += 1
                continue
            before = ", ".join(f"{n} {_KIND_WORDS.get(kind, kind)}{'' if n == 1 else 's'}"
                               for kind, n in gone.items())
            lexile = k.get("lexile", 0)
            after = f"Lexile history only ({_entries(lexile)})" if lexile else "none"
            changes.append(change(r, before, after))
        notes = [f"{without} selected patrons have no history but Lexile history: nothing to remove."] \
            if without else []
        return Plan(selected=len(ids), changes=changes, skipped=skipped, notes=notes, column="Patron history")

    def apply(self, writer: ChangesetWriter, plan: Plan, options, ctx) -> None:
        ids = [c.patron_id for c in plan.changes]
        if ids:
            writer.delete_many("patron_history", [r[0] for r in writer.conn.execute(
                "SELECT id FROM patron_history WHERE kind <> 'lexile'"
                " AND patron_id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))])


@register
class RemovePatronPictures(Utility):
    name = "remove-patron-pictures"
    title = "Remove Patron Pictures"
    description = "Removes the pictures of the selected patrons"
    Options = NoOptions
    removes_data = True

    def plan(self, conn, ids, options, operator) -> Plan:
        sizes = {r[0]: r[1] for r in conn.execute(
            "SELECT id, length(picture) FROM patrons WHERE picture IS NOT NULL"
            " AND id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))}
        changes, skipped, without = [], [], 0
        for r in patron_rows(conn, ids):
            size = sizes.get(r["id"])
            if size is None:
                without += 1
                continue
            if r["is_system"]:
                skipped.append(skip(r, SYSTEM_REASON))
                continue
            changes.append(change(r, f"picture ({size:,} bytes)", "no picture"))
        notes = [f"{without} selected patrons have no picture: nothing to remove."] if without else []
        return Plan(selected=len(ids), changes=changes, skipped=skipped, notes=notes, column="Picture")

    def apply(self, writer: ChangesetWriter, plan: Plan, options, ctx) -> None:
        writer.update_many("patrons", [(c.patron_id, {"picture": None, "updated_at": writer.ts})
                                       for c in plan.changes])
