"""Pilot tests at 80x24: statement, count, detail, save, freeze, reopen, export — keyboard only."""

from __future__ import annotations

import csv

import pytest

from patron_tui.services.demo import build_demo
from patron_tui.store import ChangesetWriter, Store
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.patrons import PatronDetailScreen, PatronsScreen
from patron_tui.ui.screens.query_dialogs import ExportScreen, SaveSetScreen, SetsScreen
from tests.pilot import type_text


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "district.db"
    build_demo(path, patrons=600, seed=5, operator="tester")   # the console's operator: level 0
    return path


def count(conn, where: str, params=()) -> int:
    return conn.execute(f"SELECT count(*) FROM patrons WHERE is_system = 0 AND ({where})", params).fetchone()[0]


async def settle(app, pilot, rounds: int = 3):
    for _ in range(rounds):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


async def type_statement(app, pilot, statement: str):
    await pilot.press("slash", "ctrl+a", "ctrl+k")  # to the statement line, cleared by keys
    await type_text(app, pilot, statement)
    await pilot.press("enter")
    await settle(app, pilot)


def count_line(app) -> str:
    return str(app.screen.query_one("#patrons-count").render())


async def test_statement_count_detail_save_freeze_reopen_export(demo_db, tmp_path):
    store = Store(demo_db)
    conn = store.connect()
    want = count(conn, "status = 'Active' AND grade IN ('11', '12')")
    assert want > 0
    app = make_app(demo_db, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await settle(app, pilot)
        assert isinstance(app.screen, PatronsScreen)
        # a typo: the caret message, the list unchanged
        await type_statement(app, pilot, "status = Actve")
        error = str(app.screen.query_one("#statement-error").render())
        assert "^^^^^" in error and "did you mean Active" in error
        # the real statement
        await type_statement(app, pilot, "status = Active and grade in (11, 12)")
        assert f"{want:,} patrons" in count_line(app)
        # open the patron under the cursor
        await pilot.press("down", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, PatronDetailScreen)
        shown = "\n".join(app.screen.rendered_lines())
        assert "Active" in shown
        await pilot.press("escape")
        await pilot.pause()
        # save as a live set
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SaveSetScreen)
        await pilot.press(*"Upper grades", "enter")
        await settle(app, pilot)
        assert "set Upper grades (live)" in count_line(app)
        # the data changes: one more active 12th grader
        victim = conn.execute("SELECT id FROM patrons WHERE is_system = 0 AND status = 'Inactive'"
                              " ORDER BY id LIMIT 1").fetchone()[0]
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.update("patrons", victim, {"grade": "12"})
        # freeze it from the sets list (f), then the data changes again
        await pilot.press("l")
        await settle(app, pilot)
        assert isinstance(app.screen, SetsScreen)
        await pilot.press("f")
        await settle(app, pilot)
        assert "frozen" in count_line(app) and f"{want:,} patrons" in count_line(app)
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.update("patrons", victim, {"status": "Active"})
        # reopen: the frozen set did not drift
        await pilot.press("1")
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        await pilot.press("l")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert f"{want:,} patrons" in count_line(app)
        # live again: it re-evaluates and now holds the new patron
        await pilot.press("l")
        await settle(app, pilot)
        await pilot.press("u")
        await settle(app, pilot)
        assert "(live)" in count_line(app) and f"{want + 1:,} patrons" in count_line(app)
        # export with BOM, keyboard only: path, then the encoding radio set, then Ctrl+S
        out = tmp_path / "upper.csv"
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(app, pilot, str(out))
        await pilot.press("tab")  # to the encoding choices
        await pilot.press("enter", "down", "enter")  # open, UTF-8 with BOM, choose
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        # delete the set: the answer must be typed
        await pilot.press("l")
        await settle(app, pilot)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press(*"Upper", "enter")  # a wrong answer does nothing
        await settle(app, pilot)
        assert conn.execute("SELECT count(*) FROM query_sets").fetchone()[0] == 1
        await pilot.press("l")
        await settle(app, pilot)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press(*"Upper grades", "enter")
        await settle(app, pilot)
        assert conn.execute("SELECT count(*) FROM query_sets").fetchone()[0] == 0
    conn.close()
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert len(rows) == want + 2  # header + the live set
    assert "Barcode" in rows[0]


async def test_statement_history_and_completion(demo_db):
    app = make_app(demo_db, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await settle(app, pilot)
        await type_statement(app, pilot, "grade = 5")
        await type_statement(app, pilot, "site = HS")
        inp = app.screen.statement_input
        await pilot.press("slash", "ctrl+a", "ctrl+k")
        await pilot.press("up")
        assert inp.value == "site = HS"
        await pilot.press("up")
        assert inp.value == "grade = 5"
        await pilot.press("down", "down")
        assert inp.value == ""
        # completion: type the start of a field name, Right takes the suggestion
        await type_text(app, pilot, "homer")
        await settle(app, pilot)   # the suggester runs in a worker and posts its suggestion
        await pilot.press("right")
        assert inp.value == "homeroom"
        await pilot.press("escape")
        assert app.focused is app.screen.table


async def test_export_columns_show_their_state_without_colour(demo_db):
    from patron_tui.services import export as export_svc
    from patron_tui.ui.screens.query_dialogs import MarkedSelectionList

    app = make_app(demo_db, operator="tester", theme="patron-mono")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await settle(app, pilot)
        await pilot.press("x")
        await pilot.pause()
        columns = app.screen.query_one(MarkedSelectionList)
        lines = [columns.render_line(y).text for y in range(columns.size.height)]
        labels = dict(export_svc.columns_available())
        for line in lines:
            name = next((n for n, label in labels.items() if line.strip()[3:].strip() == label), None)
            if name is None:
                continue
            box = line.strip()[:3]
            assert box[1] == ("X" if name in export_svc.DEFAULT_COLUMNS else " "), line
        await pilot.press("tab", "tab")  # to the column list
        assert app.focused is columns
        await pilot.press("down", "space")  # Barcode off
        await pilot.pause()
        assert "barcode" not in columns.selected
        lines = [columns.render_line(y).text.strip() for y in range(columns.size.height)]
        assert "▐ ▌ Barcode" in lines
