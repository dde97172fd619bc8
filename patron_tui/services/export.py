"""Export of patrons (a query set, a statement's matches) to a CSV file.

- Columns: any patron column except `password_hash` and `picture` (not for
  showing), plus the derived `balance` (the sum of the patron's charge
  balances, as money `0.00`). `columns_available()` lists them with labels;
  the header row holds the labels, in the order chosen.
- Encodings: UTF-8, UTF-8 with a byte-order mark (`utf-8-sig`, what Excel
  needs to read UTF-8), or Windows-1252. A Windows-1252 export of a value it
  cannot hold (Łukasz, 李) fails, naming the first offending patrons by
  barcode and column, and leaves no file; with `errors="replace"` such
  characters are written as `?` and the summary counts the cells changed.
- Spreadsheet formula injection: a text cell that starts with `=`, `+`, `-`,
  `@`, a tab or a carriage return gets a leading `'`, so a patron named
  `=HYPERLINK("http://x")` stays text. This applies to every *text* value,
  including barcodes like `-123`. Numbers stay numbers: values SQLite holds
  as integers or reals (id, graduation year, ...) and the derived balance,
  which this module formats itself from integer cents (`-12.50` is a credit,
  not a formula), are written bare.
- Streaming: rows are read in keyset pages (in the order of one of the
  patron list's sorts, `services.patrons.SORTS`, default by name) inside one
  read transaction, so a million patrons export in constant memory from one
  consistent snapshot. A big export (WALK_INDEX_ABOVE rows) in an indexed
  sort reads along that sort's index (`INDEXED BY`), so the whole export
  walks the index once; the other sorts sort the matching rows once per
  page, so they read bigger pages (UNINDEXED_PAGE rows: SQLite keeps only
  the page's rows in its sorter).
- No half files: a path export writes `.<name>.<random>.part` in the same
  folder and renames it over the destination only when complete; any failure
  (or an exception from the `progress` callback, which is how a caller
  cancels) removes it. A new file is readable by its owner only (0600: it
  holds personal data); a replaced file keeps its permissions.

Money, dates and codes are exported as stored; nothing is localised.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from patron_tui.services.patrons import DEFAULT_SORT, DETAIL_FIELDS, INDEXED_SORTS, count_patrons, sort_columns

__all__ = [
    "DEFAULT_COLUMNS",
    "ENCODINGS",
    "ExportColumn",
    "ExportError",
    "ExportEncodingError",
    "ExportSummary",
    "PATRON_COLUMNS",
    "Unencodable",
    "columns_available",
    "check_columns",
    "export_csv",
    "iter_rows",
    "neutralize",
]

Encoding = Literal["utf-8", "utf-8-sig", "windows-1252"]

#: the encodings offered, with the Python codec of each
ENCODINGS: dict[str, str] = {"utf-8": "utf-8", "utf-8-sig": "utf-8-sig", "windows-1252": "cp1252"}
_ALIASES = {"utf8": "utf-8", "utf-8-bom": "utf-8-sig", "cp1252": "windows-1252"}

#: first characters that make a spreadsheet read a cell as a formula (OWASP's list)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST = frozenset(FORMULA_START)

#: the page size of sorts that no index serves (each page is a bounded top-N sort)
UNINDEXED_PAGE = 20_000

#: the index each indexed sort reads along (None: the table itself, in id order)
SORT_INDEX: dict[str, str | None] = {
    "last_name": "patrons_name", "id": None, "site": "patrons_site", "status": "patrons_status",
    "grade": "patrons_grade",
}
#: an export of more rows than this reads along its sort's index whatever the filter:
#: one walk of the index in all, where a plan that fetches the matches first would
#: sort them all again for every page
WALK_INDEX_ABOVE = 50_000

#: how many offending cells a failed Windows-1252 export names
REPORT_FIRST = 10

_LABELS = dict(DETAIL_FIELDS)
_BALANCE_SQL = "(SELECT coalesce(sum(c.balance_cents), 0) FROM charges c WHERE c.patron_id = patrons.id)"


class ExportError(ValueError):
    """An export that cannot be done (unknown column, bad destination, ...)."""


@dataclass(frozen=True)
class Unencodable:
    """A cell the chosen encoding cannot hold."""

    patron_id: int
    barcode: str | None
    column: str
    characters: str


class ExportEncodingError(ExportError):
    """Some values cannot be written in the chosen encoding; nothing was written."""

    def __init__(self, encoding: str, first: list[Unencodable], total: int) -> None:
        self.encoding = encoding
        self.first = first
        self.total = total
        lines = [
            f"  patron {u.barcode if u.barcode is not None else f'id {u.patron_id}'}, "
            f"{u.column}: {', '.join(f'{c!r} (U+{ord(c):04X})' for c in u.characters)}"
            for u in first
        ]
        more = f"\n  ... and {total - len(first)} more" if total > len(first) else ""
        super().__init__(
            f"{total} value(s) cannot be written in {encoding}; nothing was exported. "
            "Choose UTF-8, or replace such characters with '?':\n" + "\n".join(lines) + more
        )


@dataclass(frozen=True)
class ExportColumn:
    name: str
    label: str
    #: "text", "integer" or "money"
    kind: str = "text"


#: the patron columns an export may hold, in the schema's order (tests hold this to the
#: schema): all but password_hash and picture, and is_system (system patrons are never
#: exported, so it would always be 0)
PATRON_COLUMNS: tuple[str, ...] = (
    "id", "barcode", "district_id", "site", "last_name", "first_name", "middle_name", "nickname",
    "patron_type", "access_level", "persona", "grade", "graduation_year", "homeroom", "location2",
    "policy", "security_group", "status", "gender", "username", "email", "email2", "phone",
    "birthdate", "account_expires", "protected", "created_at", "updated_at",
    "last_seen_import_at", "inactive_since",
)
_INTEGER = {"id", "graduation_year", "protected"}

_COLUMNS: dict[str, ExportColumn] = {
    **{n: ExportColumn(n, _LABELS[n], "integer" if n in _INTEGER else "text") for n in PATRON_COLUMNS},
    "balance": ExportColumn("balance", "Balance", "money"),
}


#: the columns an export starts with (the patron list's, less its ID)
DEFAULT_COLUMNS: tuple[str, ...] = (
    "barcode", "district_id", "last_name", "first_name", "nickname", "site", "grade", "homeroom",
    "status", "patron_type", "email",
)


def columns_available() -> list[tuple[str, str]]:
    """(name, label) of every column an export may hold: the schema's order, `balance` last."""
    return [(c.name, c.label) for c in _COLUMNS.values()]


def check_columns(columns: Sequence[str]) -> list[ExportColumn]:
    """The ExportColumns for these names, or ExportError naming what is wrong."""
    if isinstance(columns, str):
        raise ExportError("give the columns as a list of names")
    names = [c.strip() for c in columns]
    if not names:
        raise ExportError("choose at least one column")
    unknown = [n for n in names if n not in _COLUMNS]
    if unknown:
        raise ExportError(
            f"unknown column(s): {', '.join(unknown)}; choose from {', '.join(_COLUMNS)}"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ExportError(f"column(s) chosen twice: {', '.join(dupes)}")
    return [_COLUMNS[n] for n in names]


def _codec(encoding: str) -> tuple[str, str]:
    name = _ALIASES.get(encoding.lower(), encoding.lower()) if isinstance(encoding, str) else encoding
    if name not in ENCODINGS:
        raise ExportError(f"cannot export in {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    return name, ENCODINGS[name]


def neutralize(value: str) -> str:
    """A text cell made safe from formula injection (see the module doc)."""
    return "'" + value if value and value[0] in _FORMULA_FIRST else value


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(int(cents)), 100)
    return f"{sign}{whole}.{part:02d}"


def iter_rows(
    conn: sqlite3.Connection,
    *,
    where: str | None = None,
    params: Sequence[Any] = (),
    columns: Sequence[str],
    sort: str = DEFAULT_SORT,
    page_size: int = 2000,
    limit: int | None = None,
    walk_index: bool = False,
) -> Iterator[tuple[int, str | None, tuple[Any, ...]]]:
    """(patron id, barcode, values of `columns`) of the matching patrons, in `sort` order.

    Keyset pages of `page_size` rows; values as stored, `balance` as money
    text. System patrons are never included. Not formula-neutralized: that is
    the CSV writer's business. `walk_index` makes an indexed sort read along
    its index whatever the filter (see WALK_INDEX_ABOVE).
    """
    chosen = check_columns(columns)
    keys = sort_columns(sort)
    source = "patrons"
    if walk_index and sort in SORT_INDEX:
        index = SORT_INDEX[sort]
        source = f"patrons INDEXED BY {index}" if index else "patrons NOT INDEXED"
    if sort not in INDEXED_SORTS:
        # each page sorts every matching row again: fewer, bigger pages (still bounded)
        page_size = max(page_size, UNINDEXED_PAGE)
    info = conn.execute("PRAGMA table_info(patrons)")
    info.row_factory = None
    nullable = {name for _, name, _, notnull, *_ in info.fetchall() if not notnull}
    # nullable sort columns compare as '' (as the patron list sorts them): keyset
    # comparisons must never meet a NULL
    exprs = [f"ifnull(patrons.{k}, '')" if k in nullable and k != "id" else f"patrons.{k}" for k in keys]
    select = list(exprs)  # the keyset key first (it ends with id)
    select.append("patrons.barcode")
    for col in chosen:
        select.append(_BALANCE_SQL if col.name == "balance" else f"patrons.{col.name}")
    width = len(keys)
    id_at = keys.index("id")
    money_at = [i for i, c in enumerate(chosen) if c.kind == "money"]
    cond = "patrons.is_system = 0" + (f" AND ({where})" if where else "")
    base = f"SELECT {', '.join(select)} FROM {source} WHERE {cond}"
    order = ", ".join(exprs)
    after: tuple[Any, ...] | None = None
    left = limit
    while left is None or left > 0:
        size = page_size if left is None else min(page_size, left)
        if after is None:
            sql, args = f"{base} ORDER BY {order} LIMIT ?", [*params, size]
        else:
            sql = f"{base} AND ({order}) > ({', '.join('?' * width)}) ORDER BY {order} LIMIT ?"
            args = [*params, *after, size]
        cur = conn.execute(sql, args)
        cur.row_factory = None  # plain tuples
        rows = cur.fetchall()
        for row in rows:
            values = list(row[width + 1:])
            for i in money_at:
                values[i] = _money(values[i])
            yield row[id_at], row[width], tuple(values)
        if len(rows) < size:
            return
        after = tuple(rows[-1][:width])
        if left is not None:
            left -= len(rows)


@dataclass
class ExportSummary:
    rows: int
    path: Path | None
    encoding: str
    columns: list[str]
    #: cells in which characters the encoding cannot hold were written as '?'
    replaced_cells: int = 0
    #: examples of the replaced cells (at most REPORT_FIRST)
    replaced: list[Unencodable] = field(default_factory=list)

    def describe(self) -> str:
        where = str(self.path) if self.path is not None else "the output"
        text = f"{self.rows} patron(s) written to {where} ({self.encoding})"
        if self.replaced_cells:
            text += f"; {self.replaced_cells} cell(s) had characters replaced by '?'"
        return text


class _Encoder:
    """Turns a row's values into CSV cells, checking the encoding as it goes."""

    def __init__(self, columns: list[ExportColumn], codec: str) -> None:
        self.names = [c.name for c in columns]
        # money is text this module wrote: never neutralized
        self.text_at = [i for i, c in enumerate(columns) if c.kind != "money"]
        self.codec = codec
        self.check = codec == "cp1252"
        self.bad: list[Unencodable] = []
        self.bad_total = 0

    def cells(self, patron_id: int, barcode: str | None, values: tuple[Any, ...]) -> list[Any]:
        out = list(values)  # None is written as an empty cell, numbers bare
        for i in self.text_at:
            value = out[i]
            if value.__class__ is not str:
                if value is None or isinstance(value, (int, float)):
                    continue
                # a BLOB where text belongs: its size, never its bytes
                value = f"<{len(value)} bytes>" if isinstance(value, bytes) else str(value)
            if self.check and not value.isascii():
                try:
                    value.encode(self.codec)
                except UnicodeEncodeError:
                    value = self._unencodable(patron_id, barcode, self.names[i], value)
            if value and value[0] in _FORMULA_FIRST:
                value = "'" + value
            out[i] = value
        return out

    def _unencodable(self, patron_id: int, barcode: str | None, column: str, value: str) -> str:
        chars = "".join(dict.fromkeys(ch for ch in value if not _encodes(ch, self.codec)))
        self.bad_total += 1
        if len(self.bad) < REPORT_FIRST:
            self.bad.append(Unencodable(patron_id, barcode, column, chars))
        return value.encode(self.codec, "replace").decode(self.codec)


def _encodes(ch: str, codec: str) -> bool:
    try:
        ch.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def export_csv(
    conn: sqlite3.Connection,
    dest: str | os.PathLike[str] | IO[bytes],
    *,
    columns: Sequence[str],
    where: str | None = None,
    params: Sequence[Any] = (),
    encoding: Encoding | str = "utf-8",
    sort: str = DEFAULT_SORT,
    errors: Literal["strict", "replace"] = "strict",
    page_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write the patrons matching `where`/`params` to `dest` as CSV; see the module doc.

    `dest` is a path (written atomically) or a binary stream (for stdout). A
    stream cannot be unwritten, so a strict Windows-1252 export to a stream
    first reads the rows once to check them. `progress(rows_written)` is
    called after each page; an exception from it stops the export.
    """
    chosen = check_columns(columns)
    name, codec = _codec(encoding)
    if errors not in ("strict", "replace"):
        raise ExportError(f"errors must be 'strict' or 'replace', not {errors!r}")
    sort_columns(sort)  # refuse a bad sort before touching any file
    if isinstance(dest, io.TextIOBase):
        raise ExportError("export to a binary stream (e.g. sys.stdout.buffer): the export does its own encoding")
    is_stream = hasattr(dest, "write")
    path = None if is_stream else Path(dest)
    if path is not None:
        if path.is_dir():
            raise ExportError(f"{path} is a folder; give a file name")
        if not path.parent.is_dir():
            raise ExportError(f"{path.parent}: no such folder")

    own_txn = not conn.in_transaction
    if own_txn:
        conn.execute("BEGIN")  # one read snapshot for every page (WAL)
    try:
        names = [c.name for c in chosen]

        walk = count_patrons(conn, where=where, params=params) > WALK_INDEX_ABOVE

        def rows() -> Iterator[tuple[int, str | None, tuple[Any, ...]]]:
            return iter_rows(conn, where=where, params=params, columns=names, sort=sort,
                             page_size=page_size, walk_index=walk)

        if is_stream and codec == "cp1252" and errors == "strict":
            probe = _Encoder(chosen, codec)
            for pid, barcode, values in rows():
                probe.cells(pid, barcode, values)
            if probe.bad_total:
                raise ExportEncodingError(name, probe.bad, probe.bad_total)

        if path is None:
            return _write(dest, rows(), chosen, name, codec, errors, page_size, progress, None)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as raw:
                summary = _write(raw, rows(), chosen, name, codec, errors, page_size, progress, path)
                raw.flush()
                os.fsync(raw.fileno())
            if path.exists():
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return summary
    finally:
        if own_txn and conn.in_transaction:
            conn.execute("COMMIT")


def _write(
    raw: IO[bytes],
    rows: Iterator[tuple[int, str | None, tuple[Any, ...]]],
    chosen: list[ExportColumn],
    name: str,
    codec: str,
    errors: str,
    page_size: int,
    progress: Callable[[int], None] | None,
    path: Path | None,
) -> ExportSummary:
    text = io.TextIOWrapper(raw, encoding=codec, errors="strict", newline="", write_through=False)
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow([c.label for c in chosen])
        enc = _Encoder(chosen, codec)
        written = 0
        for pid, barcode, values in rows:
            cells = enc.cells(pid, barcode, values)
            if enc.bad_total and errors == "strict":
                # keep reading only to name the offenders; the part file is removed
                for pid2, barcode2, values2 in rows:
                    enc.cells(pid2, barcode2, values2)
                raise ExportEncodingError(name, enc.bad, enc.bad_total)
            writer.writerow(cells)
            written += 1
            if progress is not None and written % page_size == 0:
                progress(written)
        text.flush()
        if progress is not None:
            progress(written)
    finally:
        text.detach()  # the caller owns the binary file
    return ExportSummary(rows=written, path=path, encoding=name, columns=[c.name for c in chosen],
                         replaced_cells=enc.bad_total, replaced=list(enc.bad))
