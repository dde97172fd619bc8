"""The import engine: a patron CSV file into the patron store, as one run.

`run_import(ctx, ...)` is a run function for `RunEngine.start("import", title, lambda ctx: ...)`.

How it goes:
- `RowReader` streams the file in blocks (decoded with the job's encoding, which overrides the
  properties file's) and yields each data row as a list of fields; rows are grouped into
  chunks of `CHUNK` and each chunk is fingerprinted, mapped and validated in the worker pool
  (`ctx.pool.map`, order kept, at most a few chunks in flight) with the mapping compiled for
  the file's header (`row_mapper`);
- the run thread is the single writer: ONE changeset-writer transaction spans the whole file.
  For each mapped chunk it looks up the patrons the chunk names in bulk (by the match field,
  then by the other unique values only where they differ from the matched patron's), decides
  add / update / unchanged / skipped per record and applies the chunk with `insert_many`,
  `update_many` and `stamp` (all journalled with the run id). A failure, a cancellation or a
  killed process rolls the whole import back; the run engine marks a run whose process died
  as interrupted on the next start;
- a dry run does all of this and then rolls back, so its summary is the real one.

Rules:
- matching: on the properties file's `match` field (district ID or barcode); a record without
  that value is matched on the other one; a record with neither is skipped (`missing_key`);
- the content fingerprint of a record is a 64-bit hash (xxh3, 16 hex digits) of its source line and of the
  mapping (properties and header): the same row under the same properties -> the same
  fingerprint. It is stored in `patrons.import_fingerprint` when a record is written;
- Full: every valid record is compared with the stored patron and written when it differs;
  unchanged patrons get only the "last seen" stamp;
- Incremental: every stored fingerprint is loaded into a set (about 60 bytes per stored
  patron); a row whose fingerprint is in it is unchanged without being mapped or looked up,
  and is not written at all (Incremental files carry what changed; the inactivation rules
  read the "last seen" of Full updates). With `last_modified=<column>` in the properties, a
  row whose last change is older than the start of the previous import with the same
  properties file is unchanged too. Other rows go the Full way;
- every record added, updated or (in Full) unchanged gets `last_seen_import_at` = the
  import's time, which the inactivation rules read;
- columns the file does not carry leave stored values alone; a blank barcode, district ID or
  username never clears a stored one;
- protected fields (`protect=`): an import only fills a protected field while the stored value
  is empty; once it holds a value (set by staff or an earlier import), imports leave it alone;
- unknown site code (or none, for a new patron) -> the Union Site, with a warning `union_site`;
- skipped, each with a reason (`ctx.skipped`, with line and barcode): every `Problem` of the
  reader / mapper (undecodable, ragged_row, bad_date, missing_required, missing_district_id,
  unknown_code, ...), `missing_key`, `duplicate_in_file` (the first record with a key wins;
  the message names its line), `barcode_conflict` (the barcode belongs to another patron,
  stored or earlier in this file: nothing of either patron changes, and the incoming record is
  kept whole in `import_conflicts` for resolution; the same check on district ID and username
  gives `district_id_conflict` / `username_conflict`).

Memory: constant in the file's size. What the file has already claimed is read back from the
database (a patron this run touched has `last_seen_import_at` = the run's time; the line that
touched it is in a temporary table), not held in memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from patron_tui.models import EventKind
from patron_tui.runs import RunContext, RunFailed
from patron_tui.services.imports import sourcefile
from patron_tui.services.imports.mapproc import PROCESS_MIN_BYTES, MappedChunks, map_chunk
from patron_tui.services.imports.properties import (
    PATRON_FIELDS,
    ImportMapping,
    PropertiesError,
    dump_properties,
    load_properties,
    normalize_encoding,
)
from patron_tui.services.imports.records import (
    ImportFileError,
    Problem,
    RowReader,
    _date_parser,
    line_hasher,
    row_mapper,
)

IMPORT_KIND = "import"
MODES = ("full", "incremental")
CHUNK = 1000

# patron fields checked against a reference table (a value outside it skips the record);
# the site is not here: an unknown site goes to the Union Site instead
REFERENCE_FIELDS: dict[str, str] = {
    "grade": "grades",
    "patron_type": "patron_types",
    "policy": "policies",
    "security_group": "security_groups",
    "access_level": "access_levels",
    "persona": "personas",
    "status": "statuses",
}
UNIQUE_FIELDS = ("district_id", "barcode", "username")


class _DryRun(Exception):
    """Raised inside the writer's `with` to roll a dry run back."""


def new_patron_row(fields: dict[str, Any], *, now: str, fingerprint: str | None) -> dict[str, Any]:
    """The patrons row an import adds for a record's mapped `fields` (site already resolved):
    the fields the file carries (a blank barcode, district ID or username is NULL); every other
    column takes the schema's default."""
    row = dict(fields)
    for k in UNIQUE_FIELDS:
        if k in row and not row[k]:
            row[k] = None
    row["created_at"] = row["updated_at"] = row["last_seen_import_at"] = now
    row["import_fingerprint"] = fingerprint
    return row


def patron_changes(existing: dict[str, Any], fields: dict[str, Any], protect: Iterable[str]) -> dict[str, Any]:
    """The columns an import changes on `existing` (a patrons row as a dict) for `fields`: a
    blank barcode, district ID or username never clears a stored one, and a protected field
    is only filled while it is empty. Empty when nothing differs."""
    protect = protect if isinstance(protect, (set, frozenset)) else frozenset(protect)
    diff: dict[str, Any] = {}
    for k, v in fields.items():
        if k in UNIQUE_FIELDS and not v:
            continue
        old = existing.get(k)
        if k in protect and old not in (None, ""):
            continue
        if old != v:
            diff[k] = v
    return diff


def row_fingerprint(seed: bytes, row: list[str], raw: bytes | None = None) -> str:
    """The content fingerprint of a source record under a mapping (`seed` = mapping_seed(...)),
    16 hex digits: a hash of its raw bytes for a one-line record (what `RowReader` yields),
    else of its fields."""
    return line_hasher(seed)(raw if raw is not None else "\x1f".join(row).encode("utf-8", "surrogatepass"))


def mapping_seed(mapping: ImportMapping, columns: tuple[str, ...]) -> bytes:
    """16 bytes that change when the properties (or the header) change."""
    text = dump_properties(mapping) + "\x1e" + "\x1f".join(columns)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _name(fields: dict[str, Any]) -> str:
    last = str(fields.get("last_name") or "").strip()
    first = str(fields.get("first_name") or "").strip()
    return ", ".join(p for p in (last, first) if p) or "(no name)"


def _who(row: dict[str, Any]) -> str:
    ids = []
    if row.get("district_id"):
        ids.append(f"district ID {row['district_id']}")
    if row.get("barcode"):
        ids.append(f"barcode {row['barcode']}")
    return f"{_name(row)} ({', '.join(ids) or 'patron ' + str(row.get('id'))})"


def run_import(
    ctx: RunContext,
    *,
    path: str | Path,
    mapping: ImportMapping | None = None,
    properties_path: str | Path | None = None,
    mode: str = "full",
    dry_run: bool = False,
    encoding: str | None = None,
    summary_errors_only: bool = False,
    chunk_size: int = CHUNK,
    process: bool | None = None,
) -> dict[str, Any]:
    """Import `path` (see the module doc); returns the summary the run engine stores.

    `process`: map in a second process (`mapproc`); None decides (Full, a file of
    `PROCESS_MIN_BYTES` or more, a worker pool of 2 or more; `$PATRON_TUI_IMPORT_PROCESS`
    = always / never overrides)."""
    started = time.monotonic()
    if mode not in MODES:
        raise RunFailed(f"unknown import mode {mode!r}; use full or incremental")
    if mapping is None:
        if properties_path is None:
            raise RunFailed("an import needs a properties file")
        try:
            mapping = load_properties(properties_path)
        except PropertiesError as exc:
            raise RunFailed(str(exc)) from None
        except OSError as exc:
            raise RunFailed(f"{properties_path}: {exc.strerror or exc}") from None
    if encoding:
        try:
            normalize_encoding(encoding)
        except ValueError as exc:
            raise RunFailed(f"{path}: {exc}") from None
    path = Path(path)
    refused = sourcefile.refusal(path)   # a directory, a FIFO, a link loop, ...: said as such
    if refused:
        raise RunFailed(refused)

    reader = RowReader(path, mapping, encoding=encoding)
    summary: dict[str, Any] = {"mode": mode, "dry_run": dry_run, "file": str(path),
                               "properties": mapping.source, "encoding": encoding or mapping.encoding_label}
    chunks: MappedChunks | None = None
    try:
        reader.open()
        if process is None:
            forced = os.environ.get("PATRON_TUI_IMPORT_PROCESS", "").strip().lower()   # tests, support
            process = (forced in ("1", "yes", "always") or forced not in ("0", "no", "never")
                       and mode == "full" and reader.size >= PROCESS_MIN_BYTES and ctx.pool.size >= 2)
        if process:
            # a big Full import: a second process reads and maps, this thread decides and writes;
            # it starts now, so that its interpreter starts while this run prepares
            chunks = MappedChunks()
        imp = _Import(ctx, mapping, reader.columns, mode=mode, errors_only=summary_errors_only)
        imp.dry_run = dry_run
        imp.source = reader
        with ctx.writer() as writer:
            imp.prepare(writer)
            if chunks is not None:
                reader.close()
                chunks.start(path, mapping, encoding=encoding, reference=imp.reference,
                             require_district_id=imp.require, seed=imp.seed, chunk_size=chunk_size)
                for mapped in chunks:
                    ctx.check_cancelled()
                    imp.apply(writer, mapped)
                    read = imp.counts["read"]
                    ctx.progress(read, max(read, round(read * reader.size / max(1, chunks.bytes_read))))
            else:
                imp.run_in_threads(writer, reader, chunk_size)
            ctx.progress(imp.counts["read"], imp.counts["read"], force=True)
            imp.finish(writer)
            if dry_run:
                raise _DryRun()
            ctx.summary.update(_outcome(summary, imp, ctx, started))   # commits with the data
    except _DryRun:
        pass
    except ImportFileError as exc:
        raise RunFailed(str(exc)) from None
    finally:
        if chunks is not None:
            chunks.close()
    _outcome(summary, imp, ctx, started)
    ctx.info(
        f"{'Dry run: ' if dry_run else ''}{summary['read']} records read: {summary['added']} added, "
        f"{summary['updated']} updated, {summary['unchanged']} unchanged, {summary['skipped']} skipped "
        f"({summary['conflicts']} barcode conflicts){'; nothing was changed' if dry_run else ''}.",
        code="import_done",
    )
    return summary


def _outcome(summary: dict[str, Any], imp: "_Import", ctx: RunContext, started: float) -> dict[str, Any]:
    """The import's counts into `summary`: in the write transaction (the run's outcome commits
    with its data: RunContext.writer), and again after it."""
    summary.update(imp.counts)
    summary["errors"] = ctx.counts["error"]
    summary["warnings"] = ctx.counts["warning"]
    summary["by_code"] = dict(sorted(imp.by_code.items()))
    summary["duration_s"] = round(time.monotonic() - started, 3)
    return summary


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Import:
    """The state of one import: reference data, the compiled mapping, counts."""

    def __init__(self, ctx: RunContext, mapping: ImportMapping, columns: tuple[str, ...], *, mode: str,
                 errors_only: bool) -> None:
        self.ctx = ctx
        self.mapping = mapping
        self.columns = columns
        self.mode = mode
        self.errors_only = errors_only
        self.dry_run = False
        self.source: RowReader | None = None   # the file's reader: its identity is checked at the commit
        self.protect = frozenset(mapping.protect)
        self.seed = mapping_seed(mapping, columns)
        self.counts = {"read": 0, "added": 0, "updated": 0, "unchanged": 0, "skipped": 0, "conflicts": 0}
        self.by_code: Counter[str] = Counter()
        self.sites: frozenset[str] = frozenset()
        self.union: str | None = None
        self.mapper = None
        self.reference: dict[str, frozenset[str]] = {}
        self.require = False
        self.stored: set[str] | None = None     # Incremental: every stored fingerprint
        self.modified: tuple[int, Any] | None = None   # Incremental: (column index, is-old test)
        self.now = ""
        self.carried = set(mapping.fields) | set(mapping.defaults) | (set(mapping.custom) & set(PATRON_FIELDS))
        self.keys: tuple[str, ...] = ()
        self.ix: dict[str, int] = {}
        self.unique: tuple[tuple[str, int], ...] = ()
        self.nkeys = 0
        self.sel_cols: tuple[str, ...] = ()
        self.select = ""

    # -- setup -----------------------------------------------------------------------
    def prepare(self, writer) -> None:
        conn = writer.conn
        self.now = writer.ts
        self.sites = frozenset(r[0] for r in conn.execute("SELECT code FROM sites"))
        row = conn.execute("SELECT code FROM sites WHERE is_union = 1").fetchone()
        self.union = row[0] if row else None
        reference = {
            fld: frozenset(r[0] for r in conn.execute(f"SELECT code FROM {table}"))
            for fld, table in REFERENCE_FIELDS.items() if fld in self.carried
        }
        setting = conn.execute("SELECT value FROM settings WHERE key = 'require_district_id'").fetchone()
        require = bool(setting) and str(setting[0]).strip().lower() in ("on", "1", "true", "yes")
        self.reference, self.require = reference, require
        mapper = row_mapper(self.mapping, self.columns, reference, require)
        self.mapper = mapper.fn
        # stored rows are read as (id, fingerprint, last seen, *the mapped fields in the mapper's
        # order, *other names): a record is unchanged when its values tuple equals the slice
        self.keys = mapper.fields
        extra = sorted(({"district_id", "barcode", "username", "first_name", "last_name"} - set(self.keys))
                       & set(PATRON_FIELDS))
        self.sel_cols = ("id", "import_fingerprint", "last_seen_import_at", *self.keys, *extra)
        self.select = ", ".join(self.sel_cols)
        self.nkeys = len(self.keys)
        self.ix = {fld: i for i, fld in enumerate(self.keys)}
        self.unique = tuple((fld, self.ix[fld]) for fld in UNIQUE_FIELDS if fld in self.ix)
        # which line of the file matched or added a patron: per patron, or per range of added ids
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _import_seen (id INTEGER PRIMARY KEY, line INTEGER)")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _import_added"
                     " (first_id INTEGER PRIMARY KEY, last_id INTEGER NOT NULL, first_line INTEGER NOT NULL)")
        conn.execute("DELETE FROM temp._import_seen")
        conn.execute("DELETE FROM temp._import_added")
        if self.mode == "incremental":
            # one text from SQLite and one split: a cursor's 200,000 one-value rows cost twice that
            (text,) = conn.execute("SELECT group_concat(import_fingerprint) FROM patrons"
                                   " WHERE import_fingerprint IS NOT NULL").fetchone()
            self.stored = set(text.split(",")) if text else set()
            self.modified = self._modified_test(conn)

    def _modified_test(self, conn):
        column = self.mapping.last_modified
        if not column or column not in self.columns:
            return None
        row = conn.execute(
            "SELECT started_at FROM runs WHERE kind = ? AND status = 'succeeded'"
            " AND json_extract(summary, '$.properties') = ? AND json_extract(summary, '$.dry_run') = 0"
            " ORDER BY id DESC LIMIT 1", (IMPORT_KIND, self.mapping.source)).fetchone()
        if not row or not row[0]:
            return None
        cutoff = dt.datetime.fromisoformat(str(row[0]).replace("Z", "+00:00")).replace(tzinfo=None)
        parse_date = _date_parser(self.mapping.date_format)

        def older(text: str) -> bool:
            """True when the record's last change is before the previous import began."""
            text = text.strip()
            if not text:
                return False
            try:
                when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
                if when.tzinfo is not None:
                    when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
            except ValueError:
                try:
                    when = dt.datetime.fromisoformat(parse_date(text))
                except ValueError:
                    return False
                return when.date() < cutoff.date()   # a date alone: older only if before that day
            return when < cutoff

        return self.columns.index(column), older

    def finish(self, writer) -> None:
        if self.source is not None and self.source.identity is not None:
            # the commit point: the file is still the one read, as it was read (a mapping
            # process read it on its own; a change after the last block is caught here)
            sourcefile.ensure_unchanged(self.source.path, self.source.identity)
        writer.conn.execute("DELETE FROM temp._import_seen")
        writer.conn.execute("DELETE FROM temp._import_added")

    def run_in_threads(self, writer, reader: RowReader, chunk_size: int) -> None:
        """Read in this thread, map in the worker pool, decide and write in this thread."""
        ctx = self.ctx
        fed = [0]
        if self.stored is not None:
            reader.skip_unchanged(self.stored, self.seed)

            def on_block() -> None:   # Incremental: most records never reach a chunk
                ctx.check_cancelled()
                done = self.counts["read"] + reader.unchanged
                ctx.progress(done, max(done, round(done * reader.size / max(1, reader.bytes_read))))

            reader.on_block = on_block
        rows: Iterable = reader if self.stored is None else self.unchanged_filter(reader)

        def feed() -> Iterator[list]:
            for chunk in _chunks(rows, chunk_size):
                fed[0] = self.counts["read"] + len(chunk)
                yield chunk

        for mapped in ctx.pool.map(self.map_chunk, feed(), cancel=ctx.cancel_event):
            ctx.check_cancelled()
            self.apply(writer, mapped)
            read = self.counts["read"]
            # the total is estimated from the bytes read so far, until the end
            estimate = max(read, round(fed[0] * reader.size / reader.bytes_read)) if reader.bytes_read else None
            ctx.progress(read, estimate)

    # -- Incremental: the unchanged records, in the run thread --------------------------
    def unchanged_filter(self, reader: RowReader) -> Iterator:
        """The reader's items less the unchanged records (counted here): a record whose
        fingerprint is stored, or (with last_modified=) whose last change is older than the
        previous import. Runs in the run thread: per record a hash and a set lookup, no
        mapping, no database."""
        stored, seed, modified, counts = self.stored, self.seed, self.modified, self.counts
        assert stored is not None
        hexdigest = line_hasher(seed)
        unchanged = 0
        for item in reader:
            if item.__class__ is tuple:
                raw = item[2]
                fp = hexdigest(raw if raw is not None else "\x1f".join(item[1]).encode("utf-8", "surrogatepass"))
                if fp in stored:
                    stored.discard(fp)   # a second identical record goes the long way: a duplicate
                    unchanged += 1
                    continue
                if modified is not None and modified[1](item[1][modified[0]]):
                    unchanged += 1
                    continue
            yield item
        counts["read"] += unchanged + reader.unchanged
        counts["unchanged"] += unchanged + reader.unchanged

    # -- the worker pool's part: fingerprint, mapping -------------------------------------
    def map_chunk(self, chunk: list) -> list:
        """Each item -> a Problem or (line, fields, problems, fingerprint)."""
        return map_chunk(self.mapper, self.seed, chunk)

    # -- messages --------------------------------------------------------------------------
    def skip(self, code: str, line: int | None, text: str, barcode: Any = None, patron_id: int | None = None) -> None:
        self.counts["skipped"] += 1
        self.by_code[code] += 1
        if code == "barcode_conflict":
            self.counts["conflicts"] += 1
        self.ctx.skipped(text, code=code, line=line, barcode=str(barcode) if barcode else None,
                         patron_id=patron_id)

    def warn(self, code: str, line: int, text: str, barcode: Any = None) -> None:
        self.by_code[code] += 1
        self.ctx.warning(text, code=code, line=line, barcode=str(barcode) if barcode else None)

    # -- the writer's part -----------------------------------------------------------------
    def _fetch(self, conn, fld: str, values: Iterable[str]) -> dict[str, tuple]:
        """Stored patrons whose `fld` is one of `values`, by that value, as `sel_cols` tuples."""
        values = list(values)
        if not values:
            return {}
        cur = conn.cursor()
        cur.row_factory = None  # plain tuples: sqlite3.Row -> dict costs more than the query
        col = self.sel_cols.index(fld)
        return {
            str(row[col]): row
            for row in cur.execute(
                f"SELECT {self.select} FROM patrons WHERE {fld} IS NOT NULL"  # lets the partial index serve
                f" AND {fld} IN (SELECT value FROM json_each(?))",
                (json.dumps(values),),
            )
        }

    def _row(self, stored: tuple) -> dict[str, Any]:
        return dict(zip(self.sel_cols, stored))

    def _seen_line(self, conn, pid: int) -> int | None:
        """The line of this file that added or matched patron `pid`, if any."""
        row = conn.execute("SELECT line FROM temp._import_seen WHERE id = ?", (pid,)).fetchone()
        if row:
            return row[0]
        row = conn.execute("SELECT first_line + (? - first_id), last_id FROM temp._import_added"
                           " WHERE first_id <= ? ORDER BY first_id DESC LIMIT 1", (pid, pid)).fetchone()
        return row[0] if row and row[1] >= pid else None

    def apply(self, writer, chunk: list) -> None:
        counts = self.counts
        good: list[tuple] = []
        for item in chunk:
            counts["read"] += 1
            if item.__class__ is Problem:
                self.skip(item.code, item.line, item.message, item.barcode)
            elif item[2]:
                problems = item[2]
                first = problems[0]
                text = first.message
                if len(problems) > 1:
                    text += "; also: " + "; ".join(p.message.split(": ", 1)[-1] for p in problems[1:])
                self.skip(first.code, item[0], text, first.barcode or item[1].get("barcode"))
            else:
                good.append(item)
        if good:
            self._decide(writer, good)

    def _decide(self, writer, good: list[tuple]) -> None:
        """Decide and write one chunk's good records, each (line, values, None, fingerprint)
        with `values` in `self.keys` order."""
        conn = writer.conn
        now = self.now
        keys, ix = self.keys, self.ix
        match = self.mapping.match
        other = "barcode" if match == "district_id" else "district_id"
        mi, oi, bi, si = ix.get(match), ix.get(other), ix.get("barcode"), ix.get("site")
        unique = self.unique   # (field, index in values); its stored column is 3 + index
        # 1. the patron each record names
        keyed: list[tuple[str | None, str | None]] = []
        want: dict[str, set[str]] = {match: set(), other: set()}
        for _line, vals, _p, _fp in good:
            v = vals[mi] if mi is not None else None
            if v:
                kf, key = match, str(v)
            else:
                v = vals[oi] if oi is not None else None
                kf, key = (other, str(v)) if v else (None, None)
            keyed.append((kf, key))
            if kf:
                want[kf].add(key)
        stored = {fld: self._fetch(conn, fld, vals) for fld, vals in want.items()}
        # 2. holders of the other unique values, where they differ from the named patron's
        need: dict[str, set[str]] = {fld: set() for fld in UNIQUE_FIELDS}
        for (_line, vals, _p, _fp), (kf, key) in zip(good, keyed):
            if kf is None:
                continue
            existing = stored[kf].get(key)
            for fld, i in unique:
                v = vals[i]
                if v and fld != kf and (existing is None or existing[3 + i] != v):
                    need[fld].add(str(v))
        holders: dict[str, dict[str, tuple]] = {}
        for fld in UNIQUE_FIELDS:
            known = stored.get(fld, {})
            missing = need[fld] - known.keys()
            holders[fld] = {**known, **self._fetch(conn, fld, missing)} if missing else known

        adds: list[tuple[int, Any, str]] = []   # (line, values tuple or fields dict, fingerprint)
        infos: list[tuple[str, str, int, str | None, int | None]] = []   # run_messages rows
        counts = self.counts
        sites, nkeys, end = self.sites, self.nkeys, 3 + self.nkeys
        errors_only = self.errors_only
        if (not any(stored.values()) and not any(holders.values()) and all(kf for kf, _ in keyed)
                and all(len(set(col)) == len(col)
                        for col in ([vals[i] for _, vals, _, _ in good if vals[i]] for _, i in unique))):
            # nobody holds what this chunk names, and no two records name the same value:
            # every record is a new patron (a first load goes this way)
            for line, vals, _p, fp in good:
                if si is None or vals[si] not in sites:
                    f = self._site(dict(zip(keys, vals)), None, line, vals[bi] or None if bi is not None else None)
                    adds.append((line, f, fp))
                else:
                    adds.append((line, vals, fp))
                if not errors_only:
                    infos.append((f"line {line}: added {self._name_of(vals)}", "added", line,
                                  vals[bi] or None if bi is not None else None, None))
            counts["added"] += len(adds)
            self._write(writer, adds=adds, infos=infos)
            return

        # 3. decide, record by record (claims inside this chunk are local; earlier chunks'
        #    are in the database: a patron this run touched has last_seen_import_at = now)
        claimed: dict[str, dict[str, tuple[int, int]]] = {f: {} for f in UNIQUE_FIELDS}
        seen: dict[int, int] = {}
        updates: list[tuple[int, dict[str, Any]]] = []
        stamps: list[int] = []
        refresh: list[tuple[int, dict[str, Any]]] = []
        conflicts: list[dict[str, Any]] = []
        incremental = self.mode == "incremental"
        for (line, vals, _p, fp), (kf, key) in zip(good, keyed):
            barcode = vals[bi] or None if bi is not None else None
            if kf is None:
                self.skip("missing_key", line, f"line {line}: no {match.replace('_', ' ')} and no "
                          f"{other.replace('_', ' ')} to match the record on", barcode)
                continue
            first = claimed[kf].get(key)
            if first is not None:
                self.skip("duplicate_in_file", line,
                          f"line {line}: {kf.replace('_', ' ')} {key} appears again; line {first[0]} "
                          f"has it first and wins", barcode)
                continue
            existing = stored[kf].get(key)
            if existing is not None:
                pid = existing[0]
                earlier = seen.get(pid)
                if earlier is None and existing[2] == now:
                    earlier = self._seen_line(conn, pid) or 0
                if earlier is None and incremental and existing[1] == fp:
                    earlier = 0   # an identical record was unchanged earlier in the file
                if earlier is not None:
                    where = f"line {earlier}" if earlier else "an earlier line"
                    self.skip("duplicate_in_file", line,
                              f"line {line}: the record is for the same patron as {where} "
                              f"({_who(self._row(existing))}), which wins", barcode, pid)
                    continue
                target = pid
            else:
                target = -line
            # a unique value someone else holds (stored, or claimed earlier in this chunk)?
            # the quick test here; _conflict says which and why
            taken = False
            for fld, i in unique:
                v = vals[i]
                if v and (existing is None or existing[3 + i] != v):
                    h = holders[fld].get(v)
                    c = claimed[fld].get(v)
                    if h is not None and h[0] != target or c is not None and c[1] != target:
                        taken = True
                        break
            f: dict[str, Any] | None = None
            if taken:
                f = dict(zip(keys, vals))
                conflict = self._conflict(conn, line, f, holders, claimed, target, existing)
                if conflict is not None:
                    fld, value, holder_id = conflict
                    conflicts.append({
                        "run_id": self.ctx.run_id, "line": line, "field": fld, "value": value,
                        "holder_id": holder_id, "target_id": target if target > 0 else None,
                        "incoming": json.dumps({"fields": self._site(dict(f), existing, line, None, warn=False),
                                                "fingerprint": fp,
                                                "protect": sorted(self.protect), "mode": self.mode},
                                               ensure_ascii=False, default=str),
                    })
                    continue
            # the record is accepted: claim its keys
            for fld, i in unique:
                v = vals[i]
                if v:
                    claimed[fld].setdefault(v, (line, target))
            if si is None and existing is None or si is not None and vals[si] not in sites:
                # an unknown site or none: the Union Site for a new patron; a blank one is dropped
                f = self._site(f or dict(zip(keys, vals)), existing, line, barcode)
            if existing is None:
                adds.append((line, vals if f is None else f, fp))
                counts["added"] += 1
                if not errors_only:
                    infos.append((f"line {line}: added {self._name_of(vals)}", "added", line, barcode, None))
                continue
            seen[target] = line
            if f is None and vals == existing[3:end]:
                diff = None   # every carried field as stored
            else:
                old = self._row(existing)
                diff = patron_changes(old, f or dict(zip(keys, vals)), self.protect)
            if not diff:
                if existing[1] != fp:
                    refresh.append((target, {"import_fingerprint": fp, "last_seen_import_at": now}))
                else:
                    stamps.append(target)
                counts["unchanged"] += 1
                continue
            fields = ", ".join(diff)
            diff.update(updated_at=now, last_seen_import_at=now, import_fingerprint=fp)
            updates.append((target, diff))
            counts["updated"] += 1
            if not errors_only:
                b = barcode or old.get("barcode")
                infos.append((f"line {line}: updated {_name(old)}: {fields}", "updated", line,
                              str(b) if b else None, target))
        self._write(writer, adds=adds, infos=infos, updates=updates, refresh=refresh, stamps=stamps, seen=seen,
                    conflicts=conflicts)

    def _name_of(self, vals: tuple) -> str:
        """_name of a values tuple (the mapper has stripped its text already)."""
        fn, ln = self.ix.get("first_name"), self.ix.get("last_name")
        first = vals[fn] or "" if fn is not None else ""
        last = vals[ln] or "" if ln is not None else ""
        return f"{last}, {first}" if last and first else last or first or "(no name)"

    def _write(self, writer, *, adds: list[tuple[int, Any, str]], infos: list[tuple],
               updates=(), refresh=(), stamps=(), seen: dict[int, int] | None = None, conflicts=()) -> None:
        """Apply one chunk's decisions, then report them."""
        conn, now = writer.conn, self.now
        if updates:
            writer.update_many("patrons", updates)
        if refresh:
            writer.update_many("patrons", refresh)
        if stamps:
            writer.stamp("patrons", "last_seen_import_at", now, stamps)
        seen_rows = list(seen.items()) if seen else []
        if adds:
            if all(v.__class__ is tuple for _, v, _ in adds):
                # values tuples straight into the insert: blank unique values become NULL in SQL
                first_id = writer.insert_values(
                    "patrons", (*self.keys, "import_fingerprint"), [(*v, fp) for _, v, fp in adds],
                    wrap={k: "nullif(?, '')" for k in UNIQUE_FIELDS if k in self.ix},
                    constants={"created_at": now, "updated_at": now, "last_seen_import_at": now})
            else:
                first_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM patrons").fetchone()[0]
                # fresh consecutive ids (the writer holds the lock): journalled as one insert_range
                writer.insert_many("patrons", [
                    new_patron_row(v if v.__class__ is dict else dict(zip(self.keys, v)), now=now, fingerprint=fp)
                    for _, v, fp in adds], journal="range")
            lines = [line for line, _, _ in adds]
            if lines[-1] - lines[0] == len(lines) - 1:
                # consecutive lines (lines only grow): one row says which line added which id
                conn.execute("INSERT INTO temp._import_added VALUES (?, ?, ?)",
                             (first_id, first_id + len(lines) - 1, lines[0]))
            else:
                seen_rows += [(first_id + i, line) for i, line in enumerate(lines)]
        if seen_rows:
            conn.execute("INSERT OR IGNORE INTO temp._import_seen SELECT value ->> 0, value ->> 1 FROM json_each(?)",
                         (json.dumps(seen_rows),))
        for conflict in conflicts:
            writer.insert("import_conflicts", conflict)
        if infos:
            # "added"/"updated" lines are written in this transaction: they commit or roll back
            # with what they describe (a dry run's go through the persister: they must stay)
            self.ctx.messages(EventKind.INFO, infos, conn=None if self.dry_run else conn)

    def _site(self, values: dict[str, Any], existing, line: int, barcode, *, warn: bool = True) -> dict[str, Any]:
        """An unknown site (or none, for a new patron) -> the Union Site, with a warning."""
        site = values.get("site")
        if site and site not in self.sites or (existing is None and not site):
            if self.union is not None:
                if warn:
                    self.warn("union_site", line,
                              f"line {line}: site {site!r} is not a site of the district; "
                              f"{_name(values)} goes to the Union Site ({self.union})" if site else
                              f"line {line}: no site; {_name(values)} goes to the Union Site ({self.union})",
                              barcode)
                values["site"] = self.union
        elif not site:
            values.pop("site", None)
        return values

    def _conflict(self, conn, line: int, f: dict[str, Any], holders, claimed, target: int, existing
                  ) -> tuple[str, str, int | None] | None:
        """Skip the record when one of its unique values belongs to another patron; returns
        (field, value, holder patron id or None for a patron this file adds) then."""
        sel = self.sel_cols
        for fld in UNIQUE_FIELDS:
            value = f.get(fld)
            if not value:
                continue
            if existing is not None and existing[sel.index(fld)] == value:
                continue   # the matched patron's own value: no one else can hold it
            value = str(value)
            word = fld.replace("_", " ")
            holder = holders[fld].get(value)
            if holder is not None and holder[0] != target:
                who = _who(self._row(holder))
                if holder[2] == self.now:
                    earlier = self._seen_line(conn, holder[0])
                    where = f"the record on line {earlier}" if earlier else "an earlier record"
                    self.skip(f"{fld}_conflict", line,
                              f"line {line}: {word} {value} is already taken by {where} of this file "
                              f"({who}); the record for {_name(f)} was skipped",
                              f.get("barcode"), holder[0])
                    return fld, value, holder[0]
                self.skip(
                    f"{fld}_conflict", line,
                    f"line {line}: {word} {value} belongs to {who}; the record for "
                    f"{_name(f)} (line {line}{', district ID ' + str(f['district_id']) if f.get('district_id') and fld != 'district_id' else ''}) "
                    f"was skipped and neither patron was changed",
                    f.get("barcode"), holder[0],
                )
                return fld, value, holder[0]
            claim = claimed[fld].get(value)
            if claim is not None and claim[1] != target:
                self.skip(
                    f"{fld}_conflict", line,
                    f"line {line}: {word} {value} is already taken by the record on line {claim[0]} "
                    f"of this file; the record for {_name(f)} was skipped",
                    f.get("barcode"),
                )
                return fld, value, claim[1] if claim[1] > 0 else None
        return None


__all__ = ["IMPORT_KIND", "MODES", "mapping_seed", "new_patron_row", "patron_changes", "row_fingerprint",
           "run_import"]
