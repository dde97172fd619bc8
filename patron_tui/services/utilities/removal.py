"""Remove Patrons: delete the selected patron records (services/removal.py does the deleting:
every dependant first, reviews passed to the Unknown Patron, all journalled for undo).

Without "Remove even with checked out or outstanding financial items, including credits", a
patron with checked-out items or any open charge or credit (a balance other than zero, not
forgiven, or a fine still accumulating) is skipped, and the reason says what they have. With
it, every selected patron goes: checked-out items are declared lost (the patron's record goes,
so the operations report keeps them: one note per item with its barcode and title), and holds,
reservations, charges and credits are removed with the patron. The Unknown Patron (the system
patron) and protected patrons are never removed.

With the setting `backup_before_destructive` on, a backup of the database is taken first
(services/backup.py, on its own connection: a copy of the database as it was before this run's
transaction), and the report names it; a backup that fails fails the run, nothing removed.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from patron_tui.runs import RunFailed
from patron_tui.services.removal import delete_patrons
from patron_tui.services.utilities.base import (
    SYSTEM_REASON, Plan, Utility, change, patron_name, patron_rows, register, skip,
)
from patron_tui.services.utilities.charges import money
from patron_tui.store import ChangesetWriter, Store

PROTECTED_REASON = "protected: no removal touches it (`patron-tui protect --off` lifts that)"


class RemoveOptions(BaseModel):
    remove_with_outstanding: bool = Field(
        default=False, title="Remove even with checked out or outstanding financial items, including credits",
        description="Checked-out items are declared lost; holds, reservations, charges and credits are removed.")


def _counts(conn, table: str, ids: str, extra: str = "") -> dict[int, int]:
    return {r[0]: r[1] for r in conn.execute(
        f"SELECT patron_id, count(*) FROM {table} WHERE patron_id IN (SELECT value FROM json_each(?)) {extra}"
        " GROUP BY patron_id", (ids,))}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@register
class RemovePatrons(Utility):
    name = "remove-patrons"
    title = "Remove Patrons"
    description = "Removes the selected patron records (reviews pass to the Unknown Patron)"
    Options = RemoveOptions
    removes_data = True

    def plan(self, conn, ids, options: RemoveOptions, operator) -> Plan:
        js = json.dumps(list(ids))
        rows = patron_rows(conn, ids, ["protected"])
        checkouts = _counts(conn, "checkouts", js)
        open_ = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT patron_id, count(*), sum(balance_cents) FROM charges WHERE forgiven_at IS NULL"
            " AND (balance_cents <> 0 OR accumulating = 1) AND patron_id IN (SELECT value FROM json_each(?))"
            " GROUP BY patron_id", (js,))}
        credits = _counts(conn, "charges", js, "AND forgiven_at IS NULL AND balance_cents < 0")
        holds = _counts(conn, "holds", js)
        notes_n = _counts(conn, "notes", js)
        reviews = _counts(conn, "reviews", js)
        changes, skipped, removed = [], [], []
        for r in rows:
            pid = r["id"]
            if r["is_system"]:
                skipped.append(skip(r, SYSTEM_REASON))
                continue
            if r["protected"]:
                skipped.append(skip(r, PROTECTED_REASON))
                continue
            out, (n_open, balance) = checkouts.get(pid, 0), open_.get(pid, (0, 0))
            if (out or n_open) and not options.remove_with_outstanding:
                what = []
                if out:
                    what.append(f"{_plural(out, 'checked-out item')}")
                if n_open:
                    c = credits.get(pid, 0)
                    kind = ("credit" if c == n_open else "open charge or credit" if c else "open charge")
                    what.append(f"{_plural(n_open, kind)} ({money(balance or 0)})")
                skipped.append(skip(r, f"has {' and '.join(what)}; choose \"Remove even with checked out or "
                                       "outstanding financial items\" to remove it anyway"))
                continue
            parts = [_plural(x, w) for x, w in ((out, "checkout"), (n_open, "open charge"),
                                                (holds.get(pid, 0), "hold"), (notes_n.get(pid, 0), "note"),
                                                (reviews.get(pid, 0), "review")) if x]
            before = "patron record" + (f" ({', '.join(parts)})" if parts else "")
            after = "removed"
            extra = []
            if out:
                extra.append(f"{_plural(out, 'item')} declared lost")
            if reviews.get(pid):
                extra.append(f"{_plural(reviews[pid], 'review')} to the Unknown Patron")
            if extra:
                after += f" ({'; '.join(extra)})"
            changes.append(change(r, before, after))
            removed.append(pid)
        notes = []
        if options.remove_with_outstanding and removed:
            lost = conn.execute(
                "SELECT k.item_barcode, k.title, k.patron_id, p.last_name, p.first_name, p.barcode"
                " FROM checkouts k JOIN patrons p ON p.id = k.patron_id"
                " WHERE k.patron_id IN (SELECT value FROM json_each(?)) ORDER BY k.patron_id, k.id",
                (json.dumps(removed),)).fetchall()
            for k in lost:
                notes.append(f"Declared lost: item {k['item_barcode']} \"{k['title'] or '(no title)'}\", "
                             f"checked out by {patron_name(k)}"
                             f"{' (' + k['barcode'] + ')' if k['barcode'] else ''}.")
        return Plan(selected=len(ids), changes=changes, skipped=skipped, notes=notes, column="Patron record",
                    data={"remove": removed})

    def apply(self, writer: ChangesetWriter, plan: Plan, options: RemoveOptions, ctx) -> None:
        if not plan.data.get("remove"):
            return
        from patron_tui.services.backup import BackupError, maybe_backup

        db_path = Path(writer.conn.execute("PRAGMA database_list").fetchone()["file"])
        try:
            # its own connection: VACUUM INTO reads the last commit, the database before this run
            taken = maybe_backup(Store(db_path, operator=writer.operator), "Remove Patrons")
        except BackupError as exc:
            raise RunFailed(f"The backup before Remove Patrons failed: {exc}. Nothing was removed.") from None
        if taken is not None:
            plan.notes.append(f"A backup of the database was taken first: {taken}")
        delete_patrons(writer, plan.data.get("remove", []), with_transactions=options.remove_with_outstanding)
