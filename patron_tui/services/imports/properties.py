"""Import properties files: how the columns of a patron CSV map to patron fields.

The file is in Java ``.properties`` syntax, the format district IT staff already edit:

- ``#`` or ``!`` as the first non-blank character starts a comment line;
- ``key=value``, ``key:value`` and ``key value`` all work; blanks around the separator go;
- a line ending in an odd number of backslashes continues on the next line (the next
  line's leading blanks are dropped);
- escapes: ``\\t \\n \\r \\f \\uXXXX``, and a backslash before any other character keeps
  that character literally (``\\=``, ``\\:``, ``\\ ``, ``\\#``, ``\\\\``).

One departure from Java, because the issue's own examples use it: a ``#`` that follows a
blank in a value starts an inline comment (``required=barcode   # the rest is a note``).
Write ``\\#`` for a literal ``#`` after a blank. Unescaped trailing blanks of a value are
dropped (an editor leaves them invisibly); write ``\\ `` to keep one. The file is read as
UTF-8 (a BOM is allowed), falling back to ISO-8859-1, the Java default, when it is not UTF-8.

Keys (see ``ImportMapping``)::

    encoding=windows-1252          # utf-8, utf-8-sig, windows-1252, mac-roman, iso-8859-1, utf-16
    delimiter=,                    # , ; tab |
    header=true                    # false: columns are named by position, 1, 2, 3 ...
    match=district_id              # or barcode
    date_format=%m/%d/%Y           # strptime pattern, or auto
    field.<patron field>=<CSV column>
    default.<patron field>=<value> # where the column is absent or blank
    map.<patron field>.<incoming>=<stored>
    required=barcode,last_name,site
    custom.<name>={First Name} {Last Name}   # ISEMPTY(a,b,c): if a is empty then b else c
    protect=email,homeroom

``custom.<name>`` sets the patron field ``<name>`` when it is one; any other name is a
computed column that a ``field.<patron field>=<name>`` line must use (else it is a typo).

Every problem found is reported at once as ``path:line: message`` in one ``PropertiesError``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, field_validator

# Patron columns an import may set (the `patrons` table minus internal bookkeeping).
PATRON_FIELDS: tuple[str, ...] = (
    "barcode", "district_id", "site", "last_name", "first_name", "middle_name", "nickname",
    "patron_type", "access_level", "persona", "grade", "graduation_year", "homeroom",
    "location2", "policy", "security_group", "status", "gender", "username", "email",
    "email2", "phone", "birthdate", "account_expires",
)
DATE_FIELDS = frozenset({"birthdate", "account_expires"})
INTEGER_FIELDS = frozenset({"graduation_year"})
MATCH_FIELDS = ("district_id", "barcode")

# name a user may write -> Python codec name; the first spelling is the one dumped
ENCODINGS: dict[str, str] = {
    "utf-8": "utf-8", "utf8": "utf-8",
    "utf-8-sig": "utf-8-sig", "utf-8-bom": "utf-8-sig",
    "windows-1252": "cp1252", "cp1252": "cp1252", "win-1252": "cp1252",
    "mac-roman": "mac_roman", "macroman": "mac_roman", "mac_roman": "mac_roman", "x-mac-roman": "mac_roman",
    "iso-8859-1": "latin-1", "iso8859-1": "latin-1", "latin-1": "latin-1", "latin1": "latin-1",
    "utf-16": "utf-16", "utf16": "utf-16", "utf-16le": "utf-16-le", "utf-16-le": "utf-16-le",
    "utf-16be": "utf-16-be", "utf-16-be": "utf-16-be",
}
# codec -> the name written back and shown in messages
ENCODING_NAMES: dict[str, str] = {
    "utf-8": "utf-8", "utf-8-sig": "utf-8-sig", "cp1252": "windows-1252", "mac_roman": "mac-roman",
    "latin-1": "iso-8859-1", "utf-16": "utf-16", "utf-16-le": "utf-16le", "utf-16-be": "utf-16be",
}
DELIMITERS: dict[str, str] = {",": ",", ";": ";", "|": "|", "\t": "\t", "tab": "\t", "comma": ",",
                              "semicolon": ";", "pipe": "|"}
SCALAR_KEYS = ("encoding", "delimiter", "header", "match", "date_format", "required", "protect", "last_modified")
PREFIX_KEYS = ("field", "default", "map", "custom")


def normalize_encoding(name: str) -> str:
    """The codec for an encoding name a user may write; ValueError names the choices."""
    codec = ENCODINGS.get(name.strip().lower().replace("_", "-"))
    if codec is None:
        raise ValueError(
            f"unknown encoding {name!r}{_did_you_mean(name.lower(), list(ENCODING_NAMES.values()))}; "
            f"use one of {', '.join(ENCODING_NAMES.values())}"
        )
    return codec


def encoding_label(codec: str) -> str:
    return ENCODING_NAMES.get(codec, codec)


def normalize_delimiter(value: str) -> str:
    d = DELIMITERS.get(value if value in DELIMITERS else value.strip().lower())
    if d is None:
        raise ValueError(f"unknown delimiter {value!r}; use one of , ; | tab")
    return d


def _did_you_mean(word: str, choices, cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------
# custom templates: text, {Column} placeholders, ISEMPTY(a,b,c)


@dataclass(frozen=True, slots=True)
class _Lit:
    text: str


@dataclass(frozen=True, slots=True)
class _Col:
    name: str


@dataclass(frozen=True, slots=True)
class _IsEmpty:
    test: tuple
    then: tuple
    other: tuple


class TemplateError(ValueError):
    pass


def parse_template(text: str) -> tuple:
    """Parse a custom template into nodes; TemplateError on unbalanced braces/parens."""
    nodes, pos = _parse_seq(text, 0, nested=False)
    if pos != len(text):  # pragma: no cover - _parse_seq consumes all at top level
        raise TemplateError(f"unexpected {text[pos]!r} at position {pos + 1}")
    return nodes


def _parse_seq(text: str, pos: int, *, nested: bool) -> tuple[tuple, int]:
    nodes: list = []
    buf: list[str] = []
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch == "{":
            end = text.find("}", pos + 1)
            brace = text.find("{", pos + 1)
            if end < 0 or (0 <= brace < end):
                raise TemplateError(f"unbalanced braces: '{{' at position {pos + 1} has no closing '}}'")
            name = text[pos + 1:end].strip()
            if not name:
                raise TemplateError(f"empty placeholder '{{}}' at position {pos + 1}")
            if buf:
                nodes.append(_Lit("".join(buf)))
                buf = []
            nodes.append(_Col(name))
            pos = end + 1
        elif ch == "}":
            raise TemplateError(f"unbalanced braces: '}}' at position {pos + 1} has no opening '{{'")
        elif text.startswith("ISEMPTY(", pos):
            start = pos
            args = []
            pos += len("ISEMPTY(")
            for i in range(3):
                arg, pos = _parse_seq(text, pos, nested=True)
                if pos >= n:
                    raise TemplateError(f"ISEMPTY( at position {start + 1} has no closing ')'")
                sep = text[pos]
                if i < 2 and sep != ",":
                    raise TemplateError(f"ISEMPTY at position {start + 1} needs 3 arguments: ISEMPTY(a,b,c)")
                if i == 2 and sep != ")":
                    raise TemplateError(f"ISEMPTY at position {start + 1} takes 3 arguments, not more")
                pos += 1
                args.append(arg)
            if buf:
                nodes.append(_Lit("".join(buf)))
                buf = []
            nodes.append(_IsEmpty(*args))
        elif nested and ch in ",)":
            break
        else:
            buf.append(ch)
            pos += 1
    if buf:
        nodes.append(_Lit("".join(buf)))
    return tuple(nodes), pos


def template_columns(nodes: tuple) -> list[str]:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, _Col):
            out.append(node.name)
        elif isinstance(node, _IsEmpty):
            out += template_columns(node.test) + template_columns(node.then) + template_columns(node.other)
    return out


def compile_template(nodes: tuple):
    """A function values-dict -> str for parsed template nodes (built once per mapping)."""
    parts = []
    for node in nodes:
        if isinstance(node, _Lit):
            parts.append(lambda v, t=node.text: t)
        elif isinstance(node, _Col):
            parts.append(lambda v, c=node.name: (v.get(c) or "").strip())
        else:
            test, then, other = (compile_template(x) for x in (node.test, node.then, node.other))
            parts.append(lambda v, a=test, b=then, c=other: b(v) if not a(v).strip() else c(v))
    if len(parts) == 1:
        return parts[0]
    return lambda v: "".join(p(v) for p in parts)


# ---------------------------------------------------------------------------
# the model


class ImportMapping(BaseModel):
    """A validated properties file. `lines` maps each key to its line in `source`."""

    model_config = ConfigDict(frozen=True)

    source: str = "<properties>"
    encoding: str = "utf-8"            # a Python codec name (normalized)
    delimiter: str = ","
    header: bool = True
    match: Literal["district_id", "barcode"] = "district_id"
    date_format: str = "auto"
    fields: dict[str, str] = {}        # patron field -> CSV column (or custom column)
    defaults: dict[str, str] = {}      # patron field -> value when absent or blank
    maps: dict[str, dict[str, str]] = {}   # patron field -> incoming -> stored
    required: tuple[str, ...] = ()
    custom: dict[str, str] = {}        # name -> template text
    protect: tuple[str, ...] = ()
    last_modified: str | None = None   # CSV column with the record's last change (Incremental)
    lines: dict[str, int] = {}

    _cache: dict = PrivateAttr(default_factory=dict)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        return normalize_encoding(v)

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str) -> str:
        return normalize_delimiter(v)

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, v: str) -> str:
        v = v.strip()
        if v.lower() == "auto":
            return "auto"
        if "%" not in v:
            raise ValueError(f"date_format {v!r} has no %-directive; write e.g. %m/%d/%Y or auto")
        return v

    @property
    def custom_columns(self) -> frozenset[str]:
        """Custom names that are computed columns rather than patron fields."""
        return frozenset(k for k in self.custom if k not in PATRON_FIELDS)

    def templates(self) -> dict[str, tuple]:
        return {k: parse_template(v) for k, v in self.custom.items()}

    def csv_columns(self) -> dict[str, str]:
        """Every CSV column the mapping reads -> the key that names it (for messages)."""
        out: dict[str, str] = {}
        computed = self.custom_columns
        for field, column in self.fields.items():
            if column not in computed:
                out.setdefault(column, f"field.{field}")
        for name, nodes in self.templates().items():
            for column in template_columns(nodes):
                out.setdefault(column, f"custom.{name}")
        if self.last_modified:
            out.setdefault(self.last_modified, "last_modified")
        return out

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else self.source

    @property
    def encoding_label(self) -> str:
        return encoding_label(self.encoding)


class PropertiesError(ValueError):
    """Every problem of a properties file, each as ``path:line: message``."""

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.source = source
        self.problems = sorted(problems, key=lambda p: p[0])
        super().__init__("\n".join(self.messages))

    @property
    def messages(self) -> list[str]:
        return [f"{self.source}:{line}: {msg}" if line else f"{self.source}: {msg}" for line, msg in self.problems]


# ---------------------------------------------------------------------------
# the Java properties syntax


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: str
    line: int


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _logical_lines(text: str):
    """(first physical line number, logical line) with continuations joined."""
    lines = text.splitlines()
    i = 0
    n = len(lines)
    while i < n:
        start = i + 1
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line) and i < n:
            line = line[:-1] + lines[i].lstrip(" \t\f")
            i += 1
        if _continues(line):  # a continuation at end of file: drop the backslash
            line = line[:-1]
        yield start, line


def _continues(line: str) -> bool:
    count = len(line) - len(line.rstrip("\\"))
    return count % 2 == 1


def _split_key(line: str) -> tuple[str, str]:
    """Raw key and raw value of a logical line (escapes still in place)."""
    i = 0
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=: \t\f":
            break
        i += 1
    key = line[:i]
    j = i
    while j < n and line[j] in " \t\f":
        j += 1
    if j < n and line[j] in "=:":
        j += 1
        while j < n and line[j] in " \t\f":
            j += 1
    return key, line[j:]


def _strip_value(raw: str) -> str:
    """Drop an inline comment (unescaped # after a blank) and unescaped trailing blanks."""
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "#" and i > 0 and raw[i - 1] in " \t\f":
            raw = raw[:i]
            break
        i += 1
    stripped = raw.rstrip(" \t\f")
    if stripped != raw and _continues(stripped):  # "\ " at the end: keep the escaped blank
        stripped += raw[len(stripped)]
    return stripped


def unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            break
        nxt = raw[i + 1]
        if nxt == "u":
            digits = raw[i + 2:i + 6]
            if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
                out.append(chr(int(digits, 16)))
                i += 6
                continue
            raise ValueError(f"malformed \\u escape {raw[i:i + 6]!r} (needs 4 hex digits)")
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def parse_entries(text: str, *, source: str = "<properties>") -> list[Entry]:
    """The key/value entries of a properties text, in order, with their line numbers."""
    entries: list[Entry] = []
    problems: list[tuple[int, str]] = []
    for line_no, line in _logical_lines(text):
        raw_key, raw_value = _split_key(line)
        try:
            entries.append(Entry(unescape(raw_key), unescape(_strip_value(raw_value)), line_no))
        except ValueError as exc:
            problems.append((line_no, str(exc)))
    if problems:
        raise PropertiesError(source, problems)
    return entries


# ---------------------------------------------------------------------------
# entries -> ImportMapping


def _all_key_shapes() -> list[str]:
    shapes = list(SCALAR_KEYS)
    for prefix in ("field", "default", "custom"):
        shapes += [f"{prefix}.{f}" for f in PATRON_FIELDS]
    return shapes


_KEY_SHAPES = _all_key_shapes()


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "yes", "1", "on"):
        return True
    if v in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"header must be true or false, not {value!r}")


def parse_properties(text: str, *, source: str = "<properties>") -> ImportMapping:
    """Parse and validate a properties text; PropertiesError lists every problem."""
    entries = parse_entries(text, source=source)
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    data: dict = {"fields": {}, "defaults": {}, "maps": {}, "custom": {}}
    lines: dict[str, int] = {}

    def bad(line: int, msg: str) -> None:
        problems.append((line, msg))

    def check_field(name: str, key: str, line: int) -> bool:
        if name in PATRON_FIELDS:
            return True
        bad(line, f"{key}: {name!r} is not a patron field{_did_you_mean(name, PATRON_FIELDS)}")
        return False

    for e in entries:
        key, value, line = e.key.strip(), e.value, e.line
        if key in seen:
            bad(line, f"duplicate key {key!r} (first set on line {seen[key]})")
            continue
        seen[key] = line
        lines[key] = line
        prefix, dot, rest = key.partition(".")
        try:
            if not dot and key in SCALAR_KEYS:
                if key == "encoding":
                    data["encoding"] = normalize_encoding(value)
                elif key == "delimiter":
                    data["delimiter"] = normalize_delimiter(value)
                elif key == "header":
                    data["header"] = _parse_bool(value)
                elif key == "match":
                    v = value.strip()
                    if v not in MATCH_FIELDS:
                        raise ValueError(f"match must be district_id or barcode, not {v!r}"
                                         f"{_did_you_mean(v, MATCH_FIELDS)}")
                    data["match"] = v
                elif key == "date_format":
                    data["date_format"] = ImportMapping._date_format(value)
                elif key == "last_modified":
                    if not value.strip():
                        raise ValueError("last_modified names the CSV column holding each record's last change")
                    data["last_modified"] = value.strip()
                elif key in ("required", "protect"):
                    names = _split_list(value)
                    for name in names:
                        check_field(name, key, line)
                    data[key] = names
            elif dot and prefix in ("field", "default", "custom") and rest:
                if prefix == "custom":
                    try:
                        parse_template(value)
                    except TemplateError as exc:
                        raise ValueError(f"{key}: {exc}") from None
                    data["custom"][rest] = value
                elif check_field(rest, key, line):
                    if prefix == "field":
                        if not value.strip():
                            raise ValueError(f"{key} names no column")
                        data["fields"][rest] = value.strip()
                    else:
                        data["defaults"][rest] = value.strip()
            elif dot and prefix == "map" and "." in rest:
                field, _, incoming = rest.partition(".")
                if check_field(field, key, line):
                    data["maps"].setdefault(field, {})[incoming.strip()] = value.strip()
            else:
                if dot and prefix in PREFIX_KEYS:
                    hint = ("map.<field>.<incoming value>" if prefix == "map" else f"{prefix}.<patron field>")
                    bad(line, f"incomplete key {key!r}; write {hint}")
                else:
                    guess = key
                    if dot and rest:  # feild.barcode -> field.barcode
                        close = difflib.get_close_matches(prefix, PREFIX_KEYS, n=1, cutoff=0.6)
                        if close:
                            guess = f"{close[0]}.{rest}"
                            if close[0] != "map" and rest not in PATRON_FIELDS:
                                near = difflib.get_close_matches(rest, PATRON_FIELDS, n=1)
                                guess = f"{close[0]}.{near[0]}" if near else guess
                            bad(line, f"unknown key {key!r} (did you mean {guess!r}?)")
                            continue
                    bad(line, f"unknown key {key!r}{_did_you_mean(key, _KEY_SHAPES)}")
        except ValueError as exc:
            bad(line, str(exc))

    # cross-key checks
    fields, defaults, custom = data["fields"], data["defaults"], data["custom"]
    computed = {k for k in custom if k not in PATRON_FIELDS}
    used = set(fields.values())
    for name in sorted(computed - used):
        bad(lines[f"custom.{name}"],
            f"custom.{name}: {name!r} is not a patron field{_did_you_mean(name, PATRON_FIELDS)} "
            f"and no field.<patron field>={name} line uses it")
    for name in sorted(set(custom) & set(fields)):
        bad(lines[f"custom.{name}"], f"custom.{name}: {name!r} is also set by field.{name} (line {lines[f'field.{name}']}); keep one")
    set_by = set(fields) | set(defaults) | (set(custom) & set(PATRON_FIELDS))
    match = data.get("match", "district_id")
    if match not in set(fields) | (set(custom) & set(PATRON_FIELDS)):
        bad(lines.get("match", 0), f"match={match} but no field.{match} (or custom.{match}) line maps it")
    for name in data.get("required", ()):
        if name in PATRON_FIELDS and name not in set_by:
            bad(lines["required"], f"required field {name!r} is not mapped (no field.{name}) and has no default.{name}")
    for field in data["maps"]:
        if field not in set_by:
            line = min(v for k, v in lines.items() if k.startswith(f"map.{field}."))
            bad(line, f"map.{field}.*: {field!r} is not mapped (no field.{field})")
    if not fields and not custom and not problems:
        bad(0, "maps no columns: add field.<patron field>=<CSV column> lines")
    if data.get("header") is False:
        for field, column in fields.items():
            if column not in computed and not (column.isdigit() and int(column) >= 1):
                bad(lines[f"field.{field}"],
                    f"field.{field}: with header=false, columns are numbered from 1, not {column!r}")
    if problems:
        raise PropertiesError(source, problems)
    return ImportMapping(source=source, lines=lines, **data)


def load_properties(path: str | Path) -> ImportMapping:
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return parse_properties(text, source=str(path))


# ---------------------------------------------------------------------------
# writing


def _escape(text: str, *, key: bool) -> str:
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[ch])
        elif ch in "=:" and key:
            out.append("\\" + ch)
        elif ch == " " and (key or i == 0 or i == len(text) - 1):
            out.append("\\ ")
        elif ch in "#!" and (i == 0 or ch == "#"):
            out.append("\\" + ch)
        elif ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def dump_properties(mapping: ImportMapping) -> str:
    """The mapping as properties text (UTF-8); parse_properties(dump(m)) == m, lines aside."""
    delim = "tab" if mapping.delimiter == "\t" else mapping.delimiter
    out = [
        "# patron import properties (patron-tui)",
        f"encoding={mapping.encoding_label}",
        f"delimiter={delim}",
        f"header={'true' if mapping.header else 'false'}",
        f"match={mapping.match}",
        f"date_format={_escape(mapping.date_format, key=False)}",
    ]

    def kv(key: str, value: str) -> str:
        return f"{_escape(key, key=True)}={_escape(value, key=False)}"

    out += [kv(f"field.{k}", v) for k, v in mapping.fields.items()]
    out += [kv(f"default.{k}", v) for k, v in mapping.defaults.items()]
    for field, table in mapping.maps.items():
        out += [kv(f"map.{field}.{k}", v) for k, v in table.items()]
    if mapping.required:
        out.append(f"required={','.join(mapping.required)}")
    out += [kv(f"custom.{k}", v) for k, v in mapping.custom.items()]
    if mapping.protect:
        out.append(f"protect={','.join(mapping.protect)}")
    if mapping.last_modified:
        out.append(kv("last_modified", mapping.last_modified))
    return "\n".join(out) + "\n"


__all__ = [
    "DATE_FIELDS", "ENCODINGS", "INTEGER_FIELDS", "ImportMapping", "PATRON_FIELDS", "PropertiesError",
    "compile_template", "dump_properties", "encoding_label", "load_properties", "normalize_delimiter",
    "normalize_encoding", "parse_entries", "parse_properties", "parse_template", "template_columns",
]
