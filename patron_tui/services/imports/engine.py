"""The import engine: a patron CSV file into the patron store, as one run.

`run_import(ctx, ...)` is a run function for `RunEngine.start("import", title, lambda ctx: ...)`.

How it goes:
- `read_records` streams the file (decoded per line with the job's encoding, which overrides
  the properties file's); records are grouped into chunks of `CHUNK` and each chunk is mapped
  and validated in the worker pool (`ctx.pool.map`, order kept, at most a few chunks in flight);
- the run thread is the single writer: ONE changeset-writer transaction spans the whole file.
  For each mapped chunk it looks up the patrons the chunk names (district ID, barcode,
  username) in bulk, decides add / update / unchanged / skipped per record and applies the
  chunk with `insert_many` and `update_many` (both journalled with the run id). A failure,
  a cancellation or a killed process rolls the whole import back; the run engine marks a
  run whose process died as interrupted on the next start;
- a dry run does all of this and then rolls back, so its summary is the real one.

Rules:
- matching: on the properties file's `match` field (district ID or barcode); a record without
  that value is matched on the other one; a record with neither is skipped (`missing_key`);
- Full: every valid record is compared with the stored patron and written when it differs.
  Incremental: a record whose content fingerprint (a hash of its mapped fields, stored in
  `patrons.import_fingerprint`) equals the stored one is unchanged without comparing fields;
- every record matched or added gets `last_seen_import_at` = the import's time (unchanged
  ones too: a bulk update of that one column), which the inactivation rules read;
- columns the file does not carry leave stored values alone; a blank barcode, district ID or
  username never clears a stored one;
- protected fields (`protect=`): an import only fills a protected field while the stored value
  is empty; once it holds a value (set by staff or an earlier import), imports leave it alone;
- unknown site code (or none, for a new patron) -> the Union Site, with a warning `union_site`;
- skipped, each with a reason (`ctx.skipped`, with line and barcode): every `Problem` of
  `read_records` / `map_record` (undecodable, ragged_row, bad_date, missing_required,
  missing_district_id, unknown_code, ...), `missing_key`, `duplicate_in_file` (the first
  record with a key wins; the message names its line), `barcode_conflict` (the barcode belongs
  to another patron, stored or earlier in this file: nothing of either patron changes; the
  same check on district ID and username gives `district_id_conflict` / `username_conflict`).

Memory: constant per chunk, plus one small entry per distinct key in the file (to find
duplicates and conflicts inside the file).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from patron_tui.runs import RunContext, RunFailed
from patron_tui.services.imports.properties import (
    PATRON_FIELDS,
    ImportMapping,
    PropertiesError,
    load_properties,
    normalize_encoding,
)
from patron_tui.services.imports.records import (
    ImportFileError,
    MappedRecord,
    Problem,
    SourceRecord,
    map_record,
    read_records,
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
_NULLABLE = frozenset({"barcode", "district_id", "username", "graduation_year", "birthdate", "account_expires"})
_ADD_DEFAULTS: dict[str, Any] = {
    f: (None if f in _NULLABLE else "Active" if f == "status" else "") for f in PATRON_FIELDS
}
_COLS = ("id", "import_fingerprint", *PATRON_FIELDS)
_SELECT = ", ".join(_COLS)


class _DryRun(Exception):
    """Raised inside the writer's `with` to roll a dry run back."""


def fingerprint(fields: dict[str, Any]) -> str:
    """A content hash of a record's mapped fields (the same fields, values -> the same hash)."""
    text = json.dumps(sorted(fields.items()), ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def new_patron_row(fields: dict[str, Any], *, now: str, fingerprint: str | None) -> dict[str, Any]:
    """The patrons row an import adds for a record's mapped `fields` (site already resolved)."""
    row = {**_ADD_DEFAULTS}
    for k, v in fields.items():
        row[k] = (v or None) if k in UNIQUE_FIELDS else v
    row.update(created_at=now, updated_at=now, last_seen_import_at=now, import_fingerprint=fingerprint)
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


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
) -> dict[str, Any]:
    """Import `path` (see the module doc); returns the summary the run engine stores."""
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
    if not path.is_file():
        raise RunFailed(f"{path}: no such file")

    imp = _Import(ctx, mapping, mode=mode, errors_only=summary_errors_only)
    summary: dict[str, Any] = {"mode": mode, "dry_run": dry_run, "file": str(path),
                               "encoding": encoding or mapping.encoding_label}
    try:
        with ctx.writer() as writer:
            imp.prepare(writer)
            records = read_records(path, mapping, encoding=encoding)
            mapper = imp.mapper()
            for mapped in ctx.pool.map(mapper, _chunks(records, chunk_size), cancel=ctx.cancel_event):
                ctx.check_cancelled()
                imp.apply(writer, mapped)
                ctx.progress(imp.counts["read"])
            ctx.progress(imp.counts["read"], imp.counts["read"], force=True)
            if dry_run:
                raise _DryRun()
    except _DryRun:
        pass
    except ImportFileError as exc:
        raise RunFailed(str(exc)) from None
    summary.update(imp.counts)
    summary["errors"] = ctx.counts["error"]
    summary["warnings"] = ctx.counts["warning"]
    summary["by_code"] = dict(sorted(imp.by_code.items()))
    summary["duration_s"] = round(time.monotonic() - started, 3)
    ctx.info(
        f"{'Dry run: ' if dry_run else ''}{summary['read']} records read: {summary['added']} added, "
        f"{summary['updated']} updated, {summary['unchanged']} unchanged, {summary['skipped']} skipped "
        f"({summary['conflicts']} barcode conflicts){'; nothing was changed' if dry_run else ''}.",
        code="import_done",
    )
    return summary


class _Import:
    """The state of one import: reference data, keys seen in the file, counts."""

    def __init__(self, ctx: RunContext, mapping: ImportMapping, *, mode: str, errors_only: bool) -> None:
        self.ctx = ctx
        self.mapping = mapping
        self.mode = mode
        self.errors_only = errors_only
        self.protect = frozenset(mapping.protect)
        self.counts = {"read": 0, "added": 0, "updated": 0, "unchanged": 0, "skipped": 0, "conflicts": 0}
        self.by_code: Counter[str] = Counter()
        # (field, value) -> (line, target) of the first record in the file that claimed it;
        # target is a stored patron's id, or -line for a patron this file adds
        self.claimed: dict[str, dict[str, tuple[int, int]]] = {f: {} for f in UNIQUE_FIELDS}
        self.seen_ids: dict[int, int] = {}   # stored patron id -> line that matched it
        self.sites: frozenset[str] = frozenset()
        self.union: str | None = None
        self.reference: dict[str, frozenset[str]] = {}
        self.require_district_id = False
        self.now = ""

    # -- setup -----------------------------------------------------------------------
    def prepare(self, writer) -> None:
        conn = writer.conn
        self.now = writer.ts
        self.sites = frozenset(r[0] for r in conn.execute("SELECT code FROM sites"))
        row = conn.execute("SELECT code FROM sites WHERE is_union = 1").fetchone()
        self.union = row[0] if row else None
        carried = set(self.mapping.fields) | set(self.mapping.defaults) | set(self.mapping.custom)
        self.reference = {
            fld: frozenset(r[0] for r in conn.execute(f"SELECT code FROM {table}"))
            for fld, table in REFERENCE_FIELDS.items() if fld in carried
        }
        setting = conn.execute("SELECT value FROM settings WHERE key = 'require_district_id'").fetchone()
        self.require_district_id = bool(setting) and str(setting[0]).strip().lower() in ("on", "1", "true", "yes")

    def mapper(self):
        mapping, reference, require = self.mapping, self.reference, self.require_district_id

        def map_chunk(chunk: list[SourceRecord | Problem]) -> list[tuple[MappedRecord | Problem, str | None]]:
            out: list[tuple[MappedRecord | Problem, str | None]] = []
            for item in chunk:
                if isinstance(item, Problem):
                    out.append((item, None))
                    continue
                mapped = map_record(mapping, item, reference=reference, require_district_id=require)
                out.append((mapped, fingerprint(mapped.fields) if mapped.ok else None))
            return out

        return map_chunk

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

    # -- one chunk -------------------------------------------------------------------------
    def _lookup(self, conn, records: list[MappedRecord]) -> dict[str, dict[Any, dict[str, Any]]]:
        """The stored patrons the chunk names, by district ID, barcode and username."""
        found: dict[str, dict[Any, dict[str, Any]]] = {}
        by_id: dict[int, dict[str, Any]] = {}
        cur = conn.cursor()
        cur.row_factory = None  # plain tuples: sqlite3.Row -> dict costs more than the query
        for fld in UNIQUE_FIELDS:
            values = {str(v) for r in records if (v := r.fields.get(fld))}
            found[fld] = {}
            if not values:
                continue
            col = _COLS.index(fld)
            for row in cur.execute(
                f"SELECT {_SELECT} FROM patrons WHERE {fld} IS NOT NULL"  # lets the partial index serve
                f" AND {fld} IN (SELECT value FROM json_each(?))",
                (json.dumps(list(values)),),
            ):
                patron = by_id.get(row[0])
                if patron is None:
                    patron = by_id[row[0]] = dict(zip(_COLS, row))
                found[fld][row[col]] = patron
        return found

    def apply(self, writer, chunk: list[tuple[MappedRecord | Problem, str | None]]) -> None:
        ctx = self.ctx
        good: list[tuple[MappedRecord, str]] = []
        for item, fp in chunk:
            self.counts["read"] += 1
            if isinstance(item, Problem):
                self.skip(item.code, item.line, item.message, item.barcode)
            elif not item.ok:
                first = item.problems[0]
                text = first.message
                if len(item.problems) > 1:
                    text += "; also: " + "; ".join(p.message.split(": ", 1)[-1] for p in item.problems[1:])
                self.skip(first.code, item.line, text, first.barcode or item.fields.get("barcode"))
            else:
                good.append((item, fp))
        if not good:
            return
        stored = self._lookup(writer.conn, [r for r, _ in good])
        adds: list[dict[str, Any]] = []
        updates: list[tuple[int, dict[str, Any]]] = []
        stamps: list[tuple[int, dict[str, Any]]] = []
        infos: list[tuple[str, int, Any, int | None]] = []
        conflicts: list[dict[str, Any]] = []
        match = self.mapping.match
        other = "barcode" if match == "district_id" else "district_id"
        for rec, fp in good:
            f = rec.fields
            line = rec.line
            barcode = f.get("barcode") or None
            key_field = match if f.get(match) else other if f.get(other) else None
            if key_field is None:
                self.skip("missing_key", line, f"line {line}: no {match.replace('_', ' ')} and no "
                          f"{other.replace('_', ' ')} to match the record on", barcode)
                continue
            key = str(f[key_field])
            first = self.claimed[key_field].get(key)
            if first is not None:
                self.skip("duplicate_in_file", line,
                          f"line {line}: {key_field.replace('_', ' ')} {key} appears again; line {first[0]} "
                          f"has it first and wins", barcode)
                continue
            existing = stored[key_field].get(key)
            if existing is not None and existing["id"] in self.seen_ids:
                self.skip("duplicate_in_file", line,
                          f"line {line}: the record is for the same patron as line {self.seen_ids[existing['id']]} "
                          f"({_who(existing)}), which wins", barcode, existing["id"])
                continue
            target = existing["id"] if existing is not None else -line
            conflict = self._conflict(rec, stored, existing, target)
            if conflict is not None:
                fld, value, holder_id = conflict
                conflicts.append({
                    "run_id": self.ctx.run_id, "line": line, "field": fld, "value": value,
                    "holder_id": holder_id, "target_id": existing["id"] if existing is not None else None,
                    "incoming": json.dumps({"fields": self._site_silently(dict(f), existing), "fingerprint": fp,
                                            "protect": sorted(self.protect), "mode": self.mode},
                                           ensure_ascii=False, default=str),
                })
                continue
            # the record is accepted: claim its keys
            for fld in UNIQUE_FIELDS:
                if f.get(fld):
                    self.claimed[fld].setdefault(str(f[fld]), (line, target))
            if existing is not None:
                self.seen_ids[existing["id"]] = line
            values = dict(f)
            site = values.get("site")
            if site and site not in self.sites or (existing is None and not site):
                if self.union is not None:
                    self.warn("union_site", line,
                              f"line {line}: site {site!r} is not a site of the district; "
                              f"{_name(f)} goes to the Union Site ({self.union})" if site else
                              f"line {line}: no site; {_name(f)} goes to the Union Site ({self.union})",
                              barcode)
                    values["site"] = self.union
            elif not site:
                values.pop("site", None)
            if existing is None:
                row = {**_ADD_DEFAULTS}
                for k, v in values.items():
                    row[k] = (v or None) if k in _NULLABLE and k in UNIQUE_FIELDS else v
                row.update(created_at=self.now, updated_at=self.now, last_seen_import_at=self.now,
                           import_fingerprint=fp)
                adds.append(row)
                self.counts["added"] += 1
                if not self.errors_only:
                    infos.append((f"line {line}: added {_name(f)}", line, barcode, None))
                continue
            pid = existing["id"]
            if self.mode == "incremental" and existing["import_fingerprint"] == fp:
                stamps.append((pid, {"last_seen_import_at": self.now}))
                self.counts["unchanged"] += 1
                continue
            diff: dict[str, Any] = {}
            for k, v in values.items():
                if k in UNIQUE_FIELDS and not v:
                    continue  # a blank key never clears a stored one
                old = existing.get(k)
                if k in self.protect and old not in (None, ""):
                    continue  # protected and set: staff own it now
                if old != v:
                    diff[k] = v
            if not diff:
                change = {"last_seen_import_at": self.now}
                if existing["import_fingerprint"] != fp:
                    change["import_fingerprint"] = fp
                stamps.append((pid, change))
                self.counts["unchanged"] += 1
                continue
            diff.update(updated_at=self.now, last_seen_import_at=self.now, import_fingerprint=fp)
            updates.append((pid, diff))
            self.counts["updated"] += 1
            if not self.errors_only:
                fields = ", ".join(k for k in diff if k not in ("updated_at", "last_seen_import_at",
                                                                "import_fingerprint"))
                infos.append((f"line {line}: updated {_name(existing)}: {fields}", line,
                               barcode or existing.get("barcode"), pid))
        if updates:
            writer.update_many("patrons", updates)
        if stamps:
            writer.update_many("patrons", stamps)
        if adds:
            writer.insert_many("patrons", adds)
        for conflict in conflicts:
            writer.insert("import_conflicts", conflict)
        for text, line, barcode, pid in infos:
            code = "updated" if pid is not None else "added"
            ctx.info(text, code=code, line=line, barcode=str(barcode) if barcode else None, patron_id=pid)

    def _site_silently(self, values: dict[str, Any], existing) -> dict[str, Any]:
        site = values.get("site")
        if (site and site not in self.sites or (existing is None and not site)) and self.union is not None:
            values["site"] = self.union
        elif not site:
            values.pop("site", None)
        return values

    def _conflict(self, rec: MappedRecord, stored, existing, target: int) -> tuple[str, str, int | None] | None:
        """Skip the record when one of its unique values belongs to another patron; returns
        (field, value, holder patron id or None for a patron this file adds) then."""
        f = rec.fields
        line = rec.line
        for fld in UNIQUE_FIELDS:
            value = f.get(fld)
            if not value:
                continue
            value = str(value)
            word = fld.replace("_", " ")
            holder = stored[fld].get(value)
            if holder is not None and holder["id"] != target:
                self.skip(
                    f"{fld}_conflict", line,
                    f"line {line}: {word} {value} belongs to {_who(holder)}; the record for "
                    f"{_name(f)} (line {line}{', district ID ' + str(f['district_id']) if f.get('district_id') and fld != 'district_id' else ''}) "
                    f"was skipped and neither patron was changed",
                    f.get("barcode"), holder["id"],
                )
                return fld, value, holder["id"]
            claim = self.claimed[fld].get(value)
            if claim is not None and claim[1] != target:
                self.skip(
                    f"{fld}_conflict", line,
                    f"line {line}: {word} {value} is already taken by the record on line {claim[0]} "
                    f"of this file; the record for {_name(f)} was skipped",
                    f.get("barcode"),
                )
                return fld, value, claim[1] if claim[1] > 0 else None
        return None


__all__ = ["IMPORT_KIND", "MODES", "fingerprint", "run_import"]
