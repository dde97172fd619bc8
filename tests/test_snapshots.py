"""SVG snapshot of Home at 80x24 (update with `pytest --snapshot-update`)."""

from __future__ import annotations

from patron_tui.ui.app import make_app


def test_home_snapshot(small_store, snap_compare):
    app = make_app(small_store.path, operator="tester", theme="patron-dark")

    async def settle(pilot):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)
