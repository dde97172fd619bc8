"""Pilot at 80x24, keyboard only: the Audit trail (Home → a) answers "who changed this patron,
when, in which run, from what to what" for a change made by a real utility run, and the patron
detail's History tab (h) shows the same change."""

from __future__ import annotations

from patron_tui.services.utilities import Selections
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.audit import AuditEntryScreen, AuditScreen, parse_filters, FilterError
from patron_tui.ui.screens.home import HomeScreen
from patron_tui.ui.screens.patrons import PatronDetailScreen, PatronsScreen

from tests.conftest import patron_where
from tests.pilot import settle, wait_until
from tests.utilities_helpers import preview_then_run


def status_run(store) -> int:
    """A real Change Patron Status run on P0003 (Active → Inactive); its run id."""
    assert patron_where(store, barcode="P0003")["status"] == "Active"
    _plan, _pv, handle = preview_then_run(store, "change-patron-status", Selections(statement="barcode = P0003"),
                                          {"new_status": "Inactive"})
    assert patron_where(store, barcode="P0003")["status"] == "Inactive"
    return handle.run_id


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def test_audit_filters_by_patron_and_shows_the_run_s_field_change(small_store):
    run_id = status_run(small_store)
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, HomeScreen)
        await pilot.press("a")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        await wait_until(app, pilot, lambda: screen.loaded)
        assert screen.entries, "the journal holds the district's creation at least"

        await pilot.press("slash")
        assert app.focused.id == "audit-patron"
        await pilot.press(*"P0003", "enter")
        await wait_until(app, pilot, lambda: screen.filters.patron == "P0003" and screen.loaded
                         and screen.entries and all(e.patron_id is not None for e in screen.entries))
        await settle(app, pilot)
        newest = screen.entries[0]
        assert newest.run_id == run_id and newest.op == "update" and newest.table == "patrons"
        assert newest.operator == "tester" and "Change Patron Status" in (newest.run_title or "")
        assert [e.journal_id for e in screen.entries] == sorted((e.journal_id for e in screen.entries), reverse=True)
        text = screen_text(app)
        assert "patron P0003" in text and f"{run_id} Change" in text
        assert all(len(line) <= 80 for line in text.splitlines())

        await pilot.press("enter")                      # the highlighted (newest) entry's fields
        await settle(app, pilot)
        assert isinstance(app.screen, AuditEntryScreen)
        assert ("status", "Active", "Inactive") in app.screen.rows()
        assert "tester" in screen_text(app) and f"run {run_id}" in screen_text(app)
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.screen is screen

        # by run: the run's one patron; a bad run number names the field; another operator: nothing
        await pilot.press("slash", "tab", "tab")
        assert app.focused.id == "audit-run"
        await pilot.press(*"x1", "enter")
        await settle(app, pilot)
        assert screen.problem.startswith("Run:")
        app.focused.value = ""
        await pilot.press(*str(run_id), "enter")
        await wait_until(app, pilot, lambda: screen.filters.run_id == run_id and not screen.problem)
        await settle(app, pilot)
        assert screen.entries and {e.run_id for e in screen.entries} == {run_id}
        await pilot.press("slash", "tab")
        assert app.focused.id == "audit-operator"
        await pilot.press(*"nobody", "enter")
        await wait_until(app, pilot, lambda: screen.filters.operator == "nobody")
        await settle(app, pilot)
        assert screen.entries == [] and "no changes match" in screen_text(app)

        # an unknown patron is said in a sentence
        await pilot.press("ctrl+u")
        await settle(app, pilot)
        await pilot.press("slash", *"NOPE", "enter")
        await wait_until(app, pilot, lambda: "NOPE" in screen.problem)
        await pilot.press("escape", "escape")           # out of the filter, then back to Home
        await settle(app, pilot)
        assert isinstance(app.screen, HomeScreen)


def test_since_takes_both_date_forms():
    assert parse_filters("", "", "", "11/24/2026", "").since.isoformat() == "2026-11-24"
    assert parse_filters("", "", "", "2026-11-24", "").since.isoformat() == "2026-11-24"
    try:
        parse_filters("", "", "", "24.11.2026", "")
    except FilterError as exc:
        assert str(exc).startswith("Since:")
    else:
        raise AssertionError("a bad date was taken")


async def test_history_tab_of_the_patron_detail_shows_the_change(small_store):
    run_id = status_run(small_store)
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        assert isinstance(app.screen, PatronsScreen)
        await pilot.press("slash", *"barcode = P0003", "enter")
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: app.screen.table.total == 1)
        await pilot.press("enter")
        await settle(app, pilot)
        detail = app.screen
        assert isinstance(detail, PatronDetailScreen)
        await wait_until(app, pilot, lambda: detail.history_entries is not None)
        await pilot.press("h")
        await settle(app, pilot)
        assert detail.query_one("#detail-tabs").active == "detail-tab-history"
        lines = "\n".join(detail.history_lines())
        assert f"run {run_id} (Change Patron Status" in lines
        assert "status: 'Active' → 'Inactive'" in lines or "status: Active → Inactive" in lines
        assert "Change Patron Status" in screen_text(app)
        await pilot.press("h")                          # back to the patron's fields
        await settle(app, pilot)
        assert detail.query_one("#detail-tabs").active == "detail-tab-patron"
        assert "Inactive" in "\n".join(detail.rendered_lines())


async def test_entries_are_paged_newest_first(small_store, monkeypatch):
    monkeypatch.setattr("patron_tui.ui.screens.audit.PAGE", 4)
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("a")
        await settle(app, pilot)
        screen = app.screen
        await wait_until(app, pilot, lambda: screen.loaded and screen.entries)
        first = [e.journal_id for e in screen.entries]
        assert len(first) == 4 and screen.has_more and first == sorted(first, reverse=True)
        await pilot.press("p")                          # already the first page
        await settle(app, pilot)
        assert screen.page == 0
        await pilot.press("n")
        await wait_until(app, pilot, lambda: screen.page == 1)
        await settle(app, pilot)
        second = [e.journal_id for e in screen.entries]
        assert second and max(second) < min(first)
        assert "entries 5–" in screen_text(app)
        await pilot.press("p")
        await wait_until(app, pilot, lambda: screen.page == 0)
        await settle(app, pilot)
        assert [e.journal_id for e in screen.entries] == first
