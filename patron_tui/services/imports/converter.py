"""The Import Converter: look at a patron CSV file and write a properties file for it.

Textual-free; the converter screen and `patron-tui convert` call these functions.

- `sniff(path)` reads a bounded sample and works out the encoding (BOM, strict UTF-8,
  then Windows-1252 / Mac Roman / ISO-8859-1 by plausibility), the delimiter, whether
  the first row is a header, the line ending and up to twenty sample rows.
- `guess_mapping(header)` matches column names against the names the usual exports use
  (OneRoster `users.csv`, Clever, PowerSchool, Koha borrowers, plain names such as
  "Last Name") and recognises which export it is. A patron field gets one column at most.
- `build_properties_text(sniffed, guess)` writes the properties file text (ASCII only,
  escaped by the Java `.properties` rules).
- `preview(path, sniffed, fields)` maps the first data rows with basic checks.

Everything here is deterministic: no statistics libraries, the same bytes give the same guess.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

__all__ = [
    "DATE_FIELDS",
    "DELIMITER_NAMES",
    "PATRON_FIELDS",
    "Guess",
    "PreviewRow",
    "Sniffed",
    "build_properties_text",
    "column_values",
    "escape_properties",
    "guess_date_format",
    "guess_mapping",
    "normalise_name",
    "preview",
    "sniff",
]

#: The `patrons` columns an import may fill, in the order the properties file lists them.
PATRON_FIELDS: tuple[str, ...] = (
    "district_id", "barcode", "site", "last_name", "first_name", "middle_name", "nickname",
    "patron_type", "access_level", "persona", "grade", "graduation_year", "homeroom",
    "location2", "policy", "security_group", "status", "gender", "username", "email",
    "email2", "phone", "birthdate", "account_expires",
)
DATE_FIELDS: tuple[str, ...] = ("birthdate", "account_expires")
DEFAULT_REQUIRED: tuple[str, ...] = ("barcode", "last_name", "site")
#: delimiter character -> how the properties file spells it
DELIMITER_NAMES: dict[str, str] = {",": ",", ";": ";", "\t": "tab", "|": "|"}
SAMPLE_ROWS = 20


# --------------------------------------------------------------------------- sniffing


@dataclass(frozen=True)
class Sniffed:
    """What `sniff` found out about a CSV file from a bounded sample."""

    path: Path
    encoding: str                 # a name the properties file accepts (utf-8, windows-1252, ...)
    encoding_confidence: float    # 0..1
    encoding_reason: str
    bom: str | None               # "utf-8", "utf-16-le", "utf-16-be" or None
    delimiter: str                # the character: ",", ";", "\t" or "|"
    delimiter_reason: str
    has_header: bool
    header: list[str]             # the header row, or "1", "2", ... when there is none
    sample_rows: list[list[str]]  # up to twenty data rows
    line_ending: str              # "\r\n", "\n" or "\r"
    truncated: bool = False       # the sample did not reach the end of the file

    @property
    def delimiter_name(self) -> str:
        return DELIMITER_NAMES.get(self.delimiter, self.delimiter)


_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
)

# Accented letters that real names use; a decoding that yields them is plausible.
_COMMON_LETTERS = frozenset(
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœ"
    "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŒ"
)
_COMMON_PUNCT = frozenset("’‘“”–—…«»°·´\u00a0¡¿©®")


def _plausibility(text: str) -> int:
    """Score a decoding by its non-ASCII characters: letters names use score up,
    control characters and stray symbols score down, and an uppercase letter right after
    a lowercase one ("JosŽ") is suspicious."""
    score = 0
    for i, ch in enumerate(text):
        if ch < "\x80":
            continue
        prev = text[i - 1] if i else " "
        cat = unicodedata.category(ch)
        if cat[0] == "C":
            score -= 5
        elif ch in _COMMON_LETTERS:
            score += 2
            if ch.isupper() and prev.islower():
                score -= 3
        elif ch in _COMMON_PUNCT:
            score += 1
        elif cat[0] == "L":
            if ch.isupper() and prev.islower():
                score -= 2
        else:
            score -= 2
    return score


def _detect_encoding(raw: bytes, at_eof: bool) -> tuple[str, float, str, str | None]:
    """(encoding, confidence, reason, bom) for a sample of bytes."""
    for bom_bytes, encoding, bom in _BOMS:
        if raw.startswith(bom_bytes):
            return encoding, 1.0, f"byte-order mark ({bom})", bom
    if raw:
        nuls = raw.count(b"\x00")
        if nuls > len(raw) // 4:
            odd = raw[1::2].count(b"\x00")
            encoding = "utf-16-le" if odd > nuls - odd else "utf-16-be"
            return encoding, 0.6, "many NUL bytes and no byte-order mark: UTF-16 without a BOM", None
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(raw, final=at_eof)
    except UnicodeDecodeError:
        pass
    else:
        if all(b < 0x80 for b in raw):
            return "utf-8", 0.8, "only ASCII in the sample (every encoding reads it alike)", None
        return "utf-8", 0.99, "the sample decodes as strict UTF-8", None

    has_c1 = any(0x80 <= b <= 0x9F for b in raw)
    scores: dict[str, int] = {}
    for encoding in ("windows-1252", "iso-8859-1", "mac-roman"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "iso-8859-1" and has_c1 and "windows-1252" in scores:
            continue  # C1 control characters in names: Windows-1252 reads those bytes
        scores[encoding] = _plausibility(text)
    # dict order is the tie-break: Windows-1252 is what school exports usually are
    ranked = sorted(scores, key=lambda e: -scores[e])
    best = ranked[0]
    second = scores[ranked[1]] if len(ranked) > 1 else None
    if best == "windows-1252" and not has_c1:
        reason = "not UTF-8; no bytes 0x80-0x9F, so Windows-1252 and ISO-8859-1 read it alike"
    else:
        reason = "not UTF-8; " + ", ".join(f"{e} scores {scores[e]}" for e in ranked)
    if second is None:
        confidence = 0.9
    else:
        margin = scores[best] - second
        confidence = round(min(0.95, 0.5 + 0.5 * margin / (abs(scores[best]) + abs(second) + 1)), 2)
    return best, confidence, reason, None


def _line_ending(text: str) -> str:
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    cr = text.count("\r") - crlf
    best = max((crlf, "\r\n"), (lf, "\n"), (cr, "\r"), key=lambda t: t[0])
    return best[1] if best[0] else "\n"


def _rows(text: str, delimiter: str) -> list[list[str]]:
    return [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
            if any(c.strip() for c in r)]


def _consistency(rows: list[list[str]]) -> tuple[float, int]:
    """(share of rows with the most common field count, that count)."""
    if not rows:
        return 0.0, 0
    counts = Counter(len(r) for r in rows[:200])
    mode, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if mode < 2:
        return 0.0, mode
    return n / sum(counts.values()), mode


def _detect_delimiter(text: str) -> tuple[str, str]:
    scored = {d: _consistency(_rows(text, d)) for d in DELIMITER_NAMES}
    best = max(scored, key=lambda d: scored[d])  # first of equals: , ; tab |
    try:
        sniffed = csv.Sniffer().sniff(text[:20000], delimiters="".join(DELIMITER_NAMES)).delimiter
    except csv.Error:
        sniffed = None
    if sniffed in scored and scored[sniffed][1] > 1 and scored[sniffed][0] >= scored[best][0]:
        best = sniffed
        how = "csv.Sniffer"
    else:
        how = "field-count consistency"
    share, count = scored[best]
    if count < 2:
        return ",", "one column only: assuming a comma"
    return best, f"{how}: {share:.0%} of sample rows have {count} fields"


_NUMERIC = re.compile(r"^[\d\s./:+-]+$")


def _looks_like_data(cell: str) -> bool:
    cell = cell.strip()
    return bool(cell) and (bool(_NUMERIC.match(cell)) or "@" in cell)


def _detect_header(rows: list[list[str]]) -> bool:
    if not rows:
        return False
    first = rows[0]
    cells = [c.strip() for c in first]
    if sum(1 for c in cells if _match_generic(normalise_name(c))) >= 2:
        return True
    if any(_looks_like_data(c) for c in cells) or not all(cells):
        return False
    if len(set(cells)) != len(cells):
        return False
    # a column whose data rows look like data (numbers, dates, emails) but whose first row
    # does not is a header column
    for i in range(len(first)):
        data = [r[i] for r in rows[1:21] if i < len(r) and r[i].strip()]
        if data and sum(_looks_like_data(v) for v in data) >= len(data) / 2:
            return True
    return len(rows) == 1 or all(not any(ch.isdigit() for ch in c) for c in cells)


def _is_utf16(encoding: str) -> bool:
    """Is `encoding` (any alias codecs knows: utf16, UTF_16_BE, u16...) a UTF-16 codec?"""
    try:
        return codecs.lookup(encoding).name.startswith("utf-16")
    except LookupError:
        return False   # an unknown name: sniff says so below


def sniff(path: str | Path, *, sample_bytes: int = 65536, encoding: str | None = None) -> Sniffed:
    """Look at the first `sample_bytes` of a CSV file: encoding, delimiter, header, sample rows.

    With `encoding` (the operator's choice) the sample is read in that encoding
    instead of the detected one.
    """
    from patron_tui.services.imports.sourcefile import check_head, open_source

    path = Path(path)
    f, _identity = open_source(path)   # SourceFileError: a directory, a FIFO, a link loop, ...
    with f:
        raw = f.read(sample_bytes + 1)
    at_eof = len(raw) <= sample_bytes
    raw = raw[:sample_bytes]
    bom_len = next((len(b) for b, _, _ in _BOMS if raw.startswith(b)), 0)
    # a sparse or unfinished file (NULs from byte 0): a sentence, not a guess of UTF-16; one
    # NUL may begin UTF-16-BE text, so two are needed unless a one-byte encoding was chosen
    one_byte = encoding is not None and not _is_utf16(encoding)
    check_head(str(path), raw[bom_len:], 1 if one_byte else 2)
    if encoding is None:
        encoding, confidence, reason, bom = _detect_encoding(raw, at_eof)
    else:
        codecs.lookup(encoding)  # LookupError names an unknown encoding
        confidence, reason, bom = 1.0, "chosen by the operator", None
    text = codecs.getincrementaldecoder(encoding)("replace").decode(raw, final=at_eof)
    if not at_eof:  # drop the partial last line
        cut = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: cut + 1] if cut >= 0 else text
    delimiter, delimiter_reason = _detect_delimiter(text)
    rows = _rows(text, delimiter)
    has_header = _detect_header(rows)
    if has_header:
        header = [c.strip() for c in rows[0]]
        data = rows[1:]
    else:
        width = max((len(r) for r in rows[:50]), default=0)
        header = [str(i + 1) for i in range(width)]  # properties: columns by position
        data = rows
    return Sniffed(
        path=path, encoding=encoding, encoding_confidence=confidence, encoding_reason=reason,
        bom=bom, delimiter=delimiter, delimiter_reason=delimiter_reason, has_header=has_header,
        header=header, sample_rows=data[:SAMPLE_ROWS], line_ending=_line_ending(text),
        truncated=not at_eof,
    )


def column_values(sniffed: Sniffed, column: str) -> list[str]:
    """The sample rows' values of one column (blank ones left out)."""
    try:
        i = sniffed.header.index(column)
    except ValueError:
        return []
    return [r[i].strip() for r in sniffed.sample_rows if i < len(r) and r[i].strip()]


# --------------------------------------------------------------------------- guessing


def normalise_name(name: str) -> str:
    """`Last Name`, `last_name`, `LastName`, `LAST-NAME` -> `lastname`; `Student #` -> `studentnumber`."""
    name = unicodedata.normalize("NFKC", name).replace("\ufeff", "").casefold()
    name = name.replace("#", " number ").replace("no.", "number")
    return re.sub(r"[\W_]+", "", name)


# Plain names, per field, best first (already normalised).
_GENERIC: dict[str, tuple[str, ...]] = {
    "barcode": ("barcode", "patronbarcode", "librarybarcode", "studentbarcode", "staffbarcode",
                "cardnumber", "librarycard", "librarycardnumber", "cardno", "card"),
    "district_id": ("districtid", "studentid", "employeeid", "staffid", "teacherid", "sisid",
                    "studentnumber", "employeenumber", "staffnumber", "localid", "personid",
                    "patronid", "id"),
    "site": ("site", "sitecode", "school", "schoolcode", "schoolid", "schoolnumber", "building",
             "campus", "branch", "branchcode"),
    "last_name": ("lastname", "surname", "familyname", "lname", "last"),
    "first_name": ("firstname", "givenname", "fname", "first", "forename"),
    "middle_name": ("middlename", "middle", "middleinitial", "mname"),
    "nickname": ("nickname", "preferredname", "preferredfirstname", "knownas", "othernames"),
    "patron_type": ("patrontype", "type", "usertype", "patroncategory", "category",
                    "categorycode"),
    "access_level": ("accesslevel",),
    "persona": ("persona",),
    "grade": ("grade", "gradelevel", "grades", "currentgrade", "yearlevel"),
    "graduation_year": ("graduationyear", "gradyear", "classof", "yearofgraduation",
                        "expectedgraduationyear"),
    "homeroom": ("homeroom", "location", "room", "classroom", "advisory"),
    "location2": ("location2", "2ndlocation", "secondlocation", "secondarylocation"),
    "policy": ("policy", "circulationpolicy"),
    "security_group": ("securitygroup",),
    "status": ("status", "patronstatus"),
    "gender": ("gender", "sex"),
    "username": ("username", "userid", "login", "loginid", "loginname", "webid", "networkid",
                 "samaccountname"),
    "email": ("email", "emailaddress", "mail", "primaryemail"),
    "email2": ("email2", "secondaryemail", "alternateemail", "emailpro"),
    "phone": ("phone", "phonenumber", "homephone", "telephone", "tel", "mobile", "cellphone"),
    "birthdate": ("birthdate", "dateofbirth", "dob", "birthday", "bdate"),
    "account_expires": ("accountexpires", "expirationdate", "expires", "expirydate",
                        "dateexpiry", "expiry"),
}
_PREFIXES = ("student", "staff", "employee", "teacher", "patron", "user", "borrower")


def _match_generic(norm: str) -> list[tuple[int, str]]:
    """(score, field) candidates for a normalised column name from the plain-name table."""
    found: list[tuple[int, str]] = []
    for fld, aliases in _GENERIC.items():
        if norm in aliases:
            found.append((100 - aliases.index(norm), fld))
    if not found:
        for prefix in _PREFIXES:
            rest = norm.removeprefix(prefix)
            if rest != norm and rest:
                for fld, aliases in _GENERIC.items():
                    if rest in aliases:
                        found.append((60 - aliases.index(rest), fld))
    return found


@dataclass(frozen=True)
class _Format:
    name: str
    title: str
    markers: dict[str, int]              # normalised column -> weight for recognising
    fields: dict[str, tuple[str, ...]]   # field -> normalised columns, best first
    ignore: frozenset[str] = frozenset()  # columns never mapped for this export
    notes: tuple[tuple[str, str], ...] = ()  # (field, note shown when that field is mapped)


_FORMATS: tuple[_Format, ...] = (
    _Format(
        "oneroster", "OneRoster users.csv",
        markers={"sourcedid": 3, "givenname": 2, "familyname": 2, "orgsourcedids": 3,
                 "enableduser": 3, "datelastmodified": 2, "agentsourcedids": 3, "userids": 3,
                 "identifier": 1, "role": 1, "grades": 1, "sms": 1, "preferredfirstname": 1,
                 "usermasteridentifier": 2, "primaryorg": 2},
        fields={"district_id": ("sourcedid",), "barcode": ("identifier",),
                "first_name": ("givenname",), "last_name": ("familyname",),
                "middle_name": ("middlename",), "nickname": ("preferredfirstname",),
                "username": ("username",), "email": ("email",), "phone": ("phone",),
                "grade": ("grades",), "site": ("primaryorg", "orgsourcedids"),
                "patron_type": ("role",)},
        ignore=frozenset({"status", "enableduser", "datelastmodified", "userids", "password",
                          "agentsourcedids", "sms", "usermasteridentifier"}),
        notes=(("site", "site comes from org sourcedIds: add map.site.<sourcedId>=<site code> lines"),
               ("patron_type", "role holds student/teacher/...: add "
                               "map.patron_type.<role>=<patron type> lines"),
               ("barcode", "barcode is the identifier column (the human-readable student number)")),
    ),
    _Format(
        "clever", "Clever export",
        markers={"sisid": 3, "studentnumber": 1, "stateid": 3, "schoolid": 1,
                 "studentemail": 2, "dob": 1, "ellstatus": 3, "frlstatus": 3, "iepstatus": 3,
                 "hispaniclatino": 3, "homelanguage": 2, "contactname": 2, "studentid": 1,
                 "teacherid": 1, "teachernumber": 3, "teacheremail": 2, "unweightedgpa": 3},
        fields={"district_id": ("sisid", "studentid", "teacherid", "staffid"),
                "barcode": ("studentnumber", "teachernumber"), "site": ("schoolid",),
                "email": ("studentemail", "teacheremail", "staffemail"),
                "birthdate": ("dob",), "graduation_year": ("graduationyear",),
                "first_name": ("firstname",), "last_name": ("lastname",),
                "middle_name": ("middlename",), "grade": ("grade",), "gender": ("gender",),
                "username": ("username",)},
        ignore=frozenset({"stateid", "password", "race", "contactphone", "contactemail",
                          "contactname"}),
        notes=(("site", "School_id holds Clever school ids: add map.site.<id>=<site code> lines"),),
    ),
    _Format(
        "powerschool", "PowerSchool export",
        markers={"studentnumber": 2, "gradelevel": 3, "schoolid": 1, "homeroom": 1,
                 "studentwebid": 3, "dcid": 3, "schedyearofgraduation": 3, "enrollstatus": 3,
                 "statestudentnumber": 3, "lunchid": 3, "dob": 1, "classof": 1},
        fields={"district_id": ("studentnumber",), "site": ("schoolid",),
                "grade": ("gradelevel",), "homeroom": ("homeroom",), "birthdate": ("dob",),
                "username": ("studentwebid",),
                "graduation_year": ("schedyearofgraduation", "classof"),
                "first_name": ("firstname",), "last_name": ("lastname",),
                "middle_name": ("middlename",), "gender": ("gender",)},
        ignore=frozenset({"id", "dcid", "statestudentnumber", "enrollstatus"}),
        notes=(("site", "SchoolID holds PowerSchool school numbers: "
                        "add map.site.<number>=<site code> lines"),),
    ),
    _Format(
        "koha", "Koha borrowers",
        markers={"cardnumber": 2, "borrowernumber": 3, "surname": 1, "branchcode": 3,
                 "categorycode": 3, "dateofbirth": 1, "dateexpiry": 3, "dateenrolled": 3,
                 "userid": 1, "sort1": 2, "sort2": 2, "othernames": 2, "emailpro": 3},
        fields={"barcode": ("cardnumber",), "district_id": ("borrowernumber",),
                "last_name": ("surname",), "first_name": ("firstname",),
                "middle_name": ("middlename",), "nickname": ("othernames",),
                "site": ("branchcode",), "patron_type": ("categorycode",),
                "birthdate": ("dateofbirth",), "email": ("email",), "email2": ("emailpro",),
                "username": ("userid",), "account_expires": ("dateexpiry",),
                "gender": ("sex",), "grade": ("sort1",), "phone": ("phone", "mobile")},
        ignore=frozenset({"password", "dateenrolled", "title", "sort2"}),
        notes=(("district_id", "district_id is Koha's borrowernumber: match on it only if the "
                               "file always comes from the same Koha"),
               ("grade", "grade is taken from sort1 (a common use; check it)")),
    ),
)


@dataclass
class Guess:
    """A guessed mapping: patron field -> CSV column."""

    fields: dict[str, str]
    unmapped: list[str]
    recognised_format: str | None   # "oneroster", "clever", "powerschool", "koha", "plain" or None
    format_confidence: float = 0.0
    notes: list[str] = field(default_factory=list)


def _recognise(norms: set[str]) -> tuple[_Format | None, float]:
    scores = []
    for fmt in _FORMATS:
        score = sum(w for name, w in fmt.markers.items() if name in norms)
        scores.append((score, fmt))
    scores.sort(key=lambda t: -t[0])
    best_score, best = scores[0]
    if best_score < 5:
        return None, 0.0
    second = scores[1][0]
    total = sum(w for w in best.markers.values())
    confidence = min(0.99, 0.5 * best_score / total + 0.5 * (best_score - second) / best_score)
    return best, round(0.5 + confidence / 2, 2)


def guess_mapping(header: list[str]) -> Guess:
    """Guess which column fills which patron field from the header names alone."""
    norms = [normalise_name(h) for h in header]
    fmt, confidence = _recognise(set(norms))
    notes: list[str] = []
    candidates: list[tuple[int, int, str]] = []  # (score, column index, field)
    for i, norm in enumerate(norms):
        if not norm:
            continue
        if fmt is not None:
            if norm in fmt.ignore:
                continue
            for fld, names in fmt.fields.items():
                if norm in names:
                    candidates.append((200 - names.index(norm), i, fld))
        for score, fld in _match_generic(norm):
            candidates.append((score, i, fld))
    candidates.sort(key=lambda t: (-t[0], t[1]))
    fields: dict[str, str] = {}
    used: set[int] = set()
    losers: dict[int, str] = {}
    for _score, i, fld in candidates:
        if i in used:
            continue
        if fld in fields:
            losers.setdefault(i, fld)
            continue
        fields[fld] = header[i]
        used.add(i)
    unmapped = [h for i, h in enumerate(header) if i not in used]
    for i, fld in sorted(losers.items()):
        if i not in used:
            notes.append(f"column {header[i]!r} also looks like {fld}; kept {fields[fld]!r}")
    recognised = fmt.name if fmt else None
    if fmt is not None:
        notes[:0] = [f"recognised {fmt.title}"] + [
            n for fld, n in fmt.notes if fld in fields]
    elif len(fields) >= 3:
        recognised, confidence = "plain", round(min(0.95, 0.5 + 0.05 * len(fields)), 2)
    if "barcode" not in fields and "district_id" in fields:
        notes.append(f"no barcode column; if barcodes are the {fields['district_id']!r} values, "
                     f"add field.barcode={fields['district_id']}")
    return Guess(fields=dict(sorted(fields.items(), key=lambda kv: PATRON_FIELDS.index(kv[0]))),
                 unmapped=unmapped, recognised_format=recognised,
                 format_confidence=confidence, notes=notes)


# --------------------------------------------------------------------------- dates

_DATE_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$"), "%Y-%m-%d"),
    (re.compile(r"^\d{4}/\d{1,2}/\d{1,2}$"), "%Y/%m/%d"),
    (re.compile(r"^\d{8}$"), "%Y%m%d"),
    (re.compile(r"^(\d{1,2})/(\d{1,2})/\d{4}$"), "?/?/%Y"),
    (re.compile(r"^(\d{1,2})-(\d{1,2})-\d{4}$"), "?-?-%Y"),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.\d{4}$"), "?.?.%Y"),
)
_AUTO_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y", "%Y/%m/%d", "%m-%d-%Y", "%d.%m.%Y", "%Y%m%d")


def guess_date_format(values: list[str]) -> tuple[str, str]:
    """(strftime pattern or "auto", reason) for sample date values: a pattern only when
    every value has the same shape and day/month order is settled by a value over 12."""
    values = [v.strip() for v in values if v.strip()]
    if not values:
        return "auto", "no sample dates"
    shapes = set()
    first_big = second_big = False
    for v in values:
        for pattern, shape in _DATE_SHAPES:
            m = pattern.match(v)
            if m:
                shapes.add(shape)
                if shape.startswith("?"):
                    first_big |= int(m.group(1)) > 12
                    second_big |= int(m.group(2)) > 12
                break
        else:
            return "auto", f"sample date {v!r} has no known shape"
    if len(shapes) > 1:
        return "auto", "sample dates have mixed shapes"
    shape = shapes.pop()
    if not shape.startswith("?"):
        return shape, f"every sample date is {shape}"
    sep = shape[1]
    if first_big and second_big:
        return "auto", "sample dates disagree on day/month order"
    if second_big:
        fmt = f"%m{sep}%d{sep}%Y"
    elif first_big:
        fmt = f"%d{sep}%m{sep}%Y"
    else:
        return "auto", "day/month order is ambiguous in the sample (no value over 12)"
    return fmt, f"every sample date is {fmt}"


def _parse_date(value: str, date_format: str) -> date | None:
    formats = _AUTO_FORMATS if date_format == "auto" else (date_format,)
    for fmt in formats:
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- properties


def escape_properties(text: str, *, key: bool = False) -> str:
    """Escape by the Java `.properties` rules (as `Properties.store` does), ASCII only:
    backslash, `=`, `:`, `#`, `!`, leading and trailing spaces (every space in a key), control
    characters, and everything outside ASCII as `\\uXXXX` (UTF-16 code units)."""
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == " ":
            leading = all(c == " " for c in text[:i])
            trailing = all(c == " " for c in text[i:])
            out.append("\\ " if key or leading or trailing else " ")
        elif ch in "=:#!":
            out.append("\\" + ch)
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\f":
            out.append("\\f")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(_uescape(ch))
    return "".join(out)


def _uescape(ch: str) -> str:
    units = ch.encode("utf-16-be")
    return "".join(f"\\u{units[j] << 8 | units[j + 1]:04x}" for j in range(0, len(units), 2))


def _comment(text: str) -> str:
    """One comment line, ASCII only (`\\uXXXX` for the rest, as Java writes comments)."""
    text = " ".join(text.splitlines())
    return "# " + "".join(ch if " " <= ch <= "~" else _uescape(ch) for ch in text)


def build_properties_text(sniffed: Sniffed, guess: Guess, *, fields: dict[str, str] | None = None,
                          date_format: str | None = None, source_name: str | None = None,
                          today: date | None = None) -> str:
    """The properties file text for a sniffed CSV and a (possibly adjusted) mapping.

    `fields` overrides `guess.fields` (the operator's adjustments); `date_format` overrides
    the guess from the sample's date columns."""
    fields = dict(guess.fields if fields is None else fields)
    ordered = [(f, fields[f]) for f in PATRON_FIELDS if f in fields]
    ordered += sorted((f, c) for f, c in fields.items() if f not in PATRON_FIELDS)
    mapped_columns = set(fields.values())
    unmapped = [c for c in sniffed.header if c not in mapped_columns]
    if date_format is None:
        values = [v for f in DATE_FIELDS if f in fields for v in column_values(sniffed, fields[f])]
        date_format, date_reason = guess_date_format(values)
    else:
        date_reason = "chosen by the operator"
    today = today or date.today()
    lines = [
        _comment("Patron import properties written by the patron-tui Import Converter"),
        _comment(f"Source file: {source_name or sniffed.path.name}"),
        _comment(f"Date: {today.isoformat()}"),
    ]
    if guess.recognised_format:
        lines.append(_comment(f"Recognised format: {guess.recognised_format} "
                              f"(confidence {guess.format_confidence:.2f})"))
    lines += [
        _comment(f"Encoding: {sniffed.encoding_reason}"),
        f"encoding={sniffed.encoding}",
        f"delimiter={escape_properties(sniffed.delimiter_name)}",
        f"header={'true' if sniffed.has_header else 'false'}",
        f"match={'district_id' if 'district_id' in fields else 'barcode'}",
        _comment(f"date_format: {date_reason}"),
        f"date_format={escape_properties(date_format)}",
        "",
        _comment("field.<patron field>=<CSV column>"),
    ]
    lines += [f"field.{escape_properties(f, key=True)}={escape_properties(c)}" for f, c in ordered]
    if "patron_type" not in fields:
        lines.append(_comment("no patron type column: set one, e.g. default.patron_type=Student"))
        lines.append("#default.patron_type=Student")
    lines.append("")
    required = [f for f in DEFAULT_REQUIRED if f in fields]
    missing = [f for f in DEFAULT_REQUIRED if f not in fields]
    if missing:
        lines.append(_comment(f"not mapped, so not required: {', '.join(missing)}"))
    lines.append(f"required={','.join(required)}")
    if unmapped:
        lines.append("")
        lines.append(_comment("Columns not imported:"))
        lines += [_comment(f"  {c}") for c in unmapped]
    if guess.notes:
        lines.append("")
        lines.append(_comment("Notes:"))
        lines += [_comment(f"  {n}") for n in guess.notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- preview


@dataclass(frozen=True)
class PreviewRow:
    """One converted record: its data row number (header excluded), the physical line
    it starts on, the mapped values and the problems basic checks found."""

    row: int
    line: int
    values: dict[str, str]
    problems: list[str]


def preview(path: str | Path, sniffed: Sniffed, fields: dict[str, str], *, limit: int = 20,
            skip: int = 0, date_format: str = "auto",
            required: tuple[str, ...] | list[str] | None = None) -> list[PreviewRow]:
    """Map up to `limit` data rows (after `skip` rows) by `fields` with basic checks:
    required fields missing, dates that do not parse, column count, undecodable bytes.
    The full validation lives in the import engine."""
    required = DEFAULT_REQUIRED if required is None else tuple(required)
    index = {c: i for i, c in enumerate(sniffed.header)}
    out: list[PreviewRow] = []
    with Path(path).open(encoding=sniffed.encoding, errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=sniffed.delimiter)
        last_line = 0
        if sniffed.has_header:
            next(reader, None)
            last_line = reader.line_num
        row_no = 0
        for record in reader:
            start, last_line = last_line + 1, reader.line_num
            if not any(c.strip() for c in record):
                continue
            row_no += 1
            if row_no <= skip:
                continue
            if len(out) >= limit:
                break
            problems: list[str] = []
            if len(record) != len(sniffed.header):
                problems.append(f"{len(record)} columns, the header has {len(sniffed.header)}")
            values: dict[str, str] = {}
            for fld, column in fields.items():
                i = index.get(column)
                if i is None:
                    problems.append(f"{fld}: no column {column!r}")
                    continue
                values[fld] = record[i].strip() if i < len(record) else ""
            if any("\ufffd" in c for c in record):
                problems.append(f"bytes that are not {sniffed.encoding}")
            for fld in required:
                if fld in fields and not values.get(fld):
                    problems.append(f"{fld} is missing")
            for fld in DATE_FIELDS:
                v = values.get(fld)
                if v and _parse_date(v, date_format) is None:
                    problems.append(f"{fld} {v!r} is not a date ({date_format})")
            v = values.get("graduation_year")
            if v and not re.fullmatch(r"\d{4}", v):
                problems.append(f"graduation_year {v!r} is not a year")
            out.append(PreviewRow(row=row_no, line=start, values=values, problems=problems))
    return out


def save_properties(path: str | Path, text: str) -> Path:
    """Write a properties file atomically: a temporary file beside it, then a rename.

    The text `build_properties_text` makes is pure ASCII (non-ASCII as \\uXXXX)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
