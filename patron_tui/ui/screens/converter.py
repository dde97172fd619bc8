"""The Import Converter screen (Jobs section): from a patron CSV to a properties file.

The operator names a CSV; a worker sniffs it (encoding, delimiter, header) and guesses the
mapping from the header names. The mapping table lets the operator change each column's
patron field by keyboard, the preview shows converted records with the problems basic
checks found, and Ctrl+S validates the properties text and writes it atomically.
The work is done by `patron_tui.services.imports`; this module only asks and shows.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from patron_tui.services.imports.converter import (
    DATE_FIELDS,
    PATRON_FIELDS,
    Guess,
    PreviewRow,
    Sniffed,
    build_properties_text,
    column_values,
    guess_date_format,
    guess_mapping,
    preview,
    save_properties,
    sniff,
)
from patron_tui.services.imports.properties import PropertiesError, parse_properties
from patron_tui.services.imports.sourcefile import refusal
from patron_tui.textsafe import visible
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, ConfirmScreen, PathScreen

NOT_IMPORTED = "(not imported)"
ENCODING_CHOICES = ("utf-8", "utf-8-sig", "windows-1252", "mac-roman", "iso-8859-1", "utf-16")
PREVIEW_ROWS = 20


# --------------------------------------------------------------------------- helpers


def sniff_file(path: Path, encoding: str | None = None) -> Sniffed:
    """Sniff `path` (in `encoding` when the operator chose one), with plain refusals."""
    refused = refusal(path)   # no such file, a directory, a FIFO, a link loop: said as such
    if refused:
        raise ValueError(refused)
    sniffed = sniff(path, encoding=encoding)   # ImportFileError (a ValueError): starts with NULs
    if not sniffed.header or (len(sniffed.header) < 2 and not sniffed.sample_rows):
        raise ValueError(f"{path} does not look like a CSV file (no columns found)")
    return sniffed


def _looks_binary(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False  # UTF-16 has NUL bytes by design
    if head.startswith(b"\x00\x00"):
        return False  # sniff says it: starts with NUL bytes (a sparse or unfinished file?)
    return b"\x00" in head and head.count(b"\x00") < len(head) // 4


# --------------------------------------------------------------------------- dialogs


class FieldPickerScreen(ModalScreen["str | None"]):
    """Choose the patron field for one CSV column; typing filters the list.

    Returns the field, "" for "(not imported)", or None when cancelled."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("down", "move(1)", "Next field", show=False),
        Binding("up", "move(-1)", "Previous field", show=False),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="FieldPickerScreen") + """
    FieldPickerScreen > Vertical { width: 50; }
    FieldPickerScreen OptionList { height: auto; max-height: 12; }
    """

    def __init__(self, column: str, current: str) -> None:
        super().__init__()
        self.column = column
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-frame"):
            yield Label(Content("Type to filter:"))
            yield Input(id="picker-filter", compact=True)
            yield OptionList(id="picker-list")
            yield Static(Content("Up/Down moves · Enter chooses · Esc cancels"), classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#picker-frame").border_title = Content(f"Field for {visible(self.column)}")
        self._fill("")
        self.query_one(Input).focus()

    def _fill(self, text: str) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        wanted = text.strip().casefold()
        names = [NOT_IMPORTED, *PATRON_FIELDS]
        shown = [n for n in names if wanted in n.casefold()]
        ol.add_options([Option(Content(n + ("  (current)" if n == self.current else "")), id=n)
                        for n in shown])
        if shown:
            ol.highlighted = shown.index(self.current) if self.current in shown and not wanted else 0

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    def action_move(self, step: int) -> None:
        ol = self.query_one(OptionList)
        if ol.option_count:
            ol.highlighted = ((ol.highlighted or 0) + step) % ol.option_count

    def _choose(self, option_id: str | None) -> None:
        if option_id is not None:
            self.dismiss("" if option_id == NOT_IMPORTED else option_id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is None:
            self.notify("No field matches; change the filter.", severity="warning", markup=False)
            return
        self._choose(ol.get_option_at_index(ol.highlighted).id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._choose(event.option.id)


class EncodingScreen(ModalScreen["str | None"]):
    """Choose the encoding the CSV is read with."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = DIALOG_CSS.format(name="EncodingScreen") + """
    EncodingScreen > Vertical { width: 50; }
    """

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        choices = list(ENCODING_CHOICES)
        if self.current not in choices:
            choices.append(self.current)
        with Vertical(id="encoding-frame"):
            yield Label(Content("Encoding (Enter opens the choices):"))
            yield Select([(c, c) for c in choices], value=self.current, allow_blank=False,
                         id="encoding-select", compact=True)
            yield Static(Content("Choosing one re-reads the file · Esc cancels"), classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#encoding-frame").border_title = Content("Read the CSV as")
        self.query_one(Select).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value != self.current and event.value is not Select.BLANK:
            self.dismiss(str(event.value))


class SavePathScreen(PathScreen):
    """Ask where the properties file goes."""

    DEFAULT_CSS = DIALOG_CSS.format(name="SavePathScreen")

    def __init__(self, default: Path) -> None:
        super().__init__(default, title="Save properties file", frame_id="save-path-frame", input_id="save-path",
                         label="Properties file:", keys="Enter saves · Esc cancels")


class PreviewScreen(Screen[None]):
    """Twenty converted records at a time, each with the problems basic checks found."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("n", "page(1)", "Next 20"),
        Binding("b", "page(-1)", "Previous 20"),
    ]
    DEFAULT_CSS = """
    PreviewScreen #preview-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    PreviewScreen #preview-table { height: 1fr; }
    PreviewScreen #preview-detail { height: 6; padding: 0 1; border-top: solid $primary; overflow-y: auto; }
    """

    def __init__(self, sniffed: Sniffed, fields: dict[str, str], date_format: str) -> None:
        super().__init__()
        self.sniffed = sniffed
        self.fields = dict(fields)
        self.date_format = date_format
        self.skip = 0
        self.rows: list[PreviewRow] = []

    def compose(self) -> ComposeResult:
        yield Static(id="preview-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="preview-table")
        yield Static(id="preview-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Row", "Line", "Barcode", "Last name", "First name", "Problems")
        table.focus()
        self.load()

    def action_page(self, step: int) -> None:
        if step < 0 and self.skip == 0:
            self.notify("This is the first page.", markup=False)
            return
        if step > 0 and len(self.rows) < PREVIEW_ROWS:
            self.notify("This is the last page.", markup=False)
            return
        self.skip = max(0, self.skip + step * PREVIEW_ROWS)
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="converter-preview")
    def load(self) -> None:
        try:
            rows = preview(self.sniffed.path, self.sniffed, self.fields, limit=PREVIEW_ROWS,
                           skip=self.skip, date_format=self.date_format)
        except (OSError, UnicodeError, ValueError) as exc:
            self.app.call_from_thread(self.notify, f"The preview failed: {visible(exc)}",
                                      severity="error", markup=False)
            return
        self.app.call_from_thread(self.show_rows, rows)

    def show_rows(self, rows: list[PreviewRow]) -> None:
        self.rows = rows
        table = self.query_one(DataTable)
        table.clear()
        for r in rows:
            problems = Text(visible("; ".join(r.problems)) if r.problems else "ok",
                            style="bold" if r.problems else "", no_wrap=True)
            table.add_row(str(r.row), str(r.line), *(Text(visible(r.values.get(f, "")), no_wrap=True)
                          for f in ("barcode", "last_name", "first_name")), problems)
        bad = sum(1 for r in rows if r.problems)
        if rows:
            span = f"rows {rows[0].row}-{rows[-1].row}"
        else:
            span = "no rows"
        self.query_one("#preview-title", Static).update(Content(
            f"Preview of {visible(self.sniffed.path.name)}: {span}, {bad} with problems "
            f"(n next, b previous)"))
        self.show_detail(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail(event.cursor_row)

    def show_detail(self, index: int) -> None:
        detail = self.query_one("#preview-detail", Static)
        if not 0 <= index < len(self.rows):
            detail.update(Content(""))
            return
        r = self.rows[index]
        text = Text()
        text.append(f"Row {r.row} (line {r.line}): ", "bold")
        text.append(", ".join(f"{f}={visible(v)}" for f, v in r.values.items() if v))
        for p in r.problems or ["no problems found"]:
            text.append("\n• " + visible(p))
        detail.update(text)


# --------------------------------------------------------------------------- the converter


class ConverterScreen(Screen[None]):
    """Build a properties file from a patron CSV: sniff, map, preview, save."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("m", "change_mapping", "Change mapping"),
        Binding("e", "change_encoding", "Encoding"),
        Binding("p", "preview", "Preview"),
        Binding("ctrl+s", "save", "Save properties"),
        Binding("f", "focus_path", "File path"),
    ]
    DEFAULT_CSS = """
    ConverterScreen #converter-title { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    ConverterScreen #converter-path { margin: 0 1; }
    ConverterScreen #converter-info { height: auto; max-height: 5; padding: 0 1; }
    ConverterScreen #converter-error { display: none; height: auto; max-height: 6; padding: 0 1; color: $error; }
    ConverterScreen #converter-mapping { height: 1fr; }
    ConverterScreen #converter-help { height: 1; padding: 0 1; color: $foreground-muted; }
    """

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        self.initial_path = str(path) if path else ""
        self.sniffed: Sniffed | None = None
        self.guess: Guess | None = None
        self.fields: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static(Content("Import Converter: build a properties file from a CSV"), id="converter-title")
        yield Input(value=self.initial_path, placeholder="Path of the CSV file, then Enter",
                    id="converter-path", compact=True)
        yield Static(Content(""), id="converter-error")
        yield Static(Content("Type the path of a patron CSV file and press Enter."), id="converter-info")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="converter-mapping")
        yield Static(Content("Enter/m changes a mapping · e encoding · p preview · Ctrl+S saves · Esc back"),
                     id="converter-help")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("CSV column", "Patron field", "Sample value")
        self.query_one("#converter-path", Input).focus()

    def action_focus_path(self) -> None:
        self.query_one("#converter-path", Input).focus()

    # -- sniffing -------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.show_error("Type the path of a CSV file first.")
            return
        self.load(Path(value).expanduser(), None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="converter-sniff")
    def load(self, path: Path, encoding: str | None) -> None:
        try:
            if path.is_file() and _looks_binary(path):
                raise ValueError(f"{path} is not a text file")
            sniffed = sniff_file(path, encoding)
        except PermissionError:
            self.app.call_from_thread(self.show_error, f"Cannot read {path}: permission denied.")
            return
        except (OSError, ValueError, UnicodeError, LookupError) as exc:
            self.app.call_from_thread(self.show_error, str(exc))
            return
        guess = guess_mapping(sniffed.header)
        self.app.call_from_thread(self.show_sniffed, sniffed, guess)

    def show_error(self, message: str) -> None:
        self.set_error(message)
        self.notify(visible(message.splitlines()[0]), severity="error", markup=False)

    def set_error(self, message: str) -> None:
        error = self.query_one("#converter-error", Static)
        error.update(Content("\n".join(visible(line) for line in message.splitlines())))
        error.display = bool(message)

    def show_sniffed(self, sniffed: Sniffed, guess: Guess) -> None:
        same_columns = self.sniffed is not None and self.sniffed.path == sniffed.path \
            and self.sniffed.header == sniffed.header
        self.sniffed = sniffed
        if not same_columns:
            self.guess = guess
            self.fields = dict(guess.fields)
        self.set_error("")
        fmt = guess.recognised_format
        fmt_text = f"{fmt} (confidence {guess.format_confidence:.2f})" if fmt else "not recognised"
        info = (
            f"Encoding: {sniffed.encoding} — {visible(sniffed.encoding_reason)}\n"
            f"Delimiter: {visible(sniffed.delimiter_name)} — {visible(sniffed.delimiter_reason)}\n"
            f"Header row: {'yes' if sniffed.has_header else 'no'} · {len(sniffed.header)} columns · "
            f"format: {visible(fmt_text)}"
        )
        self.query_one("#converter-info", Static).update(Content(info))
        self.refresh_table()
        self.query_one(DataTable).focus()
        self.notify(f"Read {visible(sniffed.path.name)} as {sniffed.encoding}.", markup=False)

    def field_of(self, column: str) -> str:
        return next((f for f, c in self.fields.items() if c == column), "")

    def refresh_table(self, keep: int | None = None) -> None:
        assert self.sniffed is not None
        table = self.query_one(DataTable)
        table.clear()
        for column in self.sniffed.header:
            fld = self.field_of(column)
            sample = next(iter(column_values(self.sniffed, column)), "")
            table.add_row(Text(visible(column), no_wrap=True),
                          Text(fld or NOT_IMPORTED, style="bold" if fld else "", no_wrap=True),
                          Text(visible(sample), no_wrap=True, overflow="ellipsis"))
        if keep is not None and table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))

    # -- mapping ---------------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "converter-mapping":
            self.action_change_mapping()

    def _need_file(self) -> bool:
        if self.sniffed is None:
            self.notify("Read a CSV file first: type its path and press Enter.", severity="warning",
                        markup=False)
            return False
        return True

    def action_change_mapping(self) -> None:
        if not self._need_file():
            return
        assert self.sniffed is not None
        row = self.query_one(DataTable).cursor_row
        if not 0 <= row < len(self.sniffed.header):
            return
        column = self.sniffed.header[row]
        current = self.field_of(column) or NOT_IMPORTED
        self.app.push_screen(FieldPickerScreen(column, current),
                             lambda chosen: self.set_mapping(row, column, chosen))

    def set_mapping(self, row: int, column: str, chosen: str | None) -> None:
        if chosen is None:
            return
        for fld in [f for f, c in self.fields.items() if c == column]:
            del self.fields[fld]
        message = f"{visible(column)} is not imported."
        if chosen:
            previous = self.fields.get(chosen)
            self.fields[chosen] = column
            message = f"{visible(column)} now fills {chosen}."
            if previous and previous != column:
                message += f" {visible(previous)} is no longer imported."
        self.refresh_table(keep=row)
        self.notify(message, markup=False)

    # -- encoding --------------------------------------------------------------------------
    def action_change_encoding(self) -> None:
        if not self._need_file():
            return
        assert self.sniffed is not None
        path = self.sniffed.path
        self.app.push_screen(EncodingScreen(self.sniffed.encoding),
                             lambda enc: enc and self.load(path, enc))

    # -- preview ---------------------------------------------------------------------------
    def date_format(self) -> str:
        assert self.sniffed is not None
        values = [v for f in DATE_FIELDS if f in self.fields
                  for v in column_values(self.sniffed, self.fields[f])]
        return guess_date_format(values)[0]

    def action_preview(self) -> None:
        if not self._need_file():
            return
        assert self.sniffed is not None
        self.app.push_screen(PreviewScreen(self.sniffed, self.fields, self.date_format()))

    # -- saving ----------------------------------------------------------------------------
    def action_save(self) -> None:
        if not self._need_file():
            return
        assert self.sniffed is not None
        default = self.sniffed.path.with_suffix(".properties")
        self.app.push_screen(SavePathScreen(default), self._save_to)

    def _save_to(self, path: Path | None) -> None:
        if path is None:
            return
        assert self.sniffed is not None and self.guess is not None
        text = build_properties_text(self.sniffed, self.guess, fields=dict(self.fields),
                                     source_name=self.sniffed.path.name)
        try:
            parse_properties(text, source=str(path))
        except PropertiesError as exc:
            self.show_error("Not saved; the properties text is not valid:\n" + "\n".join(exc.messages))
            return
        if path.is_dir():
            self.show_error(f"{path} is a folder; name a file.")
            return
        if path.exists():
            self.app.push_screen(
                ConfirmScreen(f"{visible(path)} exists. Replace it?", "yes"),
                lambda ok: self.write(path, text) if ok else self.notify(
                    "Not saved; the existing file was kept.", markup=False),
            )
            return
        self.write(path, text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="converter-save")
    def write(self, path: Path, text: str) -> None:
        try:
            save_properties(path, text)
        except OSError as exc:
            self.app.call_from_thread(self.show_error, f"Not saved: {exc}")
            return
        self.app.call_from_thread(self.saved, path)

    def saved(self, path: Path) -> None:
        self.set_error("")
        self.notify(f"Saved the properties file {visible(path)}.", markup=False, timeout=10)
