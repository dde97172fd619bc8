"""The Check database run started in the console streams into the log pane."""

from __future__ import annotations

from patron_tui.store import runlog
from patron_tui.ui.app import make_app
from patron_tui.ui.widgets.log_pane import LogPane

from .conftest import add_patrons
from .pilot import wait_until


async def wait_for_runs(app, pilot) -> None:
    """Until the runs have ended and the last one's "finished" line is shown in the log pane
    (the pane scrolls to it on its next refresh, after the line arrives)."""
    def done() -> bool:
        if app.engine is None or not app.engine._handles or app.engine.active_runs():
            return False
        view = app.screen.query_one(LogPane).view
        return any("finished" in view.render_line(y).text for y in range(view.size.height))

    await wait_until(app, pilot, done)


async def test_check_run_streams_faults_into_log_pane(small_store):
    add_patrons(small_store, [
        {"barcode": "UNION1", "site": "UNION", "last_name": "Lost", "first_name": "Ann", "grade": "3"},
        {"barcode": "BADGRADE", "site": "HS", "last_name": "O'Hara [/b]", "first_name": "Kim", "grade": "13"},
    ])
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("5")
        await pilot.pause()
        await pilot.press("enter")  # the highlighted utility: Check database
        await wait_for_runs(app, pilot)
        pane = app.screen.query_one(LogPane)
        rows = pane.view.rows
        texts = " | ".join(r.text for r in rows)
        barcodes = {r.barcode for r in rows if r.level == "warning"}
        assert {"UNION1", "BADGRADE"} <= barcodes, texts
        assert "O'Hara [/b]" in texts  # shown literally
        rendered = "\n".join(pane.view.render_line(y).text for y in range(pane.view.size.height))
        assert "finished" in rendered
        run_id = rows[-1].run_id
    conn = small_store.connect()
    try:
        run = runlog.get_run(conn, run_id)
        stored = {m["barcode"] for m in runlog.messages(conn, run_id, ["warning"])}
    finally:
        conn.close()
    assert run["status"] == "succeeded"
    assert {"UNION1", "BADGRADE"} <= stored
    assert run["summary"]["faults"] >= 2


def test_cli_db_before_or_after_subcommand(tmp_path):
    from patron_tui.cli import build_parser

    assert build_parser().parse_args(["--db", "/x.db", "demo"]).db == "/x.db"
    assert build_parser().parse_args(["demo", "--db", "/y.db"]).db == "/y.db"
    assert build_parser().parse_args(["check"]).db is None
