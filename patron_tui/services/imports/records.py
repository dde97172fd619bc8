"""Reading patron CSV files record by record, and mapping records to patron fields.

`read_records` streams a file in constant memory (one physical line, or one record with
embedded newlines, at a time) and yields a `SourceRecord` per data row or a `Problem` for a row
it must skip. Problems with the file as a whole (empty, header only, binary, a mapped column
missing, an undecodable header) raise `ImportFileError` naming the file and line.

Decoding is per physical line, so an undecodable byte costs only the record it sits in: that
record is skipped with code ``undecodable`` naming the line and byte offset, plus a hint of an
encoding that fits the file (checked on the first 64 KiB), and reading goes on.

`map_record` turns a `SourceRecord` into a `MappedRecord` with the properties file's field.,
default., map., custom. and date_format rules. It is pure; its per-mapping plan is built once
and cached on the mapping, so worker pools can call it on 200,000 rows cheaply.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import difflib
import re
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from patron_tui.services.imports.properties import (
    DATE_FIELDS,
    INTEGER_FIELDS,
    PATRON_FIELDS,
    ImportMapping,
    compile_template,
    encoding_label,
    normalize_encoding,
    parse_template,
)

SAMPLE_BYTES = 64 * 1024
DEFAULT_MAX_FIELD = 64 * 1024
# the csv module's own limit (131072 by default) would abort the whole file on one long
# field; lift it so a 10 MB field is read and then skipped with a message of its own
_CSV_LIMIT = min(sys.maxsize, 2**31 - 1)


@dataclass(frozen=True, slots=True)
class Problem:
    code: str            # undecodable, ragged_row, field_too_long, binary_data, missing_required, bad_date, ...
    line: int | None
    message: str
    field: str | None = None
    column: str | None = None
    barcode: str | None = None
    byte_offset: int | None = None


@dataclass(frozen=True, slots=True)
class SourceRecord:
    line: int                    # physical line where the record starts (1 = first line)
    values: dict[str, str]       # column -> text as read (untrimmed)
    raw: list[str]               # the row's fields in file order


@dataclass(slots=True)
class MappedRecord:
    line: int
    fields: dict[str, object]    # patron field -> value (str, int, ISO date str, or None)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ImportFileError(ValueError):
    """The file cannot be imported at all."""

    def __init__(self, path: str, line: int | None, message: str, *, code: str = "file"):
        self.path = path
        self.line = line
        self.code = code
        self.detail = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------------------
# bytes -> decoded physical lines


def _codec_plan(codec: str, head: bytes) -> tuple[str, int, bytes, int]:
    """(per-line codec, BOM length to skip, newline bytes, code unit size)."""
    if codec in ("utf-8", "utf-8-sig"):
        return "utf-8", 3 if head.startswith(codecs.BOM_UTF8) else 0, b"\n", 1
    if codec == "utf-16":
        if head.startswith(codecs.BOM_UTF16_BE):
            return "utf-16-be", 2, b"\x00\n", 2
        return "utf-16-le", 2 if head.startswith(codecs.BOM_UTF16_LE) else 0, b"\n\x00", 2
    if codec == "utf-16-le":
        return codec, 2 if head.startswith(codecs.BOM_UTF16_LE) else 0, b"\n\x00", 2
    if codec == "utf-16-be":
        return codec, 2 if head.startswith(codecs.BOM_UTF16_BE) else 0, b"\x00\n", 2
    return codec, 0, b"\n", 1


def _binary_lines(f, newline: bytes, unit: int) -> Iterator[bytes]:
    if unit == 1:
        yield from f
        return
    buf = b""
    while True:
        chunk = f.read(SAMPLE_BYTES)
        if not chunk:
            break
        buf += chunk
        start = 0
        while True:
            i = buf.find(newline, start)
            while i >= 0 and i % unit:
                i = buf.find(newline, i + 1)
            if i < 0:
                break
            yield buf[start:i + unit]
            start = i + unit
        buf = buf[start:]  # start is a multiple of unit, so alignment holds
    if buf:
        yield buf


def guess_encoding(sample: bytes, *, exclude: str | None = None) -> str | None:
    """A supported encoding the sample decodes as, charset-normalizer's pick first."""
    candidates: list[str] = []
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
        len(sample) >= 4 and sample[1::2].count(0) > len(sample) // 4
    ):
        candidates.append("utf-16")
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(sample).best()
        if best is not None:
            try:
                candidates.append(normalize_encoding(best.encoding))
            except ValueError:
                pass
    except Exception:  # pragma: no cover - the hint is a courtesy
        pass
    candidates += ["utf-8", "cp1252", "mac_roman"]
    for codec in candidates:
        if codec == exclude or (exclude in ("utf-8", "utf-8-sig") and codec in ("utf-8", "utf-8-sig")):
            continue
        try:
            # a sample may end inside a multi-byte character: ignore the last 3 bytes' errors
            codecs.getincrementaldecoder(codec)("strict").decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        if codec.startswith("utf-16") and sample[1::2].count(0) < len(sample) // 4 and not sample.startswith(
            (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        ):
            continue
        return codec
    return None


# ---------------------------------------------------------------------------
# reading


def _nearest(name: str, header: list[str]) -> str:
    close = difflib.get_close_matches(name, header, n=1, cutoff=0.6)
    if not close:
        lowered = {h.lower(): h for h in header}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def read_records(
    path: str | Path,
    mapping: ImportMapping,
    *,
    encoding: str | None = None,
    max_field: int = DEFAULT_MAX_FIELD,
) -> Iterator[SourceRecord | Problem]:
    """Yield each data row of `path` as a SourceRecord, or a Problem when it must be skipped.

    `encoding` (the job's setting) overrides the properties file's. Raises ImportFileError for
    an empty file, a header-only file, binary data, an undecodable header or a mapped column
    the header lacks.
    """
    path = Path(path)
    name = str(path)
    codec = normalize_encoding(encoding) if encoding else mapping.encoding
    label = encoding_label(codec)
    if csv.field_size_limit() < _CSV_LIMIT:
        csv.field_size_limit(_CSV_LIMIT)

    with path.open("rb") as f:
        sample = f.read(SAMPLE_BYTES)
        if not sample.strip():
            raise ImportFileError(name, None, "the file is empty: no header row and no records", code="empty_file")
        line_codec, bom, newline, unit = _codec_plan(codec, sample)
        if unit == 1 and b"\x00" in sample:
            offset = sample.index(b"\x00")
            hint = guess_encoding(sample, exclude=codec)
            extra = f"; it looks like {encoding_label(hint)} (set encoding={encoding_label(hint)})" if hint == "utf-16" else ""
            raise ImportFileError(
                name, sample.count(b"\n", 0, offset) + 1,
                f"not a text CSV file: a NUL byte at byte offset {offset}{extra}", code="binary_file",
            )
        f.seek(bom)

        hint_cache: list[str] = []

        def hint() -> str:
            if not hint_cache:
                guess = guess_encoding(sample, exclude=codec)
                hint_cache.append(
                    f"; the file looks like {encoding_label(guess)} (set encoding={encoding_label(guess)})"
                    if guess else ""
                )
            return hint_cache[0]

        decoder_line = [0]          # physical line number of the last decoded line
        bad_lines: dict[int, Problem] = {}   # line -> problem (only while its record is open)
        offset = [bom]

        def text_lines() -> Iterator[str]:
            for raw in _binary_lines(f, newline, unit):
                decoder_line[0] += 1
                line_no = decoder_line[0]
                try:
                    text = raw.decode(line_codec)
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start:exc.start + 1]
                    at = offset[0] + exc.start
                    bad_lines[line_no] = Problem(
                        "undecodable", line_no,
                        f"line {line_no}: cannot decode byte 0x{bad.hex().upper()} at byte offset {at} "
                        f"(byte {exc.start + 1} of the line) as {label}{hint()}",
                        byte_offset=at,
                    )
                    text = raw.decode(line_codec, "replace")
                if "\x00" in text and line_no not in bad_lines:
                    at = offset[0] + (raw.index(b"\x00") if unit == 1 else text.index("\x00") * unit)
                    bad_lines[line_no] = Problem(
                        "binary_data", line_no, f"line {line_no}: a NUL byte at byte offset {at} (binary data)",
                        byte_offset=at,
                    )
                    text = text.replace("\x00", "")
                offset[0] += len(raw)
                yield text

        reader = csv.reader(text_lines(), delimiter=mapping.delimiter)
        # --- header -------------------------------------------------------
        try:
            first = next(reader, None)
            while first is not None and not any(c.strip() for c in first):
                first = next(reader, None)
        except csv.Error as exc:
            raise ImportFileError(name, reader.line_num, f"cannot read the header row: {exc}", code="bad_header") from None
        if first is None:
            raise ImportFileError(name, None, "the file is empty: no header row and no records", code="empty_file")
        header_line = reader.line_num
        for ln in range(1, header_line + 1):
            if ln in bad_lines:
                raise ImportFileError(name, ln, f"the header row cannot be decoded: {bad_lines[ln].message}",
                                      code="undecodable")
        if mapping.header:
            header = [h.strip() for h in first]
            pending: list[str] | None = None
            columns = _resolve_columns(name, header_line, header, mapping)
        else:
            header = [str(i) for i in range(1, len(first) + 1)]
            pending = first
            columns = header
        width = len(header)

        # --- records ------------------------------------------------------
        count = 0
        prev_end = header_line if pending is None else 0
        while True:
            if pending is not None:
                row, pending = pending, None
            else:
                try:
                    row = next(reader, None)
                except csv.Error as exc:
                    start = prev_end + 1
                    prev_end = reader.line_num
                    bad_lines.clear()
                    count += 1
                    yield Problem("bad_csv", start, f"line {start}: {exc}")
                    continue
                if row is None:
                    break
            start = prev_end + 1
            end = reader.line_num
            prev_end = end
            if bad_lines:
                problem = next((bad_lines[ln] for ln in range(start, end + 1) if ln in bad_lines), None)
                bad_lines.clear()
                if problem is not None:
                    count += 1
                    yield problem
                    continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            count += 1
            if len(row) != width:
                yield Problem(
                    "ragged_row", start,
                    f"line {start}: {len(row)} fields, but the header has {width}"
                    + (" (an unquoted delimiter or a missing quote?)" if len(row) > width else ""),
                )
                continue
            too_long = None
            for i, value in enumerate(row):
                if len(value) > max_field:
                    too_long = i
                    break
            if too_long is not None:
                col = columns[too_long]
                yield Problem(
                    "field_too_long", start,
                    f"line {start}: column {col!r} holds {len(row[too_long]):,} characters "
                    f"(more than {max_field:,})",
                    column=col,
                )
                continue
            values = dict(zip(columns, row))
            yield SourceRecord(start, values, row)
        if count == 0:
            raise ImportFileError(name, header_line, "the file has a header row but no records", code="header_only")


def _resolve_columns(name: str, line: int, header: list[str], mapping: ImportMapping) -> list[str]:
    """The header's columns, renamed to the mapping's spelling where they differ only in case or
    spacing; ImportFileError naming each mapped column the header lacks."""
    columns = list(header)
    by_norm = {_norm(h): i for i, h in enumerate(header)}
    present = set(header)
    missing: list[str] = []
    for column, key in mapping.csv_columns().items():
        if column in present:
            continue
        i = by_norm.get(_norm(column))
        if i is not None:
            columns[i] = column
            continue
        missing.append(
            f"column {column!r} ({key}, {mapping.where(key)}) is not in the header{_nearest(column, header)}"
        )
    if missing:
        raise ImportFileError(
            name, line, "; ".join(missing) + f". The header has: {', '.join(header)}", code="missing_column",
        )
    return columns


# ---------------------------------------------------------------------------
# mapping records to patron fields

_DIRECTIVE_RE = {"%Y": r"(\d{4})", "%m": r"(\d{1,2})", "%d": r"(\d{1,2})", "%y": r"(\d{2})"}


def _date_parser(fmt: str):
    """A function text -> ISO date (or raise ValueError), compiled once per format."""
    if fmt == "auto":
        iso = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})\Z")
        us = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\Z")

        def parse(text: str) -> str:
            m = iso.match(text)
            if m:
                return dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
            m = us.match(text)
            if m:
                year = int(m[3])
                if len(m[3]) == 2:
                    year = _two_digit_year(year)
                return dt.date(year, int(m[1]), int(m[2])).isoformat()
            raise ValueError("not YYYY-MM-DD, M/D/YYYY or M/D/YY")

        return parse
    parts = re.split(r"(%.)", fmt)
    if all(p in _DIRECTIVE_RE or "%" not in p for p in parts) and {"%m", "%d"} <= set(parts) and (
        ("%Y" in parts) != ("%y" in parts)
    ):
        order = [p for p in parts if p in _DIRECTIVE_RE]
        rx = re.compile("".join(_DIRECTIVE_RE.get(p, re.escape(p)) for p in parts) + r"\Z")

        def parse_fast(text: str) -> str:
            m = rx.match(text)
            if not m:
                raise ValueError(f"does not match {fmt}")
            got = dict(zip(order, m.groups()))
            year = int(got["%Y"]) if "%Y" in got else _two_digit_year(int(got["%y"]))
            return dt.date(year, int(got["%m"]), int(got["%d"])).isoformat()

        return parse_fast

    def parse_slow(text: str) -> str:
        return dt.datetime.strptime(text, fmt).date().isoformat()

    return parse_slow


def _two_digit_year(yy: int) -> int:
    """00..(this year's yy) -> 20yy, the rest -> 19yy (birthdates are in the past)."""
    now = dt.date.today().year
    year = 2000 + yy
    return year if year <= now else year - 100


class _Plan:
    """Everything map_record needs, computed once per mapping."""

    __slots__ = ("steps", "required", "match", "parse_date")

    def __init__(self, mapping: ImportMapping):
        self.parse_date = _date_parser(mapping.date_format)
        computed = {k: compile_template(parse_template(v)) for k, v in mapping.custom.items()}
        targets: dict[str, tuple[str | None, object]] = {}   # field -> (column or None, getter)
        for fld, column in mapping.fields.items():
            if column in computed:
                targets[fld] = (column, computed[column])
            else:
                targets[fld] = (column, None)
        for name, fn in computed.items():
            if name in PATRON_FIELDS and name not in targets:
                targets[name] = (None, fn)
        for fld in mapping.defaults:
            targets.setdefault(fld, (None, None))
        steps = []
        for fld, (column, fn) in targets.items():
            table = mapping.maps.get(fld) or {}
            folded = {k.casefold(): v for k, v in table.items()}
            kind = "date" if fld in DATE_FIELDS else "int" if fld in INTEGER_FIELDS else "text"
            steps.append((fld, column, fn, mapping.defaults.get(fld), table, folded, kind))
        self.steps = steps
        self.required = [(f, mapping.fields.get(f)) for f in mapping.required]
        self.match = mapping.match


def _plan(mapping: ImportMapping) -> _Plan:
    plan = mapping._cache.get("plan")
    if plan is None:
        plan = mapping._cache["plan"] = _Plan(mapping)
    return plan


def map_record(
    mapping: ImportMapping,
    record: SourceRecord,
    *,
    reference: Mapping[str, Collection[str]] | None = None,
    require_district_id: bool = False,
) -> MappedRecord:
    """Apply the mapping to one record. Only fields the file carries (a mapped column present
    in the record, a custom template, or a default) appear in `fields`; blank values become ''
    (None for dates and numbers). `reference` maps a patron field to its allowed codes; a value
    outside them is a problem `unknown_code`."""
    plan = _plan(mapping)
    values = record.values
    line = record.line
    out: dict[str, object] = {}
    problems: list[Problem] = []
    for fld, column, fn, default, table, folded, kind in plan.steps:
        if fn is not None:
            text = fn(values).strip()
        elif column is not None:
            raw = values.get(column)
            if raw is None:
                if default is None:
                    continue  # the file does not carry the column: leave the stored value alone
                text = ""
            else:
                text = raw.strip()
        else:
            text = ""
        if not text:
            if default is not None:
                text = default
        elif table:
            mapped = table.get(text)
            if mapped is None:
                mapped = folded.get(text.casefold(), text)
            text = mapped
        if kind == "date":
            if text:
                try:
                    out[fld] = plan.parse_date(text)
                except ValueError:
                    where = f"column {column!r}" if column else f"field {fld}"
                    problems.append(Problem(
                        "bad_date", line, f"line {line}: {where}: {text!r} is not a valid date "
                        f"({mapping.date_format})", field=fld, column=column,
                    ))
            else:
                out[fld] = None
        elif kind == "int":
            if text:
                try:
                    out[fld] = int(text)
                except ValueError:
                    where = f"column {column!r}" if column else f"field {fld}"
                    problems.append(Problem(
                        "bad_number", line, f"line {line}: {where}: {text!r} is not a whole number",
                        field=fld, column=column,
                    ))
            else:
                out[fld] = None
        else:
            out[fld] = text
    barcode = out.get("barcode") or None
    for fld, column in plan.required:
        if out.get(fld) in (None, ""):
            where = f" (column {column!r})" if column else ""
            problems.append(Problem("missing_required", line, f"line {line}: required field {fld}{where} is blank",
                                    field=fld, column=column, barcode=barcode))
    if require_district_id and not out.get("district_id"):
        problems.append(Problem("missing_district_id", line,
                                f"line {line}: no district ID, and the district requires one",
                                field="district_id", column=mapping.fields.get("district_id"), barcode=barcode))
    if reference:
        for fld, allowed in reference.items():
            value = out.get(fld)
            if value not in (None, "") and value not in allowed:
                problems.append(Problem("unknown_code", line,
                                        f"line {line}: {fld} {value!r} is not in the {fld} table",
                                        field=fld, column=mapping.fields.get(fld), barcode=barcode))
    if barcode is not None:
        problems = [p if p.barcode else _with_barcode(p, barcode) for p in problems]
    return MappedRecord(line, out, problems)


def _with_barcode(p: Problem, barcode) -> Problem:
    return Problem(p.code, p.line, p.message, p.field, p.column, str(barcode), p.byte_offset)


__all__ = [
    "DEFAULT_MAX_FIELD", "ImportFileError", "MappedRecord", "Problem", "SourceRecord",
    "guess_encoding", "map_record", "read_records",
]
