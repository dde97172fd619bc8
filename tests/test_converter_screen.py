"""Pilot tests of the Import Converter screen at 80x24, keyboard only."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList

from patron_tui.services.imports.properties import parse_properties
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.converter import (
    ConverterScreen,
    EncodingScreen,
    FieldPickerScreen,
    PreviewScreen,
    SavePathScreen,
)
from patron_tui.ui.screens.query_dialogs import ConfirmScreen
from patron_tui.ui.screens.sections import JobsScreen
from tests.pilot import in_every_theme, type_text

SAMPLES = Path(__file__).parents[1] / "sample_data"
STUDENTS = SAMPLES / "students_windows1252.csv"


async def settle(app, pilot, rounds: int = 3):
    for _ in range(rounds):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


def mapping(app) -> dict[str, str]:
    table = app.screen.query_one("#converter-mapping", DataTable)
    return {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[1]) for i in range(table.row_count)}


async def open_converter(app, pilot, path: Path | str):
    await pilot.press("4")
    await settle(app, pilot)
    assert isinstance(app.screen, JobsScreen)
    await pilot.press("enter")  # the highlighted job: the Import Converter
    await settle(app, pilot)
    assert isinstance(app.screen, ConverterScreen)
    await type_text(app, pilot, str(path))
    await pilot.press("enter")
    await settle(app, pilot)


async def move_to(app, pilot, column: str):
    table = app.screen.query_one("#converter-mapping", DataTable)
    target = list(mapping(app)).index(column)
    while table.cursor_row != target:
        await pilot.press("down" if table.cursor_row < target else "up")
    await pilot.pause()


async def test_convert_students_file(small_store, tmp_path):
    # one walkthrough in patron-dark; each screen it reaches is checked in every theme (this was
    # two walkthroughs, patron-dark and patron-mono, with the same assertions)
    csv_copy = tmp_path / "students.csv"
    csv_copy.write_bytes(STUDENTS.read_bytes())
    app = make_app(small_store.path, theme="patron-dark", operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_converter(app, pilot, csv_copy)
        info = str(app.screen.query_one("#converter-info").render())
        assert "Encoding: windows-1252" in info
        assert "Delimiter: ," in info
        shown = mapping(app)
        assert shown["Last Name"] == "last_name"
        assert shown["Student Barcode"] == "barcode"
        assert shown["Nickname"] == "nickname"
        assert app.screen.query_one(DataTable).has_focus
        await in_every_theme(app, pilot)

        # Nickname -> (not imported), by filter and Enter
        await move_to(app, pilot, "Nickname")
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, FieldPickerScreen)
        await in_every_theme(app, pilot)
        await pilot.press(*"not imp", "enter")
        await settle(app, pilot)
        assert mapping(app)["Nickname"] == "(not imported)"
        # Homeroom -> location2 with m and Down
        await move_to(app, pilot, "Homeroom")
        await pilot.press("m")
        await settle(app, pilot)
        assert isinstance(app.screen, FieldPickerScreen)
        await pilot.press(*"location", "enter")  # location2 is the only match
        await settle(app, pilot)
        assert mapping(app)["Homeroom"] == "location2"

        # the preview: page to rows 41-60 and find the bad date of row 51
        await pilot.press("p")
        await settle(app, pilot)
        assert isinstance(app.screen, PreviewScreen)
        table = app.screen.query_one(DataTable)
        assert table.row_count == 20
        await pilot.press("n")
        await settle(app, pilot)
        await pilot.press("n")
        await settle(app, pilot)
        rows = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[5]) for i in range(table.row_count)}
        assert "02/30/2010" in rows["51"] and "not a date" in rows["51"]
        assert "barcode is missing" in rows["52"]
        # the highlighted row's problems in full below the table
        for _ in range(10):
            await pilot.press("down")
        await pilot.pause()
        assert "not a date" in str(app.screen.query_one("#preview-detail").render())
        await in_every_theme(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConverterScreen)

        # save next to the CSV (the default path)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, SavePathScreen)
        assert app.screen.query_one(Input).value == str(tmp_path / "students.properties")
        await in_every_theme(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        out = tmp_path / "students.properties"
        assert out.exists()
        parsed = parse_properties(out.read_text(encoding="ascii"))
        assert parsed.encoding in ("windows-1252", "cp1252")
        text = out.read_text()
        assert "field.last_name=Last Name" in text
        assert "field.nickname" not in text
        assert "field.location2=Homeroom" in text and "field.homeroom" not in text

        # saving again asks; anything but "yes" keeps the file
        out.write_text("# kept\n")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await in_every_theme(app, pilot)
        await pilot.press(*"no", "enter")
        await settle(app, pilot)
        assert out.read_text() == "# kept\n"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press(*"yes", "enter")
        await settle(app, pilot)
        assert "field.location2=Homeroom" in out.read_text()
        assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]

        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)


async def test_encoding_can_be_changed(small_store):
    app = make_app(small_store.path, theme="patron-mono", operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_converter(app, pilot, STUDENTS)
        assert "Encoding: windows-1252" in str(app.screen.query_one("#converter-info").render())
        await pilot.press("e")
        await settle(app, pilot)
        assert isinstance(app.screen, EncodingScreen)
        await pilot.press("enter")  # open the choices; the current one is highlighted
        await pilot.pause()
        await pilot.press("down", "down", "enter")  # windows-1252 -> mac-roman -> iso-8859-1
        await settle(app, pilot)
        assert isinstance(app.screen, ConverterScreen)
        info = str(app.screen.query_one("#converter-info").render())
        assert "Encoding: iso-8859-1" in info and "chosen by the operator" in info
        assert mapping(app)["Last Name"] == "last_name"


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "missing.csv", "missing.csv: no such file"),
    (lambda tmp: tmp, "is a directory"),
    (lambda tmp: (tmp / "image.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
     and tmp / "image.csv", "not a text file"),
])
async def test_bad_path_shows_a_clear_error(small_store, tmp_path, make, expected):
    path = make(tmp_path)
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_converter(app, pilot, path)
        assert isinstance(app.screen, ConverterScreen)
        assert expected in str(app.screen.query_one("#converter-error").render())
        # nothing to map, preview or save yet: each key says so and nothing crashes
        await pilot.press("tab", "p", "m", "ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, ConverterScreen)
        assert app.return_code is None


async def test_jobs_lists_the_converter_and_c_opens_it(small_store):
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        options = app.screen.query_one("#jobs-list", OptionList)
        assert "Import Converter" in str(options.get_option_at_index(0).prompt)
        assert "Job Manager" in str(app.screen.query_one("#jobs-later").render())
        await pilot.press("c")
        await settle(app, pilot)
        assert isinstance(app.screen, ConverterScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)


async def test_invalid_properties_text_is_not_saved(small_store, tmp_path, monkeypatch):
    from patron_tui.services.imports.properties import PropertiesError
    from patron_tui.ui.screens import converter

    def refuse(text, *, source="<properties>"):
        raise PropertiesError(source, [(7, "field.last_name: no such column 'Last Nmae'")])

    monkeypatch.setattr(converter, "parse_properties", refuse)
    out = tmp_path / "out.properties"
    app = make_app(small_store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_converter(app, pilot, STUDENTS)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(app, pilot, str(out))
        await pilot.press("enter")
        await settle(app, pilot)
        error = str(app.screen.query_one("#converter-error").render())
        assert "Not saved" in error and f"{out}:7: field.last_name" in error
        assert not out.exists()
