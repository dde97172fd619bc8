"""Pilot at 80x24, keyboard only: the Utilities section lists the utilities (filter by typing),
opens one with its Selections and Options forms, previews, runs what was previewed and shows
the operations report; the database is checked afterwards. Also: a query set handed over from
the Patrons screen (u), the typed count of a removal, a stale preview refused, a field named
in an error, and the district's terminology."""

from __future__ import annotations

from textual.widgets import Input, OptionList, Select, SelectionList

from patron_tui.services import query_sets
from patron_tui.store import ChangesetWriter
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.patrons import PatronsScreen
from patron_tui.ui.screens.query_dialogs import ConfirmScreen, SetsScreen
from patron_tui.ui.screens.utilities import UtilitiesScreen
from patron_tui.ui.screens.utility_run import FollowUpScreen, UtilityScreen

from tests.conftest import district, patron_where
from tests.pilot import settle, wait_until


def make_district(tmp_path):
    rows = []
    for i, (grade, homeroom) in enumerate([("9", "101"), ("9", "101"), ("10", "102"), ("10", "102"),
                                           ("12", "Gone"), ("12", "Gone"), ("11", "103")]):
        last = "[b]Last3" if i == 3 else f"Last{i}"      # data, never markup
        rows.append({"barcode": f"B{i}", "district_id": f"D{i}", "site": "HS", "last_name": last,
                     "first_name": f"First{i}", "grade": grade, "homeroom": homeroom, "status": "Active"})
    return district(tmp_path / "district.db", rows)


def set_setting(store, key: str, value: str) -> None:
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        if w.fetch("settings", key) is None:
            w.insert("settings", {"key": key, "value": value})
        else:
            w.update("settings", key, {"value": value})
    conn.close()


def listed(screen: UtilitiesScreen) -> list[str]:
    return [e.title for e in screen.shown]


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


async def open_utility(app, pilot, typed: str, title: str) -> UtilityScreen:
    """From the Utilities section: type a filter, Enter to the list, down to `title`, Enter."""
    screen = app.screen
    assert isinstance(screen, UtilitiesScreen)
    await wait_until(app, pilot, lambda: len(screen.entries) > 1)
    await pilot.press(*typed)
    await pilot.press("enter")
    assert isinstance(app.focused, OptionList)
    for _ in range(len(screen.shown)):
        if screen.shown[app.focused.highlighted].title == title:
            break
        await pilot.press("down")
    await pilot.press("enter")
    await wait_until(app, pilot, lambda: isinstance(app.screen, UtilityScreen) and app.screen.info is not None)
    await settle(app, pilot)
    return app.screen


async def tab_to(app, pilot, widget_id: str, *, limit: int = 30) -> None:
    for _ in range(limit):
        if app.focused is not None and app.focused.id == widget_id:
            return
        await pilot.press("tab")
    raise AssertionError(f"tab never reached #{widget_id} (at {app.focused!r})")


async def pick(app, pilot, value: str) -> None:
    """In the focused multi-pick: down to `value`, Space."""
    chooser = app.focused
    assert isinstance(chooser, SelectionList)
    for _ in range(chooser.option_count):
        if chooser.get_option_at_index(chooser.highlighted).value == value:
            break
        await pilot.press("down")
    await pilot.press("space")


async def choose(app, pilot, typed: str) -> None:
    """On the focused Select: Enter opens it, typing finds the entry, Enter takes it."""
    assert isinstance(app.focused, Select)
    await pilot.press("enter")
    await pilot.pause()
    await pilot.press(*typed)
    await pilot.press("enter")
    await pilot.pause()


async def preview_and_run(app, pilot, screen: UtilityScreen) -> None:
    await pilot.press("f5")
    await wait_until(app, pilot, lambda: screen.previewed is not None, why=lambda: screen._last_problem)
    await pilot.press("ctrl+r")
    await wait_until(app, pilot, lambda: screen.report is not None or isinstance(app.screen, ConfirmScreen),
                     why=lambda: screen._last_problem)


async def test_change_status_by_grade_then_filter_and_stale_preview(tmp_path):
    store = make_district(tmp_path)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        section = app.screen
        assert isinstance(section, UtilitiesScreen)
        await wait_until(app, pilot, lambda: len(section.entries) > 1)
        assert listed(section)[0] == "Check database"
        # typing on the list filters it; Escape clears the filter
        await pilot.press(*"notes")
        assert isinstance(app.focused, Input) and app.focused.value == "notes"
        assert listed(section) == ["Add Patron Notes", "Remove Patron Notes"]
        await pilot.press("escape")
        assert len(listed(section)) == len(section.entries)

        screen = await open_utility(app, pilot, "stat", "Change Patron Status")
        assert "Change Patron Status" in text_of(screen, "#ur-title")
        await tab_to(app, pilot, "sel-grades")
        await pick(app, pilot, "9")
        await pilot.press("f3")
        assert app.focused.id == "opt-new-status"
        await choose(app, pilot, "inact")
        assert screen.form("opt").values()["new_status"] == "Inactive"
        await preview_and_run(app, pilot, screen)
        assert screen.report.changed == 2
        assert "changed 2" in text_of(screen, "#ur-report-counts")
        assert [r[4] for r in screen.report.rows if r[3] == "changed"] == [
            "Last0, First0: Active -> Inactive", "Last1, First1: Active -> Inactive"]

        # a preview, then the data changes under it: the run is refused and changes nothing
        await pilot.press("f3")
        await choose(app, pilot, "susp")
        await pilot.press("f5")
        await wait_until(app, pilot, lambda: screen.previewed is not None)
        assert "2 selected · 2 would change" in text_of(screen, "#ur-preview-counts")
        conn = store.connect()
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.update("patrons", patron_where(store, barcode="B0")["id"], {"grade": "10"})
        conn.close()
        first_run = screen.report.run_id
        await pilot.press("ctrl+r")
        await wait_until(app, pilot, lambda: screen.handle is not None and screen.handle.run_id != first_run
                         and screen.handle.finished)
        await wait_until(app, pilot, lambda: "changed since the preview" in screen._last_problem,
                         why=lambda: screen._last_problem)
        assert "2 patrons then, 1 now" in screen._last_problem
        # the form changed after a preview: preview again first
        await pilot.press("f5")
        await wait_until(app, pilot, lambda: screen.previewed is not None)
        await pilot.press("f3")
        await choose(app, pilot, "act")
        await pilot.press("ctrl+r")
        assert "form changed since the preview" in screen._last_problem
    assert patron_where(store, barcode="B1")["status"] == "Inactive"       # not Suspended: refused
    assert patron_where(store, barcode="B0")["status"] == "Inactive"
    assert patron_where(store, barcode="B2")["status"] == "Active"


async def test_add_notes_to_a_query_set_opened_from_the_patrons_screen(tmp_path):
    store = make_district(tmp_path)
    conn = store.connect()
    query_sets.save_set(conn, "tester", "Tenth grade", "grade = 10")
    conn.close()
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        assert isinstance(app.screen, PatronsScreen)
        await pilot.press("l")
        await settle(app, pilot)
        assert isinstance(app.screen, SetsScreen)
        await pilot.press("enter")
        await wait_until(app, pilot, lambda: isinstance(app.screen, PatronsScreen)
                         and app.screen.selection.set_name == "Tenth grade")
        await pilot.press("u")
        await settle(app, pilot)
        assert isinstance(app.screen, UtilitiesScreen)
        assert "set Tenth grade" in text_of(app.screen, "#util-for")
        screen = await open_utility(app, pilot, "note", "Add Patron Notes")
        assert screen.form("sel").values()["query_set"] == "Tenth grade"
        await pilot.press("f3")
        assert app.focused.id == "opt-note"
        await pilot.press(*"See [b]")
        await tab_to(app, pilot, "opt-note-type")
        await choose(app, pilot, "alert")
        await pilot.press("f5")
        await wait_until(app, pilot, lambda: screen.previewed is not None, why=lambda: screen._last_problem)
        table = screen.query_one("#ur-preview-table")
        names = [table.get_row_at(i)[2].plain for i in range(table.row_count)]
        assert names == ["Last2, First2", "[b]Last3, First3"]
        await pilot.press("ctrl+r")
        await wait_until(app, pilot, lambda: screen.report is not None, why=lambda: screen._last_problem)
        assert screen.report.changed == 2
    conn = store.connect()
    notes = conn.execute("SELECT p.barcode, n.note_type, n.text FROM notes n JOIN patrons p ON p.id = n.patron_id"
                         " ORDER BY p.barcode").fetchall()
    conn.close()
    assert [tuple(n) for n in notes] == [("B2", "Alert", "See [b]"), ("B3", "Alert", "See [b]")]


async def test_remove_patrons_needs_the_previewed_count_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                             # the report's CSV goes to the current folder
    store = make_district(tmp_path)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        screen = await open_utility(app, pilot, "remove", "Remove Patrons")
        await tab_to(app, pilot, "sel-statement")
        await pilot.press(*"grade=12")
        await preview_and_run(app, pilot, screen)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("3", "enter")                      # not what the preview showed: nothing done
        await settle(app, pilot)
        assert app.screen is screen and screen.handle is None
        assert patron_where(store, barcode="B4") is not None
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("2", "enter")
        await wait_until(app, pilot, lambda: screen.report is not None)
        assert screen.report.changed == 2
        await pilot.press("s")                               # the report's filter: nobody was skipped
        assert screen.query_one("#ur-report").rows == []
        await pilot.press("c")
        assert [r[1] for r in screen.query_one("#ur-report").rows] == ["B4", "B5"]
        await pilot.press("x")
        await settle(app, pilot)
        assert app.focused.value == str(tmp_path / f"utility-run-{screen.report.run_id}.csv")
        await pilot.press("enter")
        out = tmp_path / f"utility-run-{screen.report.run_id}.csv"
        await wait_until(app, pilot, lambda: out.exists() and out.read_text().count("\n") == 3)
        lines = out.read_text().splitlines()
        assert lines[0].startswith("Outcome,Barcode,Name") and lines[1].startswith("changed,B4,")
    assert patron_where(store, barcode="B4") is None and patron_where(store, barcode="B5") is None
    assert patron_where(store, barcode="B6") is not None


async def test_terminology_and_the_policy_follow_up(tmp_path):
    store = make_district(tmp_path)
    set_setting(store, "term_grade", "Level")
    conn = store.connect()
    policies = [r[0] for r in conn.execute("SELECT code FROM policies ORDER BY code")]
    conn.close()
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        section = app.screen
        await wait_until(app, pilot, lambda: len(section.entries) > 1)
        titles = [e.title for e in section.entries]
        assert "Change Patron Level" in titles and "Advance Patron Level" in titles
        assert not any("Grade" in t for t in titles)
        screen = await open_utility(app, pilot, "level", "Change Patron Level")
        assert [s.title for s in screen.info.selection_specs if s.name == "grades"] == ["Patrons in Level"]
        assert [s.title for s in screen.info.option_specs] == ["Change Level to"]
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, UtilitiesScreen)
        if not policies:
            return
        # Change Patron Policy ends by offering Recompute Due Dates with the same selection
        await pilot.press("escape")
        screen = await open_utility(app, pilot, "polic", "Change Patron Policy")
        await tab_to(app, pilot, "sel-statement")
        await pilot.press(*"grade=11")
        await pilot.press("f3")
        await choose(app, pilot, policies[-1][:3].lower())
        await preview_and_run(app, pilot, screen)
        await wait_until(app, pilot, lambda: isinstance(app.screen, FollowUpScreen))
        assert app.screen.question.endswith("Open Recompute Due Dates with the same selection now?")
        assert "\u240a" not in app.screen.question          # line breaks kept, not shown as symbols
        await pilot.press("y")
        await wait_until(app, pilot, lambda: isinstance(app.screen, UtilityScreen) and app.screen is not screen
                         and app.screen.info is not None)
        follow = app.screen
        assert follow.utility_name == "recompute-due-dates"
        assert follow.form("sel").values()["statement"] == "grade=11"


async def test_errors_name_the_field_unavailable_and_permission_are_said_nothing_changes(tmp_path):
    store = make_district(tmp_path)
    set_setting(store, "account_expiration", "off")
    app = make_app(store.path, operator="visitor")          # not in the operators table
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        section = app.screen
        await wait_until(app, pilot, lambda: len(section.entries) > 1)
        renew = next(e for e in section.entries if e.name == "renew-patron-accounts")
        assert "account expiration" in renew.unavailable
        screen = await open_utility(app, pilot, "renew", "Renew Patron Accounts")
        assert "Unavailable: " in screen._last_problem and "account expiration" in text_of(screen, "#ur-problem")
        await pilot.press("f5", "ctrl+r")
        await settle(app, pilot)
        assert screen.previewed is None and screen.handle is None
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("escape")

        screen = await open_utility(app, pilot, "stat", "Change Patron Status")
        await pilot.press("ctrl+r")                          # no preview yet
        assert "Preview first" in screen._last_problem
        await tab_to(app, pilot, "sel-statement")
        await pilot.press(*"grade=9")
        await pilot.press("f5")                              # the status was not chosen
        await wait_until(app, pilot, lambda: screen._last_problem, why=lambda: screen._last_problem)
        assert screen._last_problem.startswith("Not previewed: Change Status to")
        assert app.focused.id == "opt-new-status"
        assert screen.query_one("#opt-new-status-label").has_class("-error")
        assert text_of(screen, "#ur-hint").startswith("Change Status to")
        await pilot.press("f2")
        await tab_to(app, pilot, "sel-graduation-from")
        await pilot.press(*"2025")
        await pilot.press("f5")
        await wait_until(app, pilot, lambda: "Graduation date from" in screen._last_problem,
                         why=lambda: screen._last_problem)
        assert "MM/DD/YYYY" in screen._last_problem
        assert app.focused.id == "sel-graduation-from"
        await pilot.press("ctrl+u")                          # the date cleared; the status chosen
        await pilot.press("f3")
        await choose(app, pilot, "inact")
        await pilot.press("f5")                              # the operator may not use utilities
        await wait_until(app, pilot, lambda: "permission" in screen._last_problem,
                         why=lambda: screen._last_problem)
        assert "visitor" in screen._last_problem
        assert screen.previewed is None and screen.handle is None
    assert patron_where(store, barcode="B0")["status"] == "Active"


def test_field_specs_derive_the_form_from_a_model():
    import datetime as dt
    from decimal import Decimal
    from typing import Literal

    from pydantic import BaseModel, Field

    from patron_tui.ui.widgets.model_form import field_specs

    class Options(BaseModel):
        note: str = Field(title="Add note", max_length=500)
        kind: Literal["lost", "overdue_fines"] = Field(default="lost", title="Category",
                                                       json_schema_extra={"labels": {"lost": "Lost fees only"}})
        grade: str = Field(title="Change {grade} to", json_schema_extra={"choices": "grades"})
        homeroom: str = Field(default="", title="{location}", json_schema_extra={"choices": "homerooms"})
        grades: list[str] = Field(default_factory=list, json_schema_extra={"choices": "grades"})
        homerooms: list[str] = Field(default_factory=list, json_schema_extra={"choices": "homerooms"})
        starting: dt.date | None = None
        days: int | None = None
        amount: Decimal | None = None
        replace: bool = False

    specs = {s.name: s for s in field_specs(Options, lambda t: t.replace("{grade}", "Level")
                                                              .replace("{location}", "Homeroom"))}
    assert {n: s.kind for n, s in specs.items()} == {
        "note": "text", "kind": "choice", "grade": "choice", "homeroom": "choice", "grades": "multi",
        "homerooms": "words", "starting": "date", "days": "integer", "amount": "number", "replace": "bool"}
    assert specs["note"].max_length == 500 and not specs["note"].optional
    assert specs["kind"].literal == (("lost", "Lost fees only"), ("overdue_fines", "Overdue fines"))
    assert specs["grade"].title == "Change Level to" and specs["homeroom"].title == "Homeroom"
    assert specs["starting"].optional and specs["replace"].default is False


async def test_every_registered_utility_gets_its_options_form(tmp_path):
    """Each utility's Options form is derived from its model: a new utility needs no screen change."""
    from textual.app import App
    from textual.containers import VerticalScroll

    from patron_tui.services.utilities import UTILITIES, Terms, choices
    from patron_tui.ui.widgets.model_form import ModelForm, field_specs

    store = make_district(tmp_path)
    conn = store.connect()
    forms = {}
    for name, util in UTILITIES.items():
        specs = field_specs(util.Options, Terms().apply)
        offered = {s.choices: choices(conn, s.choices) for s in specs if s.choices}
        forms[name] = ModelForm(specs, prefix=name, options=offered)
    conn.close()

    class FormsApp(App):
        def compose(self):
            yield VerticalScroll(*forms.values())

    app = FormsApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for name, util in UTILITIES.items():
            form = forms[name]
            assert [s.name for s in form.specs] == list(util.Options.model_fields), name
            values = form.values()
            assert set(values) == set(util.Options.model_fields), name
