"""The Patrons section through the keyboard at 80x24: the virtual list, the cursor, the detail view."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from patron_tui.services import patrons as svc
from patron_tui.store import ChangesetWriter, Store, utc_now
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.key_help import KeyHelpScreen
from patron_tui.ui.screens.patrons import PatronDetailScreen, PatronsScreen
from patron_tui.ui.themes import load_themes
from patron_tui.ui.widgets.log_pane import LogPane
from patron_tui.ui.widgets.patron_table import BLOCK, KEEP_BLOCKS, PatronTable, fit, layout_columns


@pytest.fixture(autouse=True)
def _config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_TUI_CONFIG_DIR", str(tmp_path / "config"))


def make_district(path: Path, rows) -> Store:
    """A new store with an HS site and `rows` (dicts of patron fields) added in one changeset."""
    store = Store.create(path, operator="tester")
    conn = store.connect()
    now = utc_now()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("sites", {"code": "HS", "name": "High School"})
        w.insert_many("patrons", ({"site": "HS", "created_at": now, "updated_at": now, **r} for r in rows))
    conn.close()
    return store


def ids_in_order(path: Path, order: str = "last_name, first_name, id") -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute(f"SELECT id FROM patrons WHERE is_system = 0 ORDER BY {order}")]
    finally:
        conn.close()


async def settle(app, pilot) -> None:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def open_patrons(app, pilot) -> PatronTable:
    await settle(app, pilot)
    await pilot.press("2")
    await settle(app, pilot)
    assert isinstance(app.screen, PatronsScreen)
    return app.screen.query_one(PatronTable)


def screen_text(app) -> str:
    """Everything on the terminal as drawn now."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def shown_ids(table: PatronTable) -> list[int]:
    """The IDs in the rows drawn now (the first cell of each drawn row)."""
    lines = table.rendered_lines()[1:]
    return [int(line.split()[0]) for line in lines if line.strip() and line.split()[0].isdigit()]


@pytest.fixture
def small(tmp_path) -> Store:
    return make_district(tmp_path / "small.db", [
        {"barcode": f"P{i:04d}", "district_id": f"D{i:04d}", "last_name": f"Name{i % 7}",
         "first_name": f"First{i:02d}", "grade": str(1 + i % 12), "homeroom": f"R{i % 5}",
         "status": "Active" if i % 4 else "Inactive", "email": f"p{i}@example.org"}
        for i in range(30)
    ])


async def test_list_cursor_and_detail_by_keyboard(small):
    order = ids_in_order(small.path)
    app = make_app(small.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_patrons(app, pilot)
        assert app.focused is table
        lines = screen_text(app).splitlines()
        assert lines[2].strip().startswith("search:")  # the empty statement line
        count = lines[3]
        assert count.strip().startswith("30 patrons") and "by last name asc" in count
        header, *rows = table.rendered_lines()
        for label in ("ID", "Barcode", "Last name", "Site", "Status"):
            assert label in header
        assert all(len(line) <= 80 for line in table.rendered_lines())
        assert shown_ids(table) == order[: len(shown_ids(table))]
        assert len(shown_ids(table)) == table.scrollable_content_region.height - 1

        await pilot.press("down", "down", "down")
        assert table.cursor_row == 3
        assert "row 4" in screen_text(app)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, PatronDetailScreen)
        assert app.screen.patron_id == order[3]
        detail = "\n".join(app.screen.rendered_lines())
        conn = small.connect()
        want = svc.patron_detail(conn, order[3])
        conn.close()
        for field in ("barcode", "district_id", "last_name", "first_name", "homeroom", "email"):
            assert want[field] in detail
        for section in ("Notes (0)", "Charges (0)", "Checkouts (0)", "Holds (0)", "History (0)",
                        "Reviews (0)", "Profiles (0)"):
            assert section in detail
        assert want["barcode"] in screen_text(app)

        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, PatronsScreen)
        assert table.cursor_row == 3 and app.focused is table

        # sort by ID, then reverse it
        await pilot.press("s")
        await settle(app, pilot)
        assert table.sort == "id" and table.cursor_row == 0
        assert shown_ids(table)[:3] == sorted(order)[:3]
        await pilot.press("o")
        await settle(app, pilot)
        assert shown_ids(table)[:3] == sorted(order, reverse=True)[:3]
        assert "desc" in screen_text(app).splitlines()[3]

        # the log pane hides with ctrl+l and the list takes the room
        rows_before = table.scrollable_content_region.height
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert not app.screen.query_one(LogPane).display
        assert table.scrollable_content_region.height > rows_before

        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, KeyHelpScreen)
        keys = {what for _, what in app.screen.keys}
        assert {"Details", "Sort", "Reverse", "Reload"} <= keys


HOSTILE_NAMES = ("O'Hara [/b] [@click=app.quit]x", "[bold]Robert'); DROP TABLE patrons;--")
HOSTILE_HOMEROOMS = {"\x1b[2J": "␛[2J", "\x1b]0;pwned\x07": "␛]0;pwned␇", "\u202eevil": "<U+202E>evil"}


async def test_hostile_data_is_shown_as_written_and_never_acted_on(tmp_path):
    homerooms = list(HOSTILE_HOMEROOMS)
    store = make_district(tmp_path / "hostile.db", [
        {"barcode": "H1", "last_name": HOSTILE_NAMES[0], "first_name": "Kim", "homeroom": homerooms[0]},
        {"barcode": "H2", "last_name": HOSTILE_NAMES[1], "first_name": "Bobby", "homeroom": homerooms[1]},
        {"barcode": "H3", "last_name": "Plain", "first_name": "\x1b[31mRed", "homeroom": homerooms[2]},
    ])
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_patrons(app, pilot)
        lines = table.rendered_lines()
        drawn = "\n".join(lines)
        assert "\x1b" not in drawn and "\x07" not in drawn and "\u202e" not in drawn
        # at 80 columns names are cut to their column, but what is there is literal
        assert "[bold]Rob" in drawn and "O'Hara [/" in drawn
        assert "␛[2J" in drawn  # the homeroom column is 4 cells wide at 80 columns

        # wide enough for whole names: exactly as written, placeholders for the controls
        await pilot.resize_terminal(250, 30)
        await settle(app, pilot)
        drawn = "\n".join(table.rendered_lines())
        for name in HOSTILE_NAMES:
            assert name in drawn
        for placeholder in HOSTILE_HOMEROOMS.values():
            assert placeholder in drawn
        assert "␛[31mRed" in drawn
        assert "\x1b" not in screen_text(app)
        await pilot.resize_terminal(80, 24)
        await settle(app, pilot)

        # every hostile patron in the detail view
        for row in range(3):
            table.move_cursor(row)
            await pilot.press("enter")
            await settle(app, pilot)
            assert isinstance(app.screen, PatronDetailScreen)
            detail = "\n".join(app.screen.rendered_lines())
            on_screen = screen_text(app)
            assert "\x1b" not in detail + on_screen and "\u202e" not in detail + on_screen
            patron = app.screen.detail
            assert patron is not None
            assert svc.sort_key(patron, "last_name")[0] in (*HOSTILE_NAMES, "Plain")
            if patron["last_name"] in HOSTILE_NAMES:
                assert f"Last name               {patron['last_name']}" in detail
                assert patron["last_name"] in on_screen
            assert HOSTILE_HOMEROOMS[patron["homeroom"]] in detail
            await pilot.press("escape")
            await settle(app, pilot)
            assert isinstance(app.screen, PatronsScreen)

        # clicking where [@click=app.quit] is drawn does nothing but move the cursor
        index = next(i for i in range(3) if table.row_at(i)["barcode"] == "H1")
        table.move_cursor(2 - index)
        await pilot.click(PatronTable, offset=(30, 1 + index))
        await settle(app, pilot)
        assert app.is_running and isinstance(app.screen, PatronsScreen)
        assert table.cursor_row == index
    assert app.return_code in (None, 0)
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("SELECT count(*) FROM patrons WHERE barcode LIKE 'H%'").fetchone()[0] == 3
    finally:
        conn.close()


async def test_twenty_thousand_patrons_open_jump_and_page(tmp_path):
    n = 20_000
    store = make_district(tmp_path / "big.db", (
        {"barcode": f"B{i:06d}", "district_id": f"D{i:06d}", "last_name": f"L{(i * 7919) % 997:04d}",
         "first_name": f"F{i % 13}", "grade": "9", "email": f"p{i}@example.org"}
        for i in range(n)
    ))
    order = ids_in_order(store.path)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_patrons(app, pilot)
        assert table.total == n
        assert "20,000 patrons" in screen_text(app)
        page = table.scrollable_content_region.height - 1

        def check_view() -> None:
            top = int(table.scroll_y)
            assert shown_ids(table) == order[top: top + page]
            assert table.cursor_patron is not None
            assert table.cursor_patron["id"] == order[table.cursor_row]
            held = sum(len(b) for b in table._blocks.values())
            assert held <= KEEP_BLOCKS * BLOCK

        check_view()
        await pilot.press("end")
        await settle(app, pilot)
        assert table.cursor_row == n - 1
        check_view()
        assert shown_ids(table)[-1] == order[-1]
        assert "row 20,000" in screen_text(app)

        await pilot.press("enter")
        await settle(app, pilot)
        assert app.screen.patron_id == order[-1]
        await pilot.press("escape")
        await settle(app, pilot)

        for _ in range(3):
            await pilot.press("pageup")
            await settle(app, pilot)
            check_view()
        await pilot.press("home")
        await settle(app, pilot)
        assert table.cursor_row == 0 and int(table.scroll_y) == 0
        for presses in range(1, 8):
            await pilot.press("pagedown")
            await settle(app, pilot)
            assert table.cursor_row == presses * page
            check_view()
        # sequential paging: down across a block boundary
        table.move_cursor(BLOCK * 3 - 2)
        await settle(app, pilot)
        for _ in range(page + 3):
            await pilot.press("down")
        await settle(app, pilot)
        check_view()
        # a jump into the middle (as a scrollbar drag does)
        table.scroll_to(y=12_345, animate=False)
        await settle(app, pilot)
        top = int(table.scroll_y)
        assert shown_ids(table) == order[top: top + page]


@pytest.mark.parametrize("theme", [t.name for t in load_themes()[0]])
async def test_header_and_cursor_stand_out_in_every_theme(small, theme):
    app = make_app(small.path, operator="tester", theme=theme)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_patrons(app, pilot)
        await pilot.press("down")

        def style(y: int):
            return table.render_line(y)._segments[0].style

        header, cursor, plain = style(0), style(2), style(1)
        assert cursor != plain and header != plain
        assert cursor.bgcolor != plain.bgcolor or cursor.reverse or cursor.color != plain.color


def test_columns_fit_every_width():
    for width in range(46, 260, 7):
        cols = layout_columns(width)
        used = 1 + sum(w for _, w in cols) + len(cols) - 1
        assert used == width or all(w >= c.width for c, w in cols), width
        assert {"id", "barcode", "last_name", "first_name", "status"} <= {c.name for c, _ in cols}
    # all twelve on an 80-column terminal (the scrollbar takes a cell), names first to grow
    assert len(layout_columns(79)) == len(svc.COLUMNS)
    assert len(layout_columns(79, id_width=4)) == len(svc.COLUMNS)
    assert dict((c.name, w) for c, w in layout_columns(79, id_width=4))["last_name"] > 10
    assert fit("20417000100300", 9, keep_end=True) == "…00100300"
    assert fit("Abernathy-Smith", 8) == "Abernat…"
    assert fit("漢字漢字", 5) == "漢字…" and fit("漢字漢字", 5, keep_end=True) == "…漢字"
    assert fit("42", 5, right=True) == "   42"
