"""Reading patron CSV files record by record, and mapping records to patron fields.

`read_records` streams a file in constant memory (one physical line, or one record with
embedded newlines, at a time) and yields a `SourceRecord` per data row or a `Problem` for a row
it must skip. Problems with the file as a whole (empty, header only, binary, a mapped column
missing, an undecodable header) raise `ImportFileError` naming the file and line; so do the
file's own (sourcefile.py): not a regular file (a directory, a FIFO, a link loop), starting
with NUL bytes, or changed while it was read (its size, mtime and inode are noted when it is
opened and compared when the last block has been read). Lines end at LF, or at CR in a file
with CR-only line endings. A NUL byte in a record skips that record, naming its column.

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
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, compress
from pathlib import Path

from xxhash import xxh3_64_hexdigest

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
    """The file's lines, each ending in `newline` (any bytes, aligned to `unit`: UTF-16's
    two-byte newlines, or CR for a file with CR-only line endings)."""
    if unit == 1 and newline == b"\n":
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
        except UnicodeError:   # UnicodeDecodeError, and utf-16's "does not start with BOM"
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


def line_hasher(seed: bytes):
    """The fingerprint function of an import: 16 hex digits of xxh3-64 over a record's bytes,
    seeded by the mapping (`seed`, from engine.mapping_seed). xxh3 (the xxhash package) and
    not blake2b: a fingerprint only has to notice that a record changed, never to resist an
    attacker, and xxh3 costs a quarter as much per line, which is most of an Incremental
    import's own work."""
    # a partial of the C function: no Python frame per line
    return partial(xxh3_64_hexdigest, seed=int.from_bytes(seed[:8], "little"))


class RowReader:
    """The data rows of a patron CSV file, streamed: iterate for `(line, row, raw)` (`row` is
    the record's fields in header order, `line` the physical line it starts on, `raw` the
    line's bytes as read for a one-line record, else None) or `Problem`s for rows that must
    be skipped. `columns` (the header, spelled as the mapping spells it) is
    known once iteration has begun (or after `open()`).

    Blocks of about 32 KiB of lines are decoded at once; only a block holding an undecodable
    byte or a NUL is decoded line by line to name the line and byte.
    """

    BLOCK = 32 * 1024

    def __init__(self, path: str | Path, mapping: ImportMapping, *, encoding: str | None = None,
                 max_field: int = DEFAULT_MAX_FIELD) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.mapping = mapping
        self.codec = normalize_encoding(encoding) if encoding else mapping.encoding
        self.label = encoding_label(self.codec)
        self.max_field = max_field
        self.columns: tuple[str, ...] = ()
        self.bytes_read = 0          # bytes of the file consumed so far (for progress)
        self.size = self.path.stat().st_size if self.path.exists() else 0
        self._gen: Iterator | None = None
        self._unchanged: tuple[set[str], bytes] | None = None
        self.on_block: Callable[[], None] | None = None   # called after each block is read
        self.identity = None         # sourcefile.Identity of the file when it was opened
        self.unchanged = 0           # records skipped as unchanged by `skip_unchanged`

    def skip_unchanged(self, stored: set[str], person: bytes) -> None:
        """Incremental imports: a one-line record whose fingerprint (`line_hasher(person)` of its
        raw bytes) is in `stored` is counted in `unchanged` and not
        yielded (it is taken out of `stored`). Only where the lines are known to be whole records:
        a block without a quote character while no quoted field is open."""
        self._unchanged = (stored, person)

    def open(self) -> RowReader:
        """Read the header now (raises ImportFileError for a file that cannot be imported)."""
        if self._gen is None:
            self._gen = self._rows()
            first = next(self._gen)
            assert first is None
        return self

    def close(self) -> None:
        """Stop reading (closes the file)."""
        if self._gen is not None:
            self._gen.close()

    def __iter__(self):
        self.open()
        assert self._gen is not None
        return self._gen

    def _rows(self):
        name, codec, label, mapping, max_field = self.name, self.codec, self.label, self.mapping, self.max_field
        if csv.field_size_limit() < _CSV_LIMIT:
            csv.field_size_limit(_CSV_LIMIT)
        # the file is opened (never blocking: a FIFO gets a sentence) and its size, mtime and
        # inode noted; at the end of reading they are compared again (sourcefile.py)
        from patron_tui.services.imports.sourcefile import check_head, ensure_unchanged, open_source

        f, self.identity = open_source(self.path)
        self.size = self.identity.size
        with f:
            sample = f.read(SAMPLE_BYTES)
            line_codec, bom, newline, unit = _codec_plan(codec, sample)
            check_head(name, sample[bom:], unit)   # a sparse or unfinished file: said from 64 KiB
            if not sample.strip():
                raise ImportFileError(name, None, "the file is empty: no header row and no records", code="empty_file")
            cr = newline.replace(b"\n", b"\r")
            if newline not in sample and cr in sample:
                newline = cr   # CR-only line endings (old Mac): lines end at CR
            nuls = sample.count(b"\x00") if unit == 1 else 0
            if nuls >= 4 and nuls * 32 > len(sample):
                # NULs all over the start: binary data, or UTF-16 read as a one-byte encoding
                # (a NUL or a few in a record skip that record only: `slow` below)
                offset = sample.index(b"\x00")
                hint = guess_encoding(sample, exclude=codec)
                extra = f"; it looks like {encoding_label(hint)} (set encoding={encoding_label(hint)})" if hint == "utf-16" else ""
                raise ImportFileError(
                    name, sample.count(b"\n", 0, offset) + 1,
                    f"not a text CSV file: a NUL byte at byte offset {offset}{extra}", code="binary_file",
                )
            f.seek(bom)
            self.bytes_read = bom
            hint_cache: list[str] = []

            def hint() -> str:
                if not hint_cache:
                    guess = guess_encoding(sample, exclude=codec)
                    hint_cache.append(
                        f"; the file looks like {encoding_label(guess)} (set encoding={encoding_label(guess)})"
                        if guess else ""
                    )
                return hint_cache[0]

            bad_lines: dict[int, Problem] = {}   # line -> problem (only while its record is open)

            def slow(lines: list[bytes], first_line: int, offset: int) -> list[str]:
                out = []
                for n, raw in enumerate(lines):
                    line_no = first_line + n
                    try:
                        text = raw.decode(line_codec)
                    except UnicodeDecodeError as exc:
                        bad = raw[exc.start:exc.start + 1]
                        at = offset + exc.start
                        bad_lines[line_no] = Problem(
                            "undecodable", line_no,
                            f"line {line_no}: cannot decode byte 0x{bad.hex().upper()} at byte offset {at} "
                            f"(byte {exc.start + 1} of the line) as {label}{hint()}",
                            byte_offset=at,
                        )
                        text = raw.decode(line_codec, "replace")
                    if "\x00" in text and line_no not in bad_lines:
                        # the NUL stays in the text: the record's problem then names its column
                        at = offset + (raw.index(b"\x00") if unit == 1 else text.index("\x00") * unit)
                        bad_lines[line_no] = Problem(
                            "binary_data", line_no, f"line {line_no}: a NUL byte at byte offset {at} (binary data)",
                            byte_offset=at,
                        )
                    offset += len(raw)
                    out.append(text)
                return out

            # the block the csv reader is in: [its first line, its raw lines, has a long line,
            # the physical line of each text fed (None: all lines, in order), texts fed before it,
            # whether the block before it was filtered]
            current: list = [1, [], False, None, 0, False]
            open_quote = [0]    # quote parity so far: 1 = a quoted field is open
            fed = [0]           # texts of the current block (fed to the csv reader)

            def where() -> int:
                """The physical line of the csv reader's last text."""
                ln = reader.line_num - current[4]
                return current[0] + ln - 1 if current[3] is None else current[3][ln - 1]

            def blocks() -> Iterator[list[str]]:
                line_no = 1
                if unit == 1 and newline == b"\n":
                    source = iter(lambda: f.readlines(self.BLOCK), [])
                else:
                    wide = _binary_lines(f, newline, unit)
                    source = iter(lambda: [ln for _, ln in zip(range(4096), wide)], [])
                nul = "\x00".encode(line_codec) if unit == 2 else b"\x00"
                for lines in source:
                    block = b"".join(lines)
                    texts = None
                    kept = None
                    keep = None
                    quotes = block.count(b'"')
                    if self._unchanged is not None and unit == 1 and not quotes and not open_quote[0]:
                        # every line of this block is a whole record: an unchanged one is left
                        # out before it is even decoded (its fingerprint is stored, so it was
                        # decoded and imported before under the same properties and header);
                        # `kept` maps what is fed to its physical lines
                        stored, person = self._unchanged
                        fps = list(map(line_hasher(person), lines))
                        found = stored.intersection(fps)
                        keep = [fp not in found for fp in fps]
                        if len(found) + sum(keep) != len(lines):
                            # two identical lines in the block: the first is unchanged, the
                            # second goes the long way (a duplicate), as one at a time would
                            keep, found = [], set()
                            for fp in fps:
                                if fp in stored and fp not in found:
                                    found.add(fp)
                                    keep.append(False)
                                else:
                                    keep.append(True)
                        stored -= found
                        kept = list(compress(range(line_no, line_no + len(lines)), keep))
                        self.unchanged += len(lines) - len(kept)
                    todo = lines if keep is None else list(compress(lines, keep))
                    chunk = block if keep is None else b"".join(todo)
                    if nul not in chunk or unit == 2:
                        try:
                            texts = chunk.decode(line_codec).splitlines(True)
                        except UnicodeDecodeError:
                            texts = None
                        # splitlines also breaks at \r, \x0b, \x1c, \x85, U+2028...: when it found
                        # more lines than the file has, decode line by line instead
                        if texts is not None and len(texts) != len(todo):
                            texts = [ln.decode(line_codec) for ln in todo]
                        if texts is not None and unit == 2 and any("\x00" in t for t in texts):
                            texts = None
                    if texts is None:
                        # a bad byte or a NUL: line by line, so the problem names its line
                        texts = slow(lines, line_no, self.bytes_read)
                        if keep is not None:
                            texts = list(compress(texts, keep))
                    open_quote[0] ^= quotes & 1
                    current[5] = current[3] is not None
                    current[4] += fed[0]
                    current[0] = line_no
                    current[1] = lines
                    current[2] = max(map(len, texts), default=0) > max_field
                    current[3] = kept
                    fed[0] = len(texts)
                    line_no += len(lines)
                    self.bytes_read += len(block)
                    if self.on_block is not None:
                        self.on_block()
                    yield texts
                # the whole file is read: is it the file that was opened, as it was?
                ensure_unchanged(self.path, self.identity, f.fileno())

            reader = csv.reader(chain.from_iterable(blocks()), delimiter=mapping.delimiter)
            # --- header -------------------------------------------------------
            try:
                first = next(reader, None)
                while first is not None and not any(c.strip() for c in first):
                    first = next(reader, None)
            except csv.Error as exc:
                raise ImportFileError(name, where(), f"cannot read the header row: {exc}", code="bad_header") from None
            if first is None:
                raise ImportFileError(name, None, "the file is empty: no header row and no records", code="empty_file")
            header_line = where()
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
            self.columns = tuple(columns)
            width = len(header)
            yield None   # the header is read: `columns` is known

            # --- records ------------------------------------------------------
            count = 0
            prev_end = header_line
            if pending is not None:
                prev_end = where()
                count += 1
                if len(pending) == width and max(map(len, pending)) <= max_field:
                    yield 1, pending, current[1][0] if prev_end == 1 and current[0] == 1 else None
                elif len(pending) == width:
                    yield Problem("field_too_long", 1, f"line 1: a field holds more than {max_field:,} characters")
            while True:
                try:
                    for row in reader:
                        kept = current[3]
                        if kept is None:
                            start = prev_end + 1
                            prev_end = current[0] + reader.line_num - current[4] - 1
                            if start < current[0] and current[5]:
                                start = current[0]   # the lines before were left out as unchanged
                        else:   # a filtered block holds one-line records only
                            start = prev_end = kept[reader.line_num - current[4] - 1]
                        if bad_lines:
                            # blocks are decoded ahead of the csv reader: keep later lines' problems
                            problem = next((bad_lines[ln] for ln in range(start, prev_end + 1) if ln in bad_lines),
                                           None)
                            for ln in [ln for ln in bad_lines if ln <= prev_end]:
                                del bad_lines[ln]
                            if problem is not None:
                                count += 1
                                if problem.code == "binary_data":
                                    problem = _nul_problem(problem, row, columns, self.path.name)
                                yield problem
                                continue
                        if len(row) != width:
                            if not row or (len(row) == 1 and not row[0].strip()):
                                continue  # a blank line
                            count += 1
                            yield Problem(
                                "ragged_row", start,
                                f"line {start}: {len(row)} fields, but the header has {width}"
                                + (" (an unquoted delimiter or a missing quote?)" if len(row) > width else ""),
                            )
                            continue
                        count += 1
                        if start == prev_end and start >= current[0]:
                            # one physical line: its raw bytes are the record's (for the fingerprint)
                            raw = current[1][start - current[0]]
                            long = current[2]
                        else:
                            raw = None
                            long = True
                        if long and max(map(len, row)) > max_field:
                            i = next(i for i, v in enumerate(row) if len(v) > max_field)
                            col = columns[i]
                            yield Problem(
                                "field_too_long", start,
                                f"line {start}: column {col!r} holds {len(row[i]):,} characters "
                                f"(more than {max_field:,})",
                                column=col,
                            )
                            continue
                        yield start, row, raw
                    break
                except csv.Error as exc:
                    start = prev_end + 1
                    prev_end = where()
                    for ln in [ln for ln in bad_lines if ln <= prev_end]:
                        del bad_lines[ln]
                    count += 1
                    yield Problem("bad_csv", start, f"line {start}: {exc}")
            if count == 0 and not self.unchanged:
                raise ImportFileError(name, header_line, "the file has a header row but no records", code="header_only")


def _nul_problem(problem: Problem, row: list[str], columns: list[str], file: str) -> Problem:
    """The skipped record's NUL problem, naming the file, the line and the column it is in."""
    i = next((i for i, v in enumerate(row) if "\x00" in v), None)
    if i is None or i >= len(columns):
        return problem
    col = columns[i]
    return Problem(
        "binary_data", problem.line,
        f"line {problem.line}: column {col!r} holds a NUL byte (byte offset {problem.byte_offset} of {file}): "
        "binary data, not text; the record was skipped and the rest of the file read",
        column=col, byte_offset=problem.byte_offset,
    )


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
    reader = RowReader(path, mapping, encoding=encoding, max_field=max_field)
    for item in reader:
        if isinstance(item, Problem):
            yield item
        else:
            line, row, _raw = item
            yield SourceRecord(line, dict(zip(reader.columns, row)), row)


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


class RowMapper:
    """The mapping compiled for one header: `mapper(row, line) -> (fields, problems or None)`.

    `row` is the record's fields in header order. The mapping rules (field., default., map.,
    custom., date_format, required, reference codes, require district ID) are turned into the
    source of one straight-line Python function per mapping and header, compiled once: an
    import maps 200,000 rows with it, so the per-row cost is what the whole import costs.
    """

    __slots__ = ("fn", "columns", "source", "fields")

    def __init__(
        self,
        mapping: ImportMapping,
        columns: tuple[str, ...],
        reference: Mapping[str, Collection[str]] | None = None,
        require_district_id: bool = False,
    ) -> None:
        self.columns = columns
        index = {c: i for i, c in enumerate(columns)}
        computed = {k: compile_template(parse_template(v)) for k, v in mapping.custom.items()}
        targets: dict[str, tuple[str | None, object]] = {}   # field -> (column or None, template)
        for fld, column in mapping.fields.items():
            targets[fld] = (column, computed.get(column))
        for name, fn in computed.items():
            if name in PATRON_FIELDS and name not in targets:
                targets[name] = (None, fn)
        for fld in mapping.defaults:
            targets.setdefault(fld, (None, None))
        env: dict[str, object] = {"_bad": _bad_value, "_with_barcode": _with_barcode, "Problem": Problem}
        parse_date = _date_parser(mapping.date_format)
        cache: dict[str, str] = {}

        def date(text: str) -> str:
            iso = cache.get(text)
            if iso is None:
                iso = parse_date(text)   # ValueError for a bad date: never cached
                if len(cache) > 50_000:
                    cache.clear()
                cache[text] = iso
            return iso

        env["_date"] = date
        code = ["def _map(row, line):", "    out = {}", "    problems = None"]
        emitted: list[str] = []   # the fields every valid record carries, in `fields` order
        if computed:
            env["_COLUMNS"] = columns
            code.append("    values = dict(zip(_COLUMNS, row))")
        for n, (fld, (column, fn)) in enumerate(targets.items()):
            default = mapping.defaults.get(fld)
            table = mapping.maps.get(fld) or {}
            if fn is not None:
                env[f"_T{n}"] = fn
                code.append(f"    t = _T{n}(values).strip()")
            elif column is not None and column in index:
                code.append(f"    t = row[{index[column]}].strip()")
            elif column is not None and default is None:
                continue   # the file does not carry the column: leave the stored value alone
            else:
                code.append("    t = ''")
            emitted.append(fld)
            if default is not None:
                env[f"_D{n}"] = default
            if table:
                env[f"_M{n}"] = table
                env[f"_F{n}"] = {k.casefold(): v for k, v in table.items()}
                code += ["    if t:", f"        m = _M{n}.get(t)",
                         f"        t = m if m is not None else _F{n}.get(t.casefold(), t)"]
                if default is not None:
                    code += ["    else:", f"        t = _D{n}"]
            elif default is not None:
                code += ["    if not t:", f"        t = _D{n}"]
            if fld in DATE_FIELDS or fld in INTEGER_FIELDS:
                convert = "_date(t)" if fld in DATE_FIELDS else "int(t)"
                code_kind = "bad_date" if fld in DATE_FIELDS else "bad_number"
                env[f"_W{n}"] = (code_kind, fld, column, mapping.date_format)
                code += ["    if t:", "        try:", f"            out[{fld!r}] = {convert}",
                         "        except ValueError:",
                         "            problems = problems or []",
                         f"            problems.append(_bad(_W{n}, line, t))",
                         "    else:", f"        out[{fld!r}] = None"]
            else:
                code.append(f"    out[{fld!r}] = t")
        code.append("    barcode = out.get('barcode') or None")
        for fld in mapping.required:
            column = mapping.fields.get(fld)
            where = f" (column {column!r})" if column else ""
            env[f"_R_{fld}"] = (fld, column, where)
            code += [f"    v = out.get({fld!r})", "    if v is None or v == '':",
                     "        problems = problems or []",
                     f"        problems.append(Problem('missing_required', line, f'line {{line}}: required field "
                     f"{fld}' + _R_{fld}[2] + ' is blank', field={fld!r}, column=_R_{fld}[1], barcode=barcode))"]
        if require_district_id:
            env["_DID_COL"] = mapping.fields.get("district_id")
            code += ["    if not out.get('district_id'):", "        problems = problems or []",
                     "        problems.append(Problem('missing_district_id', line, f'line {line}: no district ID, "
                     "and the district requires one', field='district_id', column=_DID_COL, barcode=barcode))"]
        for fld, allowed in (reference or {}).items():
            env[f"_A_{fld}"] = frozenset(allowed)
            env[f"_AC_{fld}"] = mapping.fields.get(fld)
            code += [f"    v = out.get({fld!r})", f"    if v and v not in _A_{fld}:",
                     "        problems = problems or []",
                     f"        problems.append(Problem('unknown_code', line, f'line {{line}}: {fld} {{v!r}} is not in "
                     f"the {fld} table', field={fld!r}, column=_AC_{fld}, barcode=barcode))"]
        code += ["    if problems and barcode is not None:",
                 "        problems = [p if p.barcode else _with_barcode(p, barcode) for p in problems]",
                 "    return out, problems"]
        self.fields = tuple(emitted)
        self.source = "\n".join(code)
        exec(compile(self.source, f"<mapping {mapping.source}>", "exec"), env)  # noqa: S102 - our own source
        self.fn = env["_map"]

    def __call__(self, row: list[str], line: int) -> tuple[dict[str, object], list[Problem] | None]:
        return self.fn(row, line)


def _bad_value(what: tuple, line: int, text: str) -> Problem:
    code, fld, column, date_format = what
    where = f"column {column!r}" if column else f"field {fld}"
    if code == "bad_date":
        return Problem(code, line, f"line {line}: {where}: {text!r} is not a valid date ({date_format})",
                       field=fld, column=column)
    return Problem(code, line, f"line {line}: {where}: {text!r} is not a whole number", field=fld, column=column)


def row_mapper(
    mapping: ImportMapping,
    columns: tuple[str, ...],
    reference: Mapping[str, Collection[str]] | None = None,
    require_district_id: bool = False,
) -> RowMapper:
    """The RowMapper for this mapping and header, cached on the mapping."""
    key = ("mapper", columns, tuple(sorted((k, frozenset(v)) for k, v in (reference or {}).items())),
           require_district_id)
    mapper = mapping._cache.get(key)
    if mapper is None:
        if len(mapping._cache) > 64:
            mapping._cache.clear()
        mapper = mapping._cache[key] = RowMapper(mapping, columns, reference, require_district_id)
    return mapper


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
    mapper = row_mapper(mapping, tuple(record.values), reference, require_district_id)
    fields, problems = mapper.fn(list(record.values.values()), record.line)
    return MappedRecord(record.line, fields, problems or [])


def _with_barcode(p: Problem, barcode) -> Problem:
    return Problem(p.code, p.line, p.message, p.field, p.column, str(barcode), p.byte_offset)


__all__ = [
    "DEFAULT_MAX_FIELD", "ImportFileError", "line_hasher", "MappedRecord", "Problem", "SourceRecord",
    "guess_encoding", "map_record", "read_records",
]
