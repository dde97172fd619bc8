"""Pilot tests of the console frame at 80x24, keyboard only, in every theme."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from patron_tui.config import load_ui_settings
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.home import HomeScreen
from patron_tui.ui.screens.key_help import KeyHelpScreen
from patron_tui.ui.screens.patrons import PatronsScreen
from patron_tui.ui.screens.sections import BatchScreen, JobsScreen, LogScreen
from patron_tui.ui.screens.utilities import UtilitiesScreen
from patron_tui.ui.themes import load_themes
from patron_tui.ui.widgets.log_pane import LogPane, LogView
from tests.pilot import from_palette, in_every_theme

THEMES = [t.name for t in load_themes()[0]]
SECTION_KEYS = [
    ("1", "home", HomeScreen),
    ("2", "patrons", PatronsScreen),
    ("3", "batch", BatchScreen),
    ("4", "jobs", JobsScreen),
    ("5", "utilities", UtilitiesScreen),
    ("6", "log", LogScreen),
]


def test_all_four_themes_ship():
    assert {"patron-dark", "patron-light", "patron-high-contrast", "patron-mono"} <= set(THEMES)


async def settle(app, pilot):
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("theme", THEMES)
async def test_the_theme_given_at_start_is_used_and_remembered(small_store, theme):
    # what each theme's own walkthrough checked about the theme itself; the walkthrough below
    # checks every section in every theme
    app = make_app(small_store.path, theme=theme, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.theme == theme
        assert isinstance(app.screen, HomeScreen)
        pane = app.screen.query_one(LogPane)
        assert pane.display and pane.region.height > 0
    # the theme chosen with --theme is remembered
    assert load_ui_settings()["theme"] == theme


async def test_every_section_by_key_in_every_theme(small_store):
    # one keyboard walkthrough in the default theme; each section is also checked in all four
    # themes (in_every_theme: the log pane shown, nothing moved or cut); this was four walkthroughs
    app = make_app(small_store.path, theme="patron-dark", operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.theme == "patron-dark"
        for key, mode, screen_type in SECTION_KEYS:
            # leave any focused input first: section keys are app bindings
            await pilot.press(key)
            await settle(app, pilot)
            assert app.current_mode == mode, key
            assert isinstance(app.screen, screen_type)

            def pane_shown():
                pane = app.screen.query_one(LogPane)
                assert pane.display  # docked (or full) in every section
                assert pane.region.height > 0

            pane_shown()
            await in_every_theme(app, pilot, pane_shown)
        # Home shows real figures: 12 patrons in 2 sites
        await pilot.press("1")
        await settle(app, pilot)
        status = app.screen.query_one("#home-status", DataTable)
        counts = {str(status.get_row_at(i)[0]): str(status.get_row_at(i)[1]) for i in range(status.row_count)}
        assert counts == {"Active": "9", "Inactive": "3"}
        # the palette, by keyboard
        await from_palette(app, pilot, "go to utilities", "Go to Utilities")
        await settle(app, pilot)
        assert app.current_mode == "utilities"
        # key help
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, KeyHelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        # log filters in the Log section
        app.log_buffer.add("error", "boom", run_id=1)
        app.log_buffer.add("warning", "careful", run_id=1)
        await pilot.press("6")
        await settle(app, pilot)
        view = app.screen.query_one(LogView)
        await pilot.press("e")
        await pilot.pause()
        assert [r.text for r in view.rows] == ["boom"]
        await pilot.press("w")
        await pilot.pause()
        assert [r.text for r in view.rows] == ["careful"]
    # the theme chosen with --theme is remembered
    assert load_ui_settings()["theme"] == "patron-dark"


async def test_theme_remembered_from_palette(small_store):
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.theme == "patron-dark"
        app.theme = "patron-mono"
        await pilot.pause()
    assert load_ui_settings()["theme"] == "patron-mono"
    app2 = make_app(small_store.path, operator="tester")
    async with app2.run_test(size=(80, 24)) as pilot:
        await settle(app2, pilot)
        assert app2.theme == "patron-mono"


async def test_palette_reaches_sections_and_commands(small_store):
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await from_palette(app, pilot, "go to jobs", "Go to Jobs")
        await settle(app, pilot)
        assert app.current_mode == "jobs"
        await from_palette(app, pilot, "toggle log", "Toggle log pane")
        await settle(app, pilot)
        assert not app.log_visible
        assert not app.screen.query_one(LogPane).display


async def test_key_help_lists_the_current_screen_keys(small_store):
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, KeyHelpScreen)
        table = app.screen.query_one(DataTable)
        described = {str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert {"Refresh", "Log pane", "Quit"} <= described
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)


async def test_log_pane_toggle_and_filters(small_store):
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        buf = app.log_buffer
        buf.add("info", "an info line", run_id=1)
        buf.add("error", "an error line", run_id=1)
        buf.add("warning", "a warning line", run_id=1)
        buf.add("skipped", "a skipped line", run_id=1)
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert not app.screen.query_one(LogPane).display
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.screen.query_one(LogPane).display
        await pilot.press("6")  # Log section: the view has focus
        await settle(app, pilot)
        view = app.screen.query_one(LogView)
        assert app.focused is view
        assert [r.text for r in view.rows] == ["an info line", "an error line", "a warning line", "a skipped line"]
        for key, expected in (("e", ["an error line"]), ("w", ["a warning line"]),
                              ("s", ["a skipped line"]), ("a", ["an info line", "an error line",
                                                               "a warning line", "a skipped line"])):
            await pilot.press(key)
            await pilot.pause()
            assert [r.text for r in view.rows] == expected, key
            rendered = [view.render_line(y).text for y in range(view.size.height)]
            assert any(expected[-1] in line for line in rendered)


async def test_log_scrollback_keeps_10000_lines(small_store):
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        for i in range(12_000):
            app.log_buffer.add("warning", f"line {i}")
        await pilot.press("6")
        await settle(app, pilot)
        view = app.screen.query_one(LogView)
        assert len(view.rows) == 10_000
        assert view.rows[0].text == "line 2000" and view.rows[-1].text == "line 11999"
        # follows the newest line
        rendered = [view.render_line(y).text for y in range(view.size.height)]
        assert any("line 11999" in line for line in rendered)
