"""SVG snapshot of Home at 80x24 (update with `pytest --snapshot-update`)."""

from __future__ import annotations

from textual.widgets import DataTable

from patron_tui.ui.app import make_app
from tests.pilot import settle, wait_until


def test_home_snapshot(small_store, snap_compare):
    app = make_app(small_store.path, operator="tester", theme="patron-dark")

    async def figures_shown(pilot):
        # the figures arrive from a worker; each table then sizes its columns when idle, so
        # wait for the rows, then let the tables and the screen finish (rounds, not a clock)
        screen = pilot.app.screen
        await wait_until(pilot.app, pilot, lambda: screen.query_one("#home-status", DataTable).row_count
                         and screen.query_one("#home-sites", DataTable).row_count)
        await settle(pilot.app, pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=figures_shown)
