"""Pilot at 80x24, keyboard only: the job form's Inactivation / Deletion section is filled by
keys, its preview counts the real patrons, the rules are saved with the job, a Full run
applies them and the job summary names each patron with the rule that took it."""

from __future__ import annotations


from textual.widgets import Input, OptionList

from patron_tui.services.jobs import get_job
from patron_tui.store import ChangesetWriter
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.job_form import JobFormScreen
from patron_tui.ui.screens.job_summary import JobSummaryScreen
from patron_tui.ui.screens.jobs import JobsScreen, RunModeScreen

from tests.conftest import patron_where
from tests.pilot import settle, wait_until
from tests.jobs_helpers import add_job, make_store, write_files


async def tab_to(app, pilot, widget_id: str, *, limit: int = 80):
    """Tab through the form until `widget_id` has the focus (the form's own tab order)."""
    for _ in range(limit):
        if app.focused is not None and app.focused.id == widget_id:
            return
        await pilot.press("tab")
    raise AssertionError(f"tab never reached #{widget_id} (at {app.focused!r})")


def preview(form) -> str:
    return str(form.query_one("#rule-preview").render())


async def test_fill_the_rules_by_keyboard_preview_save_run_and_read_the_outcome(tmp_path, monkeypatch):
    monkeypatch.setattr("patron_tui.services.jobs.directory.SETTLE_SECONDS", 0.0)
    store = make_store(tmp_path)
    csv_path, props = write_files(tmp_path, ["D1,B1,Able,Ann,HS", "D2,B2,Baker,Bob,HS"])
    add_job(store, path=csv_path, props=props)
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:   # two who left the district
        for i in (8, 9):
            w.insert("patrons", {"district_id": f"D{i}", "barcode": f"B{i}", "site": "HS", "last_name": f"Gone{i}",
                                 "first_name": "Pat", "last_seen_import_at": "2025-11-01T00:00:00Z",
                                 "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z"})
    conn.close()

    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("4")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        jobs = app.screen.query_one("#jobs-list", OptionList)
        for _ in range(jobs.option_count):      # down to the only job, Enter: its form
            if jobs.highlighted is not None and (jobs.get_option_at_index(jobs.highlighted).id or "").startswith("job-"):
                break
            await pilot.press("down")
        await pilot.press("enter")
        await settle(app, pilot)
        form = app.screen
        assert isinstance(form, JobFormScreen)
        await wait_until(app, pilot, lambda: "no rule is set" in preview(form), why=lambda: preview(form))

        await tab_to(app, pilot, "rule-threshold")
        await pilot.press("end", "ctrl+u", "1")                  # a Full file of 2 records may run them
        await tab_to(app, pilot, "rule-inactivate")
        await pilot.press("space")
        await pilot.press("tab", *"30")
        assert form.query_one("#rule-inactivate-days", Input).has_focus
        await tab_to(app, pilot, "rule-username")
        await pilot.press("space")
        # the preview counts the real data: D8 and D9 were last delivered months ago
        await wait_until(app, pilot, lambda: ": 2 inactivated" in preview(form), why=lambda: preview(form))
        assert "Inactivate patrons not updated in the past 30 days" in preview(form)

        await tab_to(app, pilot, "rule-outstanding-value")        # a rule without its number is said at once
        await pilot.press("shift+tab", "shift+tab")
        assert form.query_one("#rule-delete-outstanding").has_focus
        await pilot.press("space", "tab", "tab")
        assert form.query_one("#rule-outstanding-value", Input).has_focus
        error = form.query_one("#err-inactivation")
        await wait_until(app, pilot, lambda: error.has_class("-shown")
                         and "delete outstanding › value: Input should be a valid integer" in str(error.render()),
                         why=lambda: str(error.render()))
        assert "Preview: fix the rules above first" in preview(form)
        await pilot.press(*"12")                                  # 12: fine
        await wait_until(app, pilot, lambda: not error.has_class("-shown"), why=lambda: str(error.render()))
        await pilot.press("shift+tab", "shift+tab", "space")      # and off again
        await pilot.pause()

        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        conn = store.connect()
        rules = get_job(conn, "Students").inactivation
        conn.close()
        assert (rules.records_read_greater_than, rules.inactivate_days, rules.preface_username) == (1, 30, True)
        assert rules.delete_outstanding is None

        await pilot.press("r")
        await settle(app, pilot)
        assert isinstance(app.screen, RunModeScreen)
        await pilot.press("f")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
        summary = app.screen
        await wait_until(app, pilot, lambda: summary.query_one("#summary-messages").rows)
        lines = [r[4] for r in summary.query_one("#summary-messages").rows if r[3] == "inactivated"]
        assert sorted(lines) == [
            f'Gone{i}, Pat: inactivated by "Inactivate patrons not updated in the past 30 days" '
            f"(not updated by an import since 2025-11-01)" for i in (8, 9)]
    assert patron_where(store, district_id="D8")["status"] == "Inactive"
    assert patron_where(store, district_id="D1")["status"] == "Active"      # delivered by tonight's file
