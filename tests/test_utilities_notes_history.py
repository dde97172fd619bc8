"""Add / Remove Patron Notes, Remove Patron History, Remove Patron Pictures: options, skip
rules, and for each a preview whose listed changes are exactly what the run then does."""

from __future__ import annotations

from pathlib import Path

import pytest

from patron_tui.services import utilities as U
from patron_tui.services.utilities import Selections, UtilityError
from patron_tui.store import Store
from tests.conftest import district
from tests.utilities_helpers import ids_by_barcode, insert, preview_then_run

NOW = "2025-01-01T00:00:00Z"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = district(tmp_path / "d.db", [
        {"barcode": b, "site": "HS", "last_name": "Last" + b, "first_name": "Pat", "grade": g,
         "picture": pic}
        for b, g, pic in (("N1", "5", b"\x89PNG1"), ("N2", "5", None), ("N3", "6", b"\x89PNG333"), ("N4", "5", None))])
    ids = ids_by_barcode(s)
    insert(s, "notes", [
        {"patron_id": ids["N1"], "note_type": "Alert", "text": "old alert 1", "created_at": NOW},
        {"patron_id": ids["N1"], "note_type": "Alert", "text": "old alert 2", "created_at": NOW},
        {"patron_id": ids["N1"], "note_type": "General", "text": "general stays", "created_at": NOW},
        {"patron_id": ids["N2"], "note_type": "Alert", "text": "N2 alert", "created_at": NOW},
        {"patron_id": ids["N3"], "note_type": "Alert", "text": "N3 alert (grade 6)", "created_at": NOW},
    ])
    insert(s, "patron_history", [
        {"patron_id": ids[b], "kind": k, "occurred_at": NOW, "lexile": 700 if k == "lexile" else None}
        for b, k in (("N1", "return"), ("N1", "payment"), ("N1", "lexile"), ("N1", "lost"), ("N2", "lexile"),
                     ("N3", "renewal"), ("N3", "refund"))])
    return s


def notes(store, barcode=None) -> list[tuple]:
    conn = store.connect()
    try:
        return [tuple(r) for r in conn.execute(
            "SELECT p.barcode, n.note_type, n.text FROM notes n JOIN patrons p ON p.id = n.patron_id"
            " ORDER BY p.barcode, n.note_type, n.id")]
    finally:
        conn.close()


def test_add_note_appends_and_preview_equals_run(store):
    plan, pv, handle = preview_then_run(store, "add-patron-notes", Selections(grades=["5"]),
                                        {"note": "  Needs to meet with librarian ", "note_type": "Alert"})
    assert [(c.barcode, c.before, c.after) for c in plan.changes] == [
        ("N1", "2 Alert notes", "3 Alert notes, new: Needs to meet with librarian"),
        ("N2", "1 Alert note", "2 Alert notes, new: Needs to meet with librarian"),
        ("N4", "no Alert notes", "1 Alert note, new: Needs to meet with librarian")]
    got = notes(store)
    for c in plan.changes:   # exactly the listed patrons got the note, once
        assert got.count((c.barcode, "Alert", "Needs to meet with librarian")) == 1
    assert ("N3", "Alert", "Needs to meet with librarian") not in got
    assert ("N1", "Alert", "old alert 1") in got and ("N1", "General", "general stays") in got
    conn = store.connect()
    row = conn.execute("SELECT created_by FROM notes WHERE text = 'Needs to meet with librarian' LIMIT 1").fetchone()
    assert row[0] == "tester"
    assert conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ? AND table_name = 'notes'",
                        (handle.run_id,)).fetchone()[0] == 3
    conn.close()


def test_add_note_replacing_existing_notes_of_that_type(store):
    plan, pv, _ = preview_then_run(store, "add-patron-notes", Selections(grades=["5"]),
                                   {"note": "At-risk reader", "note_type": "Alert", "replace_existing": True})
    assert [(c.barcode, c.before, c.after) for c in plan.changes] == [
        ("N1", "2 Alert notes", "1 Alert note: At-risk reader"), ("N2", "1 Alert note", "1 Alert note: At-risk reader"),
        ("N4", "no Alert notes", "1 Alert note: At-risk reader")]
    assert "3 existing Alert notes are removed" in pv.notes[0]
    assert notes(store) == [("N1", "Alert", "At-risk reader"), ("N1", "General", "general stays"),
                            ("N2", "Alert", "At-risk reader"), ("N3", "Alert", "N3 alert (grade 6)"),
                            ("N4", "Alert", "At-risk reader")]


@pytest.mark.parametrize("options, words", [
    ({"note": "   ", "note_type": "General"}, "note text is required"),
    ({"note": "x" * 501, "note_type": "General"}, "500"),
    ({"note_type": "General"}, "Add note"),
    ({"note": "hi", "note_type": "Sticky"}, "Note type"),
])
def test_add_note_options_are_checked(store, options, words):
    conn = store.connect()
    with pytest.raises(UtilityError, match=words):
        U.preview(conn, "add-patron-notes", Selections(grades=["5"]), options, "tester")
    conn.close()


def test_a_500_character_note_is_accepted(store):
    plan, _, _ = preview_then_run(store, "add-patron-notes", Selections(grades=["6"]),
                                  {"note": "y" * 500, "note_type": "Category"})
    assert len(plan.changes) == 1 and ("N3", "Category", "y" * 500) in notes(store)


def test_the_unknown_patron_is_skipped(store):
    conn = store.connect()
    pv = U.preview(conn, "add-patron-notes", Selections(statuses=["Inactive"]), {"note": "x"}, "tester")
    conn.close()
    assert pv.changes == 0 and len(pv.skipped) == 1 and "Unknown Patron" in pv.skipped[0].reason


def test_remove_notes_of_one_type(store):
    plan, pv, _ = preview_then_run(store, "remove-patron-notes", Selections(grades=["5"]), {"note_type": "Alert"})
    assert U.get("remove-patron-notes").removes_data
    assert [(c.barcode, c.before, c.after) for c in plan.changes] == [
        ("N1", "2 Alert notes", "no Alert notes"), ("N2", "1 Alert note", "no Alert notes")]
    assert pv.skipped == [] and "1 selected patrons have no Alert notes" in pv.notes[0]
    assert notes(store) == [("N1", "General", "general stays"), ("N3", "Alert", "N3 alert (grade 6)")]


def history(store) -> list[tuple]:
    conn = store.connect()
    try:
        return [tuple(r) for r in conn.execute(
            "SELECT p.barcode, h.kind FROM patron_history h JOIN patrons p ON p.id = h.patron_id ORDER BY p.barcode, h.kind")]
    finally:
        conn.close()


def test_remove_history_keeps_lexile(store):
    plan, pv, handle = preview_then_run(store, "remove-patron-history", Selections(grades=["5", "6"]), {})
    assert [(c.barcode, c.before, c.after) for c in plan.changes] == [
        ("N1", "1 lost item, 1 payment, 1 return", "Lexile history only (1 entry)"),
        ("N3", "1 refund, 1 renewal", "none")]
    assert "2 selected patrons have no history but Lexile history" in pv.notes[0]
    assert history(store) == [("N1", "lexile"), ("N2", "lexile")]
    # undo-able: every deleted row is journalled whole
    conn = store.connect()
    assert conn.execute("SELECT count(*) FROM change_journal WHERE run_id = ? AND op = 'delete'",
                        (handle.run_id,)).fetchone()[0] == 5
    conn.close()


def test_remove_pictures(store):
    plan, pv, _ = preview_then_run(store, "remove-patron-pictures", Selections(grades=["5", "6"]), {})
    assert [(c.barcode, c.before, c.after) for c in plan.changes] == [
        ("N1", "picture (5 bytes)", "no picture"), ("N3", "picture (7 bytes)", "no picture")]
    conn = store.connect()
    assert conn.execute("SELECT count(*) FROM patrons WHERE picture IS NOT NULL").fetchone()[0] == 0
    conn.close()
