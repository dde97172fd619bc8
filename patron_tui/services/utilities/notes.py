"""Add Patron Notes and Remove Patron Notes.

Add: the note (1 to 500 characters) of the chosen type (Contact, General, Alert, Category) is
added to every selected patron; with "Replace existing notes" every existing note of that type
is removed first, so the patron is left with exactly the new one. Remove: every note of the
chosen type goes; patrons without such a note are left alone (counted in a note, not skipped).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from patron_tui.services.utilities.base import (
    SYSTEM_REASON, Plan, Utility, change, patron_rows, register, skip,
)
from patron_tui.store import ChangesetWriter

NoteType = Literal["Contact", "General", "Alert", "Category"]
NOTE_MAX = 500


def _counts(conn, ids: list[int], note_type: str) -> dict[int, int]:
    return {r[0]: r[1] for r in conn.execute(
        "SELECT patron_id, count(*) FROM notes WHERE note_type = ?"
        " AND patron_id IN (SELECT value FROM json_each(?)) GROUP BY patron_id",
        (note_type, json.dumps(ids)))}


def _n(count: int, note_type: str) -> str:
    return f"{count} {note_type} note{'' if count == 1 else 's'}" if count else f"no {note_type} notes"


class AddNotesOptions(BaseModel):
    note: str = Field(title="Add note", max_length=NOTE_MAX,
                      description=f"The note to add to each selected patron ({NOTE_MAX} characters at most).")
    note_type: NoteType = Field(default="General", title="Note type", json_schema_extra={"choices": "note_types"},
                                description="Contact, General, Alert (pops up in circulation) or Category.")
    replace_existing: bool = Field(default=False, title="Replace existing notes",
                                   description="Remove every existing note of the chosen type first.")

    @field_validator("note")
    @classmethod
    def _text(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("the note text is required")
        if "\x00" in v:
            raise ValueError("the note must not contain a NUL character")
        return v


@register
class AddPatronNotes(Utility):
    name = "add-patron-notes"
    title = "Add Patron Notes"
    description = "Adds a Contact, General, Alert or Category note to the selected patrons (or replaces theirs)"
    Options = AddNotesOptions

    def plan(self, conn, ids, options: AddNotesOptions, operator) -> Plan:
        rows = patron_rows(conn, ids)
        counts = _counts(conn, ids, options.note_type)
        t = options.note_type
        changes, skipped = [], []
        preview = options.note if len(options.note) <= 60 else options.note[:57] + "..."
        for r in rows:
            if r["is_system"]:
                skipped.append(skip(r, SYSTEM_REASON))
                continue
            n = counts.get(r["id"], 0)
            if options.replace_existing:
                after = f"1 {t} note: {preview}"
            else:
                after = f"{_n(n + 1, t)}, new: {preview}"
            changes.append(change(r, _n(n, t), after))
        notes = []
        if options.replace_existing:
            replaced = sum(counts.get(c.patron_id, 0) for c in changes)
            notes.append(f"{replaced} existing {t} notes are removed and replaced by the new note.")
        return Plan(selected=len(ids), changes=changes, skipped=skipped, notes=notes, column=f"{t} notes")

    def apply(self, writer: ChangesetWriter, plan: Plan, options: AddNotesOptions, ctx) -> None:
        ids = [c.patron_id for c in plan.changes]
        if not ids:
            return
        if options.replace_existing:
            old = [r[0] for r in writer.conn.execute(
                "SELECT id FROM notes WHERE note_type = ? AND patron_id IN (SELECT value FROM json_each(?))",
                (options.note_type, json.dumps(ids)))]
            writer.delete_many("notes", old)
        writer.insert_many("notes", ({"patron_id": pid, "note_type": options.note_type, "text": options.note,
                                      "created_at": writer.ts, "created_by": writer.operator} for pid in ids))


class RemoveNotesOptions(BaseModel):
    note_type: NoteType = Field(default="General", title="Note type", json_schema_extra={"choices": "note_types"},
                                description="Every note of this type is removed from the selected patrons.")


@register
class RemovePatronNotes(Utility):
    name = "remove-patron-notes"
    title = "Remove Patron Notes"
    description = "Removes all Contact, General, Alert or Category notes from the selected patrons"
    Options = RemoveNotesOptions
    removes_data = True

    def plan(self, conn, ids, options: RemoveNotesOptions, operator) -> Plan:
        rows = patron_rows(conn, ids)
        counts = _counts(conn, ids, options.note_type)
        changes, skipped, without = [], [], 0
        for r in rows:
            n = counts.get(r["id"], 0)
            if r["is_system"]:
                if n:
                    skipped.append(skip(r, SYSTEM_REASON))
                continue
            if not n:
                without += 1
                continue
            changes.append(change(r, _n(n, options.note_type), _n(0, options.note_type)))
        notes = [f"{without} selected patrons have no {options.note_type} notes: nothing to remove."] if without else []
        return Plan(selected=len(ids), changes=changes, skipped=skipped, notes=notes,
                    column=f"{options.note_type} notes")

    def apply(self, writer: ChangesetWriter, plan: Plan, options: RemoveNotesOptions, ctx) -> None:
        ids = [c.patron_id for c in plan.changes]
        if ids:
            writer.delete_many("notes", [r[0] for r in writer.conn.execute(
                "SELECT id FROM notes WHERE note_type = ? AND patron_id IN (SELECT value FROM json_each(?))",
                (options.note_type, json.dumps(ids)))])
