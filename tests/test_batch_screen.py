"""Pilot tests at 80x24, keyboard only: Batch Update Patron Profile from a query set.

From a saved set on the Patrons screen, b opens the Batch update section; the form is filled
by keys, F5 previews (the counts shown are the database's), Ctrl+R asks for the patron count
typed and runs the batch on the real run engine; the error report names the patron the
database refused (a trigger installed by the test), and the queue filler finishes in the log
pane. Also: the batch-tools permission, a stale preview, a blank form."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList, Select

from patron_tui.store import ChangesetWriter, Store, utc_now
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.batch import BatchPreviewScreen, BatchReportScreen, BatchScreen
from patron_tui.ui.screens.job_summary import JobSummaryScreen, MessageView
from patron_tui.ui.screens.patrons import PatronsScreen
from patron_tui.ui.screens.query_dialogs import ConfirmScreen, SetsScreen
from patron_tui.ui.widgets.log_pane import LogView

from tests.conftest import add_patrons, district
from tests.pilot import settle, type_text, wait_until

SET_STATEMENT = "site = HS"
REFUSED = "P0004"  # the trigger below refuses any change to this patron's profiles


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """12 patrons (8 at HS: the set); DB profiles for P0000-P0007; six mystery titles in DB."""
    store = district(tmp_path / "library.db")
    ids = add_patrons(store, [
        {"barcode": f"P{i:04d}", "district_id": f"D{i:04d}", "site": "HS" if i % 3 else "ELM",
         "last_name": f"Last{i}", "first_name": f"First{i}", "grade": "9", "status": "Active"}
        for i in range(12)
    ])
    conn = store.connect()
    now = utc_now()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for i, pid in enumerate(ids[:8]):
            w.insert("patron_profiles", {"patron_id": pid, "medium": "DB", "nightly_debug": int(i % 2 == 0),
                                         "next_service_date": "2026-12-01"})
        for n in range(6):
            tid = w.insert("titles", {"code": f"T{n}", "title": f"Mystery {n}", "author": "A"})
            w.insert("title_media", {"title_id": tid, "medium": "DB"})
            w.insert("title_subjects", {"title_id": tid, "subject": "MYS"})
        w.insert("query_sets", {"name": "HS patrons", "statement": SET_STATEMENT, "created_by": "tester",
                                "created_at": now, "updated_at": now})
        w.insert("operators", {"login_name": "clerk", "display_name": "Clerk", "security_level": 5,
                               "may_use_batch_tools": 0, "created_at": now})
    conn.close()
    return store


def rows(store: Store, sql: str, params=()) -> list[dict]:
    conn = store.connect()
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def profiles(store: Store) -> dict[str, dict]:
    return {r["barcode"]: r for r in rows(store, "SELECT p.barcode, pp.* FROM patron_profiles pp"
                                                 " JOIN patrons p ON p.id = pp.patron_id WHERE pp.medium = 'DB'")}


def refuse_patron(store: Store, barcode: str) -> None:
    conn = store.connect()
    try:
        conn.execute(
            "CREATE TRIGGER test_refuse BEFORE UPDATE ON patron_profiles"
            f" WHEN OLD.patron_id = (SELECT id FROM patrons WHERE barcode = '{barcode}')"
            " BEGIN SELECT RAISE(ABORT, 'this profile is locked by the test'); END")
    finally:
        conn.close()


async def choose(pilot, steps: int) -> None:
    """Open the focused Select, move `steps` down from the current option, choose."""
    await pilot.press("enter")
    await pilot.pause()
    await pilot.press(*["down"] * steps, "enter")
    await pilot.pause()


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def open_set_and_batch(app, pilot) -> BatchScreen:
    await pilot.press("2")
    await settle(app, pilot)
    assert isinstance(app.screen, PatronsScreen)
    await pilot.press("l")
    await wait_until(app, pilot, lambda: isinstance(app.screen, SetsScreen))
    await pilot.press("enter")  # the only set: open it
    await wait_until(app, pilot, lambda: getattr(app.screen, "selection", None) is not None
                     and app.screen.selection.set_name == "HS patrons")
    await pilot.press("b")
    await wait_until(app, pilot, lambda: isinstance(app.screen, BatchScreen) and app.screen.target is not None
                     and app.screen.choices is not None)
    return app.screen


async def choose_medium_db(app, pilot, screen: BatchScreen) -> None:
    assert screen.query_one("#batch-medium", Select).has_focus
    await choose(pilot, 2)  # (choose a medium), BR, DB
    assert screen.query_one("#batch-medium", Select).value == "DB"


async def preview(app, pilot) -> BatchPreviewScreen:
    await pilot.press("f5")
    await wait_until(app, pilot, lambda: isinstance(app.screen, BatchPreviewScreen))
    return app.screen


async def test_batch_from_a_query_set_end_to_end(store, monkeypatch):
    monkeypatch.setenv("PATRON_TUI_FILL_CHUNK", "2")  # the filler works in 4 chunks, each one logged
    refuse_patron(store, REFUSED)
    before = profiles(store)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = await open_set_and_batch(app, pilot)
        # the set's search statement and count, at the top
        top = text_of(app, "#batch-target")
        assert "HS patrons" in top and "8 patrons" in top and SET_STATEMENT in top
        await choose_medium_db(app, pilot, screen)
        await pilot.press("tab")                      # Status of service
        await choose(pilot, 2)                        # (unchanged), Active, Suspended
        await pilot.press("tab", *"7")                # Maximum items out
        await pilot.press("tab", "tab", "tab")        # Items per shipment, Service frequency -> NSD mode
        assert screen.query_one("#batch-nsd-mode", Select).has_focus
        await choose(pilot, 2)                        # unchanged, one date, spaced
        await pilot.press("tab", *"01/05/2027", "tab", *"7", "tab", *"3")
        await pilot.press("tab")                      # ordered by: Last name (the default)
        await pilot.press("tab")                      # Duplication circulation
        assert screen.query_one("#batch-duplication", Select).has_focus
        await choose(pilot, 1)                        # unchanged, on
        await pilot.press("tab", "tab", "space")      # past Auto-select; Nightly Debug on
        await pilot.press("tab", *"MYS", "tab", "space", "tab", *"4")  # subjects, fill queues, length 4
        assert screen.query_one("#batch-queue-length", Input).value == "4"

        shown = (await preview(app, pilot)).body_text()
        # what the database says: 5 HS patrons have a DB profile, 3 get one
        set_ids = [r["id"] for r in rows(store, "SELECT id FROM patrons WHERE site = 'HS'")]
        with_profile = [b for b, p in before.items() if p["patron_id"] in set_ids]
        not_suspended = sum(1 for b in with_profile if before[b]["status_of_service"] != "Suspended")
        assert "8 patrons · 3 DB profiles to be created" in shown
        assert f"Status of service: {not_suspended} change" in shown and not_suspended == 5
        assert f"Maximum items out: {len(with_profile)} change" in shown
        nightly_off = sum(1 for b in with_profile if not before[b]["nightly_debug"])
        assert f"Nightly debug: {nightly_off} change" in shown
        assert "Active → Suspended" in shown and "P0001" in shown

        await pilot.press("ctrl+r")                   # PROCESS from the preview
        await wait_until(app, pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press(*"8", "enter")
        await wait_until(app, pilot, lambda: isinstance(app.screen, BatchReportScreen), limit=600)
        report = app.screen
        assert [b for b, _ in report.rows()] == [REFUSED]
        assert "locked by the test" in report.rows()[0][1]
        counts = text_of(app, "#report-counts")
        assert "8 patrons: 4 profiles updated, 3 created" in counts and "1 errors" in counts
        # the error report stays in the run's summary
        await pilot.press("j")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen)
                         and app.screen.all_rows)
        assert any(r[1] == REFUSED and r[2] == "error" for r in app.screen.query_one(MessageView).rows)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("escape")
        await wait_until(app, pilot, lambda: app.screen is screen)

        # the queue filler: its progress line on the screen, its messages in the log pane
        await wait_until(app, pilot, lambda: "Service queues filled" in text_of(app, "#batch-filler"),
                         limit=600)
        log = [ln.text for ln in screen.query_one(LogView).rows]
        assert any("Every waiting service queue is filled: 7 queues, 28 titles added" in t for t in log)
        chunks = [t for t in log if t.startswith("Filled ")]
        assert [t.split("; ")[1] for t in chunks] == ["5 waiting.", "3 waiting.", "1 waiting.", "0 waiting."]

    after = profiles(store)
    changed = [b for b in after if b != REFUSED and after[b]["patron_id"] in set_ids]
    assert len(changed) == 7
    for b in changed:
        p = after[b]
        assert (p["status_of_service"], p["max_items_out"], p["duplication_circulation"], p["nightly_debug"],
                p["queue_length"]) == ("Suspended", 7, 1, 1, 4)
        assert p["auto_select"] == (before[b]["auto_select"] if b in before else 1)   # unchanged
        assert p["items_per_shipment"] == (before[b]["items_per_shipment"] if b in before else 1)
    assert after[REFUSED] == before[REFUSED]
    # spaced Next Service Dates: by last name, groups of 3, every 7 days (the refused one keeps its date)
    order = sorted((f"Last{int(b[1:])}", b) for b in after if after[b]["patron_id"] in set_ids)
    for n, (_, b) in enumerate(order):
        if b != REFUSED:
            assert after[b]["next_service_date"] == date(2027, 1, 5 + 7 * (n // 3)).isoformat(), b
    # patrons outside the set are untouched
    for b in before:
        if before[b]["patron_id"] not in set_ids:
            assert after[b] == before[b]
    # every changed profile got MYS and a filled queue (4 of the 6 mystery titles), once
    queues = rows(store, "SELECT profile_id, count(*) AS n FROM service_queue GROUP BY profile_id")
    assert sorted(q["profile_id"] for q in queues) == sorted(after[b]["id"] for b in changed)
    assert all(q["n"] == 4 for q in queues)
    assert rows(store, "SELECT count(*) AS n FROM queue_fill_requests WHERE done_at IS NULL")[0]["n"] == 0
    subjects = rows(store, "SELECT profile_id FROM profile_subjects WHERE subject = 'MYS'")
    assert len(subjects) == 7


async def test_operator_without_batch_permission_is_refused(store):
    before = profiles(store)
    app = make_app(store.path, operator="clerk")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = await open_set_and_batch(app, pilot)
        assert "may not use batch tools" in text_of(app, "#batch-status")
        await choose_medium_db(app, pilot, screen)
        await preview(app, pilot)                      # a preview changes nothing: allowed
        await pilot.press("ctrl+r")
        await wait_until(app, pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press(*"8", "enter")
        await wait_until(app, pilot, lambda: "may use batch tools" in text_of(app, "#batch-error"))
        error = text_of(app, "#batch-error")
        assert "nothing was changed" in error and "clerk" in error
        assert app.screen is screen
    assert profiles(store) == before
    assert rows(store, "SELECT count(*) AS n FROM runs WHERE kind = 'batch_update'")[0]["n"] == 0


async def test_process_refuses_a_missing_or_stale_preview(store):
    before = profiles(store)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = await open_set_and_batch(app, pilot)
        await choose_medium_db(app, pilot, screen)
        await pilot.press("ctrl+r")                    # no preview yet
        await settle(app, pilot)
        assert "preview first" in text_of(app, "#batch-error")
        assert app.screen is screen
        await preview(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("tab", "tab", *"9")          # the form changes after the preview
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert "preview is stale" in text_of(app, "#batch-error")
        assert app.screen is screen
        await preview(app, pilot)                      # current again...
        await pilot.press("escape")
        await pilot.pause()
        add_patrons(store, [{"barcode": "P0099", "site": "HS", "last_name": "Late", "first_name": "Lou"}])
        await pilot.press("ctrl+r")                    # ...but the set grew since
        await settle(app, pilot)
        error = text_of(app, "#batch-error")
        assert "preview is stale" in error and "holds 9 patrons now" in error
        assert app.screen is screen
    assert profiles(store) == before
    assert rows(store, "SELECT count(*) AS n FROM runs WHERE kind = 'batch_update'")[0]["n"] == 0


async def test_blank_form_changes_nothing_but_nightly_debug(store):
    conn = store.connect()   # a status that holds markup, on a profile outside the batch
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("patron_profiles", profiles(store)["P0007"]["id"], {"status_of_service": "[b]Hold[/b]"})
    conn.close()
    before = profiles(store)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, BatchScreen)
        # a typed statement: the patrons who all have a DB profile
        await pilot.press("slash")
        assert screen.query_one("#batch-statement", Input).has_focus
        await type_text(app, pilot, "barcode in (P0000, P0001, P0002, P0003)")
        await pilot.press("enter")
        await wait_until(app, pilot, lambda: screen.target is not None and screen.choices is not None)
        assert "4 patrons" in text_of(app, "#batch-target")
        await choose_medium_db(app, pilot, screen)
        shown = (await preview(app, pilot)).body_text()
        assert "Nightly debug: 2 change" in shown          # P0000 and P0002 have it on
        assert "0 DB profiles to be created" in shown
        assert "Status of service" not in shown
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("tab", "enter")              # the Status of service options: data shown as text
        await pilot.pause()
        overlay = screen.query_one("#batch-status-of-service").query_one(OptionList)
        labels = [str(overlay.get_option_at_index(i).prompt) for i in range(overlay.option_count)]
        assert "[b]Hold[/b]" in labels
        await pilot.press("escape", "shift+tab")
        await pilot.pause()
        await preview(app, pilot)
        await pilot.press("ctrl+r")
        await wait_until(app, pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press(*"4", "enter")
        await wait_until(app, pilot, lambda: isinstance(app.screen, BatchReportScreen), limit=600)
        assert app.screen.rows() == []
        assert "2 profiles updated" in text_of(app, "#report-counts")
    after = profiles(store)
    for b, p in before.items():
        if b in ("P0000", "P0001", "P0002", "P0003"):
            assert after[b] == {**p, "nightly_debug": 0}
        else:
            assert after[b] == p
    assert set(after) == set(before)


def test_form_errors_name_the_field():
    from patron_tui.ui.screens.batch import FormError, build_update

    base = {"medium": "DB"}
    for form, field in [({}, "Medium"), ({"max_items_out": "120"}, "Maximum items out"),
                        ({"items_per_shipment": "0"}, "Items per shipment"),
                        ({"nsd_mode": "fixed", "nsd_date": "2027-01-05"}, "Next Service Date"),
                        ({"nsd_mode": "spaced", "nsd_start": "01/05/2027", "nsd_every": "0", "nsd_group": "3"},
                         "every K days"),
                        ({"queue_length": "500"}, "Queue length")]:
        with pytest.raises(FormError, match=field):
            build_update({**base, **form} if form else form)
    update = build_update({"medium": "DB", "duplication_circulation": "unchanged", "auto_select": "off"})
    assert update.duplication_circulation is None and update.auto_select is False
    assert update.changes() == {"auto_select": 0, "nightly_debug": 0}
