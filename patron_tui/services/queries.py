"""The search statement language: a statement about patrons, compiled to parameterized SQL.

`compile_statement(text)` turns a statement into a `Compiled`: a SQL boolean
fragment over the table `patrons` (no alias) and the tuple of its parameters.
Every value the operator types travels as a `?` parameter; every identifier in
the SQL comes from the field table (`FIELDS`), never from the statement's text.
The caller adds `is_system = 0`. The tokenizer keeps positions, a
recursive-descent parser builds a small tree, and the compiler pushes `not`
down to the comparisons so that each one can say how it treats a missing value.
`language_help()` is the part below, for the operator, with the field table.

Search statements
=================

A search statement says which patrons to select, for example

    status = Active and updated < -365d
    grade in (11, 12) and site = HS
    last ~ "o'br*" or (balance > $5 and not has_picture)
    grad_year between 2020 and 2022
    note = Alert and age >= 18

Grammar (keywords and field names are case-insensitive)
--------------------------------------------------------

    statement  := [ or ]
    or         := and { "or" and }
    and        := not { "and" not }
    not        := "not" not | "(" or ")" | comparison
    comparison := field ( "=" | "!=" | "<" | "<=" | ">" | ">=" ) value
                | field ( "~" | "!~" ) value              wildcard match
                | field [ "not" ] "in" "(" value { "," value } ")"
                | field [ "not" ] "between" value "and" value   (both ends included)
                | field "is" [ "not" ] "empty"
                | field                                  a yes/no field alone: it is yes

`not` binds tighter than `and`, and `and` tighter than `or`; use parentheses
to say otherwise. `<>` and `==` are accepted for `!=` and `=`.

Values
------

- quoted strings, in "double" or 'single' quotes; a doubled quote inside
  ('O''Brien') or a backslash (\\" \\' \\\\) stands for the character itself;
- bare words: anything up to a space, a parenthesis, a comma or an operator
  (`Active`, `O'Brien`, `Room-101`, `smi*`); a bare word that is also a field
  name is a value when it stands where a value goes. Put values with spaces
  in quotes: `homeroom = "Room 101"`;
- numbers: `12`, `-3`, `2.5`;
- money: `$5`, `5`, `5.00`, `-$2.50` (dollars and cents);
- dates: `2024-01-31`, `1/31/2024` (MM/DD/YYYY), `today`, `yesterday`,
  `tomorrow`, relative to today `-30d`, `+2w`, `-6m`, `-1y` (days, weeks,
  months, years; the sign is required), `start of school year`, `start of
  last school year`, `start of next school year`, `end of school year`,
  `start of year`, `end of year`, `start of month`. The school year starts on
  the 1st of the month in the setting `statistical_year_start_month` (August
  unless the district changed it). A statement keeps its meaning: a saved
  `updated < -365d` means "a year before the day it runs";
- years (graduation year): a number, `this year`, `last year`, `next year`,
  or any date (its year counts): `grad_year >= -2y`;
- yes/no: `yes`, `no`, `true`, `false`, `y`, `n`, `on`, `off`, `1`, `0`.

Matching
--------

- `=`, `!=`, `in`, `<` ... on text ignore the case of the letters A-Z
  (SQLite's NOCASE): `status = active` finds "Active"; accented letters must
  match exactly ("É" is not "é"). Text orders by character code.
- `~` matches a whole value against a pattern, ignoring A-Z case: `*` stands
  for any run of characters (also none), `?` for exactly one character;
  `last ~ "o'br*"` finds O'Brien and O'Bryan, `email ~ "*@example.com"`.
  Every other character is itself: `%` and `_` are not wildcards. A
  backslash makes `*` or `?` itself: `note_text ~ "*why\\?"`.
- `= ""`, `in ("", ...)` and `~ ""` ask for an empty value, as `is empty` does.
- A value that is not there (no birthdate, no graduation year, no barcode)
  makes every comparison with it false, and `not` makes it true: patrons
  with no birthdate are in `not (age >= 18)` and in `age != 30` but in
  neither `age >= 18` nor `age < 18`. `a != b` always means `not (a = b)`.
- Dates compare by day. Timestamps (created, updated, last_seen,
  inactive_since) are stored in UTC: their day is the UTC day.
- `age` is whole years since the birthdate (someone born on 29 February
  turns a year older on 1 March in other years).
- `grade` orders by the grade table: `grade >= 9`, `grade between K and 5`.
- Coded fields (site, status, grade, patron_type, access_level, persona,
  policy, security_group, medium, note) must name a code the district has:
  `status = Actve` is an error that suggests "Active" rather than a search
  that quietly finds nobody.
- `note = Alert` means "has a note of type Alert" (types: Contact, General,
  Alert, Category), `note != Alert` "has no Alert note", `note is empty`
  "has no notes"; `note_text ~ "*peanut*"` looks in the notes' text;
  `medium = BR` "has a Braille profile".
- Counts (charges, checkouts, overdue, holds) and balance are 0 when the
  patron has none; `checkouts is empty` means none.

Errors
------

A statement that does not make sense is refused with the place of the trouble
and, when something close exists, a suggestion:

    grde = 5
    ^^^^
    unknown field "grde" — did you mean grade?
"""

from __future__ import annotations

import calendar
import difflib
import math
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

__all__ = [
    "Compiled",
    "FIELDS",
    "FieldSpec",
    "StatementError",
    "compile_statement",
    "complete",
    "field_names",
    "language_help",
]


# ============================================================================================
# public types
# ============================================================================================


class StatementError(ValueError):
    """A statement that does not compile: where, how long, what is wrong, and a suggestion."""

    def __init__(
        self, statement: str, position: int, length: int, message: str, suggestion: str | None = None
    ) -> None:
        super().__init__(message)
        self.statement = statement
        self.position = max(0, position)
        self.length = max(1, length)
        self.message = message
        self.suggestion = suggestion

    def caret(self) -> str:
        """The statement, a caret line under the bad token, and the message."""
        line = self.statement.replace("\n", " ").replace("\t", " ")
        return f"{line}\n{' ' * self.position}{'^' * self.length}\n{self.message}"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Compiled:
    #: the statement, normalized (single spaces between tokens)
    statement: str
    #: a SQL boolean fragment over table `patrons` (no alias); "1" for an empty statement
    where: str
    #: the values of its `?` parameters, in order
    params: tuple


@dataclass(frozen=True)
class FieldSpec:
    """A field of the statement language.

    `kind` is one of: 'text', 'code' (text drawn from a reference table),
    'number', 'year', 'money', 'date', 'bool' (yes/no), 'has' (the patron has
    a related row with this value: notes, profiles).
    """

    name: str
    aliases: tuple[str, ...]
    kind: str
    description: str


@dataclass(frozen=True)
class _Impl:
    """How a field reaches the database (never shown, never from user text)."""

    column: str | None = None  # a patrons column
    nullable: bool = False
    ref: str | None = None  # reference table holding the codes (`code` column)
    derived: str | None = None  # balance | charges | checkouts | overdue | holds | age | bool | has
    sql: str | None = None  # bool fields: the SQL of "yes"
    has_table: str | None = None  # 'has' fields: related table and column
    has_column: str | None = None
    fixed_codes: tuple[str, ...] = ()
    #: an identifier with a unique (case-sensitive) index: equality is spelled out as the
    #: value's few case variants so that index finds the patron (see `_case_variants`)
    ident: bool = False


def _f(name, aliases, kind, description, **impl) -> tuple[FieldSpec, _Impl]:
    return FieldSpec(name, tuple(aliases), kind, description), _Impl(**impl)


_NOTE_TYPES = ("Contact", "General", "Alert", "Category")

_TABLE: tuple[tuple[FieldSpec, _Impl], ...] = (
    _f("id", (), "number", "the patron's record number", column="id"),
    _f("barcode", ("bc",), "text", "patron barcode", column="barcode", nullable=True, ident=True),
    _f("district_id", ("district", "did"), "text", "district ID", column="district_id", nullable=True,
       ident=True),
    _f("last_name", ("last", "lastname", "surname"), "text", "last name", column="last_name"),
    _f("first_name", ("first", "firstname"), "text", "first name", column="first_name"),
    _f("middle_name", ("middle",), "text", "middle name", column="middle_name"),
    _f("nickname", ("nick",), "text", "nickname", column="nickname"),
    _f("site", ("school",), "code", "site code", column="site", ref="sites"),
    _f("patron_type", ("type", "ptype"), "code", "patron type", column="patron_type", ref="patron_types"),
    _f("access_level", ("access",), "code", "access level", column="access_level", ref="access_levels"),
    _f("persona", (), "code", "persona", column="persona", ref="personas"),
    _f("grade", (), "code", "grade code; orders by the grade table", column="grade", ref="grades"),
    _f("graduation_year", ("grad_year", "gradyear", "graduation"), "year", "graduation year",
       column="graduation_year", nullable=True),
    _f("homeroom", ("location", "room"), "text", "homeroom (the Location)", column="homeroom"),
    _f("location2", ("loc2", "second_location"), "text", "2nd location", column="location2"),
    _f("policy", (), "code", "circulation policy", column="policy", ref="policies"),
    _f("security_group", ("group", "secgroup"), "code", "security group", column="security_group",
       ref="security_groups"),
    _f("status", (), "code", "patron status", column="status", ref="statuses"),
    _f("gender", ("sex",), "text", "gender", column="gender"),
    _f("username", ("user", "login"), "text", "login name", column="username", nullable=True,
       ident=True),
    _f("has_password", ("password",), "bool", "a password is set", derived="bool",
       sql="coalesce(length(patrons.password_hash), 0) > 0"),
    _f("email", (), "text", "email address", column="email"),
    _f("email2", (), "text", "second email address", column="email2"),
    _f("phone", (), "text", "phone number", column="phone"),
    _f("birthdate", ("birthday", "born", "dob"), "date", "date of birth", column="birthdate", nullable=True),
    _f("account_expires", ("expires", "expiration"), "date", "account expiration date",
       column="account_expires", nullable=True),
    _f("has_picture", ("picture",), "bool", "a picture is on file", derived="bool",
       sql="coalesce(length(patrons.picture), 0) > 0"),
    _f("protected", (), "bool", "protected from imports and removal", derived="bool",
       sql="patrons.protected = 1"),
    _f("created_at", ("created",), "date", "day the record was created", column="created_at"),
    _f("updated_at", ("updated", "modified"), "date", "day the record last changed", column="updated_at"),
    _f("last_seen_import_at", ("last_seen", "last_import", "seen"), "date",
       "day an import last delivered the patron", column="last_seen_import_at", nullable=True),
    _f("inactive_since", ("inactive",), "date", "day the patron became inactive",
       column="inactive_since", nullable=True),
    # -- derived ------------------------------------------------------------------------------
    _f("age", (), "number", "whole years since the birthdate", derived="age"),
    _f("balance", ("owes", "fines"), "money", "sum of the balances of charges not forgiven",
       derived="balance"),
    _f("charges", ("open_charges",), "number", "open charges (not forgiven, balance above 0)",
       derived="charges"),
    _f("checkouts", ("loans", "out"), "number", "items checked out", derived="checkouts"),
    _f("overdue", (), "number", "checked-out items due before today", derived="overdue"),
    _f("holds", (), "number", "holds and reservations", derived="holds"),
    _f("note", ("note_type",), "has", "has a note of this type (Contact, General, Alert, Category)",
       derived="has", has_table="notes", has_column="note_type", fixed_codes=_NOTE_TYPES),
    _f("note_text", ("notes",), "has", "has a note with this text (use ~ with wildcards)",
       derived="has", has_table="notes", has_column="text"),
    _f("medium", ("media", "profile"), "has", "has a per-medium profile of this medium",
       derived="has", has_table="patron_profiles", has_column="medium", ref="media"),
)

#: canonical field name -> spec
FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec, _ in _TABLE}
_IMPL: dict[str, _Impl] = {spec.name: impl for spec, impl in _TABLE}
_BY_NAME: dict[str, str] = {}
for _spec, _impl in _TABLE:
    for _n in (_spec.name, *_spec.aliases):
        assert _n not in _BY_NAME, _n
        _BY_NAME[_n] = _spec.name

_KEYWORDS = ("and", "or", "not", "in", "between", "is", "empty")
_VALUE_WORDS = ("today", "yesterday", "tomorrow", "yes", "no")


def field_names() -> list[str]:
    """Every field name and alias, sorted (for completion)."""
    return sorted(_BY_NAME)


def complete(prefix: str) -> list[str]:
    """Field names, aliases and keywords that start with the word at the end of `prefix`."""
    m = re.search(r"[A-Za-z0-9_]+$", prefix)
    if not m:
        return []
    word = m.group(0).lower()
    pool = {*_BY_NAME, *_KEYWORDS, *_VALUE_WORDS}
    return sorted(c for c in pool if c.startswith(word))


def language_help() -> str:
    """The language reference for the help screen: this module's text and the field table."""
    text = __doc__ or ""  # None under python -OO: then the field table alone
    start = text.find("Search statements")
    lines = [text[start:].strip() if start >= 0 else "", "", "Fields", "------", ""]
    width = max(len(name) for name in FIELDS)
    for spec in FIELDS.values():
        aka = f" (also: {', '.join(spec.aliases)})" if spec.aliases else ""
        lines.append(f"  {spec.name:<{width}}  {spec.kind:<6}  {spec.description}{aka}")
    return "\n".join(lines)


# ============================================================================================
# tokens
# ============================================================================================


@dataclass
class _Token:
    kind: str  # word | string | op | ( | ) | , | eof
    text: str  # the value (escapes resolved) or the operator
    pos: int
    end: int
    raw: str  # the source slice
    #: indices into `text` of characters written with a backslash (literal in patterns)
    literal: frozenset[int] = frozenset()

    @property
    def lower(self) -> str:
        return self.text.lower() if self.kind == "word" else ""


_OPS2 = {"!=": "!=", "<>": "!=", "<=": "<=", ">=": ">=", "==": "=", "!~": "!~"}
_OPS1 = {"=": "=", "<": "<", ">": ">", "~": "~"}
_STOP = set("(),=<>~")


def _tokenize(s: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c.isspace():
            i += 1
            continue
        if c in "(),":
            tokens.append(_Token(c, c, i, i + 1, c))
            i += 1
            continue
        two = s[i:i + 2]
        if two in _OPS2:
            tokens.append(_Token("op", _OPS2[two], i, i + 2, two))
            i += 2
            continue
        if c in _OPS1:
            tokens.append(_Token("op", _OPS1[c], i, i + 1, c))
            i += 1
            continue
        if c in "\"'":
            start, quote = i, c
            buf: list[str] = []
            lit: set[int] = set()
            i += 1
            while True:
                if i >= n:
                    raise StatementError(
                        s, start, n - start, f"unterminated string — add a closing {quote}")
                ch = s[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise StatementError(
                            s, start, n - start, f"unterminated string — add a closing {quote}")
                    lit.add(len(buf))
                    buf.append(s[i + 1])
                    i += 2
                elif ch == quote:
                    if i + 1 < n and s[i + 1] == quote:  # doubled quote: the quote itself
                        buf.append(quote)
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    buf.append(ch)
                    i += 1
            tokens.append(_Token("string", "".join(buf), start, i, s[start:i], frozenset(lit)))
            continue
        # a bare word
        start = i
        buf = []
        lit = set()
        while i < n:
            ch = s[i]
            if ch == "\\" and i + 1 < n:
                lit.add(len(buf))
                buf.append(s[i + 1])
                i += 2
                continue
            if ch.isspace() or ch in _STOP or (ch == "!" and i + 1 < n and s[i + 1] in "=~"):
                break
            buf.append(ch)
            i += 1
        tokens.append(_Token("word", "".join(buf), start, i, s[start:i], frozenset(lit)))
    tokens.append(_Token("eof", "", n, n, ""))
    return tokens


def _normalize(tokens: list[_Token]) -> str:
    out: list[str] = []
    prev: _Token | None = None
    for t in tokens:
        if t.kind == "eof":
            break
        if prev is not None and not (prev.kind == "(" or t.kind in (")", ",")):
            out.append(" ")
        out.append(t.raw)
        prev = t
    return "".join(out)


# ============================================================================================
# the syntax tree and the parser
# ============================================================================================


@dataclass
class _Value:
    text: str
    pos: int
    end: int
    quoted: bool
    literal: frozenset[int] = frozenset()
    phrase: str | None = None  # a recognized multi-word value, e.g. "start of school year"


@dataclass
class _Cmp:
    field: str  # canonical name
    op: str  # = < <= > >= ~ in between empty bool
    values: list[_Value]
    pos: int  # the field token
    end: int
    op_pos: int
    op_end: int


@dataclass
class _Not:
    child: Any


@dataclass
class _Bool:
    op: str  # and | or
    children: list[Any] = field(default_factory=list)


#: multi-word values, longest first
_PHRASES: tuple[tuple[str, ...], ...] = tuple(sorted((
    ("start", "of", "school", "year"),
    ("start", "of", "last", "school", "year"),
    ("start", "of", "next", "school", "year"),
    ("end", "of", "school", "year"),
    ("start", "of", "year"),
    ("end", "of", "year"),
    ("start", "of", "month"),
    ("this", "year"),
    ("last", "year"),
    ("next", "year"),
), key=len, reverse=True))


def _quote(text: str) -> str:
    return '"' + text.replace("\n", " ") + '"'


#: how deeply parentheses and "not"s may nest (the parser recurses once per level; a
#: statement nested deeper is refused with a caret under the "(" that goes too deep)
MAX_DEPTH = 50


class _Parser:
    def __init__(self, statement: str, tokens: list[_Token]) -> None:
        self.s = statement
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    # -- helpers ------------------------------------------------------------------------------
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def peek(self, k: int = 1) -> _Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def take(self) -> _Token:
        t = self.tokens[self.i]
        if t.kind != "eof":
            self.i += 1
        return t

    def is_word(self, *words: str, t: _Token | None = None) -> bool:
        t = t or self.tok
        return t.kind == "word" and t.lower in words

    def error(self, t: _Token, message: str, suggestion: str | None = None) -> StatementError:
        return StatementError(self.s, t.pos, max(1, t.end - t.pos), message, suggestion)

    @staticmethod
    def show(t: _Token) -> str:
        if t.kind == "eof":
            return "the end"
        return _quote(t.raw)

    # -- grammar ------------------------------------------------------------------------------
    def parse(self) -> Any:
        if self.tok.kind == "eof":
            return None
        node = self.parse_or()
        t = self.tok
        if t.kind == ")":
            raise self.error(t, 'unexpected ")" — there is no "(" for it to close')
        if t.kind != "eof":
            raise self.error(t, f'expected "and" or "or" before {self.show(t)}'
                             + self._spaces_hint(t))
        return node

    def _spaces_hint(self, t: _Token) -> str:
        # `homeroom = Room 101`: the value probably had a space in it
        prev = self.tokens[self.i - 1] if self.i else None
        if prev is not None and prev.kind == "word" and t.kind == "word" and t.lower not in _BY_NAME:
            return f' (a value with spaces goes in quotes: "{prev.text} {t.text}")'
        return ""

    def parse_or(self) -> Any:
        children = [self.parse_and()]
        while self.is_word("or"):
            self.take()
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else _Bool("or", children)

    def parse_and(self) -> Any:
        children = [self.parse_not()]
        while self.is_word("and"):
            self.take()
            children.append(self.parse_not())
        return children[0] if len(children) == 1 else _Bool("and", children)

    def parse_not(self) -> Any:
        if self.depth >= MAX_DEPTH and (self.tok.kind == "(" or self.is_word("not")):
            raise self.error(self.tok, f'nested too deeply: at most {MAX_DEPTH} levels of "(" and '
                             f'"not" — take out the parentheses that do not change the meaning')
        self.depth += 1
        try:
            return self._parse_not()
        finally:
            self.depth -= 1

    def _parse_not(self) -> Any:
        if self.is_word("not"):
            self.take()
            return _Not(self.parse_not())
        t = self.tok
        if t.kind == "(":
            self.take()
            node = self.parse_or()
            if self.tok.kind == ")":
                self.take()
                return node
            if self.tok.kind == "eof":
                raise self.error(t, 'unclosed "(" — add a ")"')
            raise self.error(self.tok, f'expected "and", "or" or ")" before {self.show(self.tok)}'
                             + self._spaces_hint(self.tok))
        return self.parse_comparison()

    def parse_comparison(self) -> _Cmp:
        t = self.tok
        if t.kind != "word":
            if t.kind == "eof":
                raise self.error(t, "the statement ends too soon — expected a field name")
            raise self.error(t, f"expected a field name, got {self.show(t)}")
        name = _BY_NAME.get(t.lower)
        if name is None:
            if t.lower in _KEYWORDS:
                raise self.error(t, f"expected a field name, got {self.show(t)}")
            raise _unknown_field(self.s, t)
        self.take()
        spec = FIELDS[name]
        op_tok = self.tok
        negate = False
        if op_tok.kind == "op":
            self.take()
            op = op_tok.text
            value = self.parse_value()
            if op == "!=":
                return _Not(_Cmp(name, "=", [value], t.pos, t.end, op_tok.pos, op_tok.end))
            if op == "!~":
                return _Not(_Cmp(name, "~", [value], t.pos, t.end, op_tok.pos, op_tok.end))
            return _Cmp(name, op, [value], t.pos, t.end, op_tok.pos, op_tok.end)
        if self.is_word("not") and self.is_word("in", "between", t=self.peek()):
            self.take()
            negate = True
            op_tok = self.tok
        if self.is_word("in"):
            self.take()
            open_tok = self.tok
            if open_tok.kind != "(":
                raise self.error(open_tok, f'expected "(" after in, got {self.show(open_tok)}')
            self.take()
            values = [self.parse_value()]
            while self.tok.kind == ",":
                self.take()
                values.append(self.parse_value())
            if self.tok.kind != ")":
                if self.tok.kind == "eof":
                    raise self.error(open_tok, 'unclosed "(" — add a ")"')
                raise self.error(self.tok, f'expected "," or ")" in the list, got {self.show(self.tok)}'
                                 + self._spaces_hint(self.tok))
            close = self.take()
            node: Any = _Cmp(name, "in", values, t.pos, t.end, op_tok.pos, close.end)
            return _Not(node) if negate else node
        if self.is_word("between"):
            self.take()
            low = self.parse_value()
            if not self.is_word("and"):
                raise self.error(self.tok, f'expected "and" after {_quote(low.text)} in between, got '
                                 f"{self.show(self.tok)}")
            self.take()
            high = self.parse_value()
            node = _Cmp(name, "between", [low, high], t.pos, t.end, op_tok.pos, op_tok.end)
            return _Not(node) if negate else node
        if self.is_word("is"):
            self.take()
            if self.is_word("not"):
                self.take()
                negate = True
            if not self.is_word("empty"):
                raise self.error(self.tok, f'expected "empty" after is, got {self.show(self.tok)}',
                                 "empty")
            end = self.take()
            node = _Cmp(name, "empty", [], t.pos, t.end, op_tok.pos, end.end)
            return _Not(node) if negate else node
        if spec.kind == "bool":
            return _Cmp(name, "bool", [], t.pos, t.end, t.pos, t.end)
        raise self.error(op_tok, f"expected an operator after {t.text} (=, !=, <, <=, >, >=, ~, in, "
                         f"between, is empty), got {self.show(op_tok)}")

    def parse_value(self) -> _Value:
        t = self.tok
        if t.kind == "string":
            self.take()
            return _Value(t.text, t.pos, t.end, True, t.literal)
        if t.kind != "word" or t.lower in ("and", "or"):
            if t.kind == "eof":
                raise self.error(t, "the statement ends too soon — expected a value")
            raise self.error(t, f"expected a value, got {self.show(t)}")
        # a multi-word value?
        if not t.literal:
            for phrase in _PHRASES:
                words = [self.peek(k) for k in range(len(phrase))]
                if all(w.kind == "word" and not w.literal and w.lower == p for w, p in zip(words, phrase)):
                    self.i += len(phrase)
                    return _Value(" ".join(w.text for w in words), t.pos, words[-1].end, False,
                                  phrase=" ".join(phrase))
        self.take()
        return _Value(t.text, t.pos, t.end, False, t.literal,
                      phrase=t.lower if t.lower in ("today", "yesterday", "tomorrow") and not t.literal
                      else None)


def _unknown_field(statement: str, t: _Token) -> StatementError:
    word = t.text.lower()
    close = difflib.get_close_matches(word, list(_BY_NAME), n=1, cutoff=0.6)
    if not close:  # "lastname" vs "last_name", "grad-year" vs "grad_year"
        squashed = {re.sub(r"[^a-z0-9]", "", n): n for n in _BY_NAME}
        hit = squashed.get(re.sub(r"[^a-z0-9]", "", word))
        close = [hit] if hit else []
    suggestion = close[0] if close else None
    message = f"unknown field {_quote(t.text)}"
    message += f" — did you mean {suggestion}?" if suggestion else " — press F1 for the list of fields"
    return StatementError(statement, t.pos, max(1, t.end - t.pos), message, suggestion)


# ============================================================================================
# values
# ============================================================================================

_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_US = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_REL = re.compile(r"^([+-])(\d{1,6})([dwmy])$", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_MONEY = re.compile(r"^(?P<s1>[+-]?)(?P<dollar>\$?)(?P<s2>[+-]?)(?P<int>\d*)(?:\.(?P<frac>\d*))?$")
_BOOLS = {"yes": True, "y": True, "true": True, "on": True, "1": True,
          "no": False, "n": False, "false": False, "off": False, "0": False}

_DATE_HELP = "use 2024-01-31, 01/31/2024, today, -30d, +2w, -6m, -1y or start of school year"


def add_months(d: date, months: int) -> date:
    """`d` moved by whole months; the day is kept, or the month's last day if it is shorter."""
    y, m = divmod(d.month - 1 + months, 12)
    year = d.year + y
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    return date(year, m + 1, min(d.day, calendar.monthrange(year, m + 1)[1]))


def school_year_start(today: date, start_month: int) -> date:
    """The first day of the school year `today` is in (it starts on the 1st of `start_month`)."""
    year = today.year if today.month >= start_month else today.year - 1
    return date(year, start_month, 1)


class _Context:
    def __init__(self, statement: str, conn: sqlite3.Connection | None, today: date) -> None:
        self.s = statement
        self.conn = conn
        self.today = today
        self._start_month: int | None = None
        self._codes: dict[str, list[str]] = {}

    def error(self, v: _Value | _Cmp, message: str, suggestion: str | None = None) -> StatementError:
        return StatementError(self.s, v.pos, max(1, v.end - v.pos), message, suggestion)

    # -- settings and reference codes -------------------------------------------------------
    @property
    def start_month(self) -> int:
        if self._start_month is None:
            month = 8
            if self.conn is not None:
                try:
                    row = self.conn.execute(
                        "SELECT value FROM settings WHERE key = 'statistical_year_start_month'").fetchone()
                except sqlite3.Error:
                    row = None
                try:
                    if row is not None and 1 <= int(row[0]) <= 12:
                        month = int(row[0])
                except (TypeError, ValueError):
                    pass
            self._start_month = month
        return self._start_month

    def codes(self, table: str) -> list[str]:
        if table not in self._codes:
            assert self.conn is not None
            try:
                self._codes[table] = [r[0] for r in self.conn.execute(f"SELECT code FROM {table}")]
            except sqlite3.Error:
                self._codes[table] = []
        return self._codes[table]

    # -- conversions ------------------------------------------------------------------------------
    def as_date(self, v: _Value, name: str) -> date:
        today = self.today
        try:
            p = _phrase(v)
            if p is not None:
                if p == "today":
                    return today
                if p == "yesterday":
                    return today - timedelta(days=1)
                if p == "tomorrow":
                    return today + timedelta(days=1)
                if p.endswith("school year"):
                    start = school_year_start(today, self.start_month)
                    if p == "start of school year":
                        return start
                    if p == "start of last school year":
                        return add_months(start, -12)
                    if p == "start of next school year":
                        return add_months(start, 12)
                    return add_months(start, 12) - timedelta(days=1)  # end of school year
                if p == "start of year":
                    return date(today.year, 1, 1)
                if p == "end of year":
                    return date(today.year, 12, 31)
                if p == "start of month":
                    return today.replace(day=1)
                raise self.error(v, f"{name} is a date — {_quote(v.text)} is a year; {_DATE_HELP}")
            text = v.text.strip()
            m = _ISO.match(text)
            if m:
                return date(int(m[1]), int(m[2]), int(m[3]))
            m = _US.match(text)
            if m:
                return date(int(m[3]), int(m[1]), int(m[2]))
            m = _REL.match(text)
            if m:
                n = int(m[2]) * (1 if m[1] == "+" else -1)
                unit = m[3].lower()
                if unit == "d":
                    return today + timedelta(days=n)
                if unit == "w":
                    return today + timedelta(weeks=n)
                return add_months(today, n if unit == "m" else 12 * n)
            if re.match(r"^\d{1,6}[dwmy]$", text, re.IGNORECASE):
                raise self.error(v, f"a relative date needs a sign: -{text} (ago) or +{text} (ahead)",
                                 f"-{text}")
        except ValueError as exc:
            if isinstance(exc, StatementError):
                raise
            raise self.error(v, f"{_quote(v.text)} is not a real date ({exc})") from None
        except OverflowError:
            raise self.error(v, f"{_quote(v.text)} is out of the range of dates") from None
        raise self.error(v, f"{name} is a date — {_quote(v.text)} is not a date; {_DATE_HELP}")

    def as_number(self, v: _Value, name: str, what: str = "a number") -> int | float:
        text = v.text.strip()
        if _NUMBER.match(text):
            return _num(text)
        if v.phrase or _ISO.match(text) or _US.match(text) or _REL.match(text):
            raise self.error(v, f"{name} is {what} — {_quote(v.text)} is a date")
        raise self.error(v, f"{name} is {what} — {_quote(v.text)} is not a number")

    def as_year(self, v: _Value, name: str) -> int | float:
        p = _phrase(v)
        if p in ("this year", "last year", "next year"):
            return self.today.year + {"this year": 0, "last year": -1, "next year": 1}[p]
        text = v.text.strip()
        if _NUMBER.match(text):
            return _num(text)
        try:
            return self.as_date(v, name).year
        except StatementError:
            raise self.error(v, f"{name} is a year — {_quote(v.text)} is neither a year nor a date "
                             "(use 2024, this year, last year, next year or a date)") from None

    def as_cents(self, v: _Value, name: str) -> int:
        text = v.text.strip()
        m = _MONEY.match(text)
        if m and (m["int"] or m["frac"]) and not (m["s1"] and m["s2"]):
            frac = m["frac"] or ""
            if len(frac) > 2:
                raise self.error(v, f"{name} is money — {_quote(v.text)} has more than two decimals")
            cents = int(m["int"] or 0) * 100 + int(frac.ljust(2, "0") or 0)
            return -cents if "-" in (m["s1"], m["s2"]) else cents
        if v.phrase or _ISO.match(text) or _US.match(text) or _REL.match(text):
            raise self.error(v, f"{name} is money — {_quote(v.text)} is a date")
        raise self.error(v, f"{name} is money — {_quote(v.text)} is not an amount (use $5, 5.00 or -2.50)")

    def as_bool(self, v: _Value, name: str) -> bool:
        b = _BOOLS.get(v.text.strip().lower())
        if b is None:
            raise self.error(v, f"{name} is yes or no — {_quote(v.text)} is neither", "yes")
        return b

    def check_code(self, spec: FieldSpec, impl: _Impl, v: _Value) -> None:
        """An unknown code is an error with the nearest known one (a typo must not find nobody)."""
        text = v.text
        if text == "":
            return
        if impl.fixed_codes:
            known = list(impl.fixed_codes)
        elif impl.ref is not None and self.conn is not None:
            known = self.codes(impl.ref)
        else:
            return
        if any(text.lower() == k.lower() for k in known):
            return
        if not impl.fixed_codes and self._in_use(impl, text):
            return  # delivered by an import before the reference table knew it
        lowered = {k.lower(): k for k in known}
        close = difflib.get_close_matches(text.lower(), list(lowered), n=1, cutoff=0.5)
        suggestion = lowered[close[0]] if close else None
        label = spec.name.replace("_", " ")
        message = f"unknown {label} {_quote(text)}"
        if suggestion is not None:
            message += f" — did you mean {suggestion}?"
        elif known:
            shown = sorted(known, key=str.lower)
            message += " — known: " + ", ".join(shown[:12]) + (", ..." if len(shown) > 12 else "")
        raise self.error(v, message, suggestion)

    def _in_use(self, impl: _Impl, text: str) -> bool:
        assert self.conn is not None
        if impl.derived == "has":
            sql = f"SELECT 1 FROM {impl.has_table} WHERE {impl.has_column} = ? COLLATE NOCASE LIMIT 1"
        else:
            sql = f"SELECT 1 FROM patrons WHERE {impl.column} = ? COLLATE NOCASE LIMIT 1"
        try:
            return self.conn.execute(sql, (text,)).fetchone() is not None
        except sqlite3.Error:
            return False


_PHRASE_TEXTS = {" ".join(p) for p in _PHRASES} | {"today", "yesterday", "tomorrow"}


def _phrase(v: _Value) -> str | None:
    """The date or year word(s) of a value, also when quoted ("start of school year")."""
    if v.phrase is not None:
        return v.phrase
    text = " ".join(v.text.lower().split())
    return text if v.quoted and text in _PHRASE_TEXTS else None


def _num(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        f = float(text)
        return int(f) if f.is_integer() and abs(f) < 2**53 else f


def _like_pattern(v: _Value) -> str:
    """`*` and `?` (not backslash-escaped) are wildcards; every other character is itself."""
    out = []
    for k, ch in enumerate(v.text):
        if ch == "*" and k not in v.literal:
            out.append("%")
        elif ch == "?" and k not in v.literal:
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _iso(d: date) -> str:
    return d.isoformat()


def _next_day(d: date) -> str:
    """The first text after every value of day `d` (plain date or timestamp) in text order."""
    if d == date.max:
        return "9999-12-31~"  # '~' sorts after 'T': after every timestamp of the last day
    return (d + timedelta(days=1)).isoformat()


# ============================================================================================
# the compiler
# ============================================================================================


@dataclass
class _Sql:
    """A positive condition: true when the comparison holds, false or NULL otherwise."""

    text: str
    params: list[Any]
    #: a column whose NULL makes `text` NULL (negation must count it as "not true")
    null_col: str | None = None


_TRUE = _Sql("1", [])
_FALSE = _Sql("0", [])

_ORDER_OPS = ("<", "<=", ">", ">=")
_SUBQUERY = {
    "balance": ("(SELECT coalesce(sum(charges.balance_cents), 0) FROM charges"
                " WHERE charges.patron_id = patrons.id AND charges.forgiven_at IS NULL)"),
    "charges": ("FROM charges WHERE charges.patron_id = patrons.id AND charges.forgiven_at IS NULL"
                " AND charges.balance_cents > 0"),
    "checkouts": "FROM checkouts WHERE checkouts.patron_id = patrons.id",
    "overdue": "FROM checkouts WHERE checkouts.patron_id = patrons.id AND checkouts.due_at < ?",
    "holds": "FROM holds WHERE holds.patron_id = patrons.id",
}


class _Compiler:
    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx

    def compile(self, node: Any, neg: bool = False) -> tuple[str, list[Any]]:
        if isinstance(node, _Not):
            return self.compile(node.child, not neg)
        if isinstance(node, _Bool):
            op = node.op
            if neg:
                op = "and" if op == "or" else "or"
            parts = [self.compile(c, neg) for c in node.children]
            joiner = " AND " if op == "and" else " OR "
            return ("(" + joiner.join(p for p, _ in parts) + ")",
                    [x for _, params in parts for x in params])
        sql = self.leaf(node)
        if not neg:
            return sql.text, sql.params
        if sql.text == "1":
            return "0", []
        if sql.text == "0":
            return "1", []
        if sql.null_col:
            return f"({sql.null_col} IS NULL OR NOT ({sql.text}))", sql.params
        return f"NOT ({sql.text})", sql.params

    # -- leaves ---------------------------------------------------------------------------------
    def leaf(self, c: _Cmp) -> _Sql:
        spec, impl = FIELDS[c.field], _IMPL[c.field]
        kind = spec.kind
        self._check_op(c, spec)
        if kind in ("text", "code"):
            return self.text_leaf(c, spec, impl)
        if kind == "date":
            return self.date_leaf(c, spec, impl)
        if kind == "bool":
            yes = _Sql(impl.sql or "0", [])
            if c.op == "bool" or self.ctx.as_bool(c.values[0], spec.name):
                return yes
            return _Sql(f"NOT ({yes.text})", [])
        if kind == "has":
            return self.has_leaf(c, spec, impl)
        if c.field == "age":
            return self.age_leaf(c, spec)
        return self.number_leaf(c, spec, impl)

    def _check_op(self, c: _Cmp, spec: FieldSpec) -> None:
        kind, op = spec.kind, c.op
        allowed: tuple[str, ...]
        if kind == "bool":
            allowed = ("=", "bool")
            hint = "use = yes, = no, or the field alone"
        elif kind == "has":
            allowed = ("=", "~", "in", "empty")
            hint = "use =, !=, in, ~ or is empty"
        elif kind in ("text", "code"):
            allowed = ("=", "~", "in", "between", "empty", *_ORDER_OPS)
            hint = ""
        else:
            allowed = ("=", "in", "between", "empty", *_ORDER_OPS)
            hint = "~ matches text; use =, <, >, in or between"
        if op not in allowed:
            shown = {"empty": "is empty", "bool": spec.name}.get(op, op)
            raise StatementError(self.ctx.s, c.op_pos, max(1, c.op_end - c.op_pos),
                                 f"{shown} does not apply to {spec.name} ({spec.kind}) — {hint}")

    def text_leaf(self, c: _Cmp, spec: FieldSpec, impl: _Impl) -> _Sql:
        col = f"patrons.{impl.column}"
        null_col = col if impl.nullable else None
        empty = _Sql(f"({col} IS NULL OR {col} = '')" if impl.nullable else f"{col} = ''", [])
        op = c.op
        if op == "empty":
            return empty
        if op == "~":
            v = c.values[0]
            if v.text == "":
                return empty
            return _Sql(f"{col} LIKE ? ESCAPE '\\'", [_like_pattern(v)], null_col)
        if spec.kind == "code" and op in ("=", "in"):
            for v in c.values:
                self.ctx.check_code(spec, impl, v)
        if c.field == "grade" and op in (*_ORDER_OPS, "between"):
            return self.grade_order(c, spec, impl, col)
        if op == "=":
            if c.values[0].text == "":
                return empty
            if impl.ident:
                found = _ident_in(col, [c.values[0].text], null_col)
                if found is not None:
                    return found
            return _Sql(f"{col} = ? COLLATE NOCASE", [c.values[0].text], null_col)
        if op == "in":
            texts = list(dict.fromkeys(v.text for v in c.values))
            nonempty = [t for t in texts if t != ""]
            listed = _Sql(f"{col} COLLATE NOCASE IN ({', '.join('?' * len(nonempty))})", nonempty, null_col)
            if impl.ident:
                listed = _ident_in(col, nonempty, null_col) or listed
            if len(nonempty) == len(texts):
                return listed
            return _or([empty, listed]) if nonempty else empty
        if op == "between":
            lo, hi = c.values
            return _Sql(f"({col} >= ? COLLATE NOCASE AND {col} <= ? COLLATE NOCASE)", [lo.text, hi.text],
                        null_col)
        return _Sql(f"{col} {op} ? COLLATE NOCASE", [c.values[0].text], null_col)

    def grade_order(self, c: _Cmp, spec: FieldSpec, impl: _Impl, col: str) -> _Sql:
        """grade < 5, grade between K and 5: by position in the grade table."""
        ctx = self.ctx
        if ctx.conn is not None:
            for v in c.values:
                if v.text.lower() not in {g.lower() for g in ctx.codes("grades")}:
                    ctx.check_code(spec, impl, v)  # a typo: suggest the nearest grade
                    raise ctx.error(v, f"grade {_quote(v.text)} is not in the grade table, so it has "
                                    "no place in the order — compare it with = or in")
        pos = "(SELECT g.position FROM grades g WHERE g.code = ? COLLATE NOCASE)"
        if c.op == "between":
            cond = f"grades.position BETWEEN {pos} AND {pos}"
            params = [c.values[0].text, c.values[1].text]
        else:
            cond = f"grades.position {c.op} {pos}"
            params = [c.values[0].text]
        return _Sql(f"{col} COLLATE NOCASE IN (SELECT grades.code FROM grades WHERE {cond})", params)

    def date_leaf(self, c: _Cmp, spec: FieldSpec, impl: _Impl) -> _Sql:
        col = f"patrons.{impl.column}"
        null_col = col if impl.nullable else None
        if c.op == "empty":
            return _Sql(f"({col} IS NULL OR {col} = '')" if impl.nullable else f"{col} = ''", [])
        ctx = self.ctx
        days = [ctx.as_date(v, spec.name) for v in c.values]
        return _date_range(col, c.op, days, null_col)

    def age_leaf(self, c: _Cmp, spec: FieldSpec) -> _Sql:
        bd = "patrons.birthdate"
        if c.op == "empty":
            return _Sql(f"({bd} IS NULL OR {bd} = '')", [])
        ctx = self.ctx
        t = ctx.today
        nums = [ctx.as_number(v, spec.name, "a number of years") for v in c.values]

        def born_by(n: int) -> str:  # age >= n  <=>  birthdate <= born_by(n)
            year = min(max(t.year - n, 0), 9999)
            return f"{year:04d}-{t.month:02d}-{t.day:02d}"

        def ge(n: int) -> tuple[str, list]:
            return f"({bd} > '' AND {bd} <= ?)", [born_by(n)]

        def lt(n: int) -> tuple[str, list]:
            return f"{bd} > ?", [born_by(n)]

        def eq(x) -> tuple[str, list] | None:
            if x != math.floor(x):
                return None
            n = int(x)
            return f"({bd} > ? AND {bd} <= ?)", [born_by(n + 1), born_by(n)]

        op = c.op
        if op == ">=":
            text, params = ge(math.ceil(nums[0]))
        elif op == ">":
            text, params = ge(math.floor(nums[0]) + 1)
        elif op == "<":
            text, params = lt(math.ceil(nums[0]))
        elif op == "<=":
            text, params = lt(math.floor(nums[0]) + 1)
        elif op == "between":
            a, pa = ge(math.ceil(nums[0]))
            b, pb = lt(math.floor(nums[1]) + 1)
            text, params = f"({a} AND {b})", pa + pb
        else:  # = and in
            parts = [p for p in (eq(x) for x in dict.fromkeys(nums)) if p is not None]
            if not parts:
                return _FALSE
            text = parts[0][0] if len(parts) == 1 else "(" + " OR ".join(p for p, _ in parts) + ")"
            params = [x for _, ps in parts for x in ps]
        return _Sql(text, params, bd)

    def number_leaf(self, c: _Cmp, spec: FieldSpec, impl: _Impl) -> _Sql:
        ctx = self.ctx
        derived = impl.derived
        if spec.kind == "money":
            vals: list[Any] = [ctx.as_cents(v, spec.name) for v in c.values]
        elif spec.kind == "year":
            vals = [ctx.as_year(v, spec.name) for v in c.values]
        else:
            vals = [ctx.as_number(v, spec.name) for v in c.values]
        if derived in ("charges", "checkouts", "overdue", "holds"):
            return self.count_leaf(c.op, vals, derived)
        if derived == "balance":
            expr, null_col = _SUBQUERY["balance"], None
            if c.op == "empty":
                return _Sql(f"{expr} = 0", [])
        else:
            expr = f"patrons.{impl.column}"
            null_col = expr if impl.nullable else None
            if c.op == "empty":
                return _Sql(f"{expr} IS NULL", []) if impl.nullable else _FALSE
        return _compare(expr, c.op, vals, null_col)

    def count_leaf(self, op: str, vals: list, derived: str) -> _Sql:
        """A count of related rows: `>= 1` is EXISTS, `= 0` NOT EXISTS, anything else counts."""
        body = _SUBQUERY[derived]
        pre = [_iso(self.ctx.today)] if derived == "overdue" else []
        exists = _Sql(f"EXISTS (SELECT 1 {body})", pre)
        none = _Sql(f"NOT EXISTS (SELECT 1 {body})", pre)
        count = f"(SELECT count(*) {body})"

        def at_least(k: int) -> _Sql:
            if k <= 0:
                return _TRUE
            if k == 1:
                return exists
            return _Sql(f"{count} >= ?", [*pre, k])

        def at_most(k: int) -> _Sql:
            if k < 0:
                return _FALSE
            if k == 0:
                return none
            return _Sql(f"{count} <= ?", [*pre, k])

        def equal(x) -> _Sql:
            if x != math.floor(x) or x < 0:
                return _FALSE
            if x == 0:
                return none
            return _Sql(f"{count} = ?", [*pre, int(x)])

        if op == "empty":
            return none
        if op == ">=":
            return at_least(math.ceil(vals[0]))
        if op == ">":
            return at_least(math.floor(vals[0]) + 1)
        if op == "<=":
            return at_most(math.floor(vals[0]))
        if op == "<":
            return at_most(math.ceil(vals[0]) - 1)
        if op == "between":
            lo, hi = at_least(math.ceil(vals[0])), at_most(math.floor(vals[1]))
            return _and(lo, hi)
        parts = [equal(x) for x in dict.fromkeys(vals)]
        return _or(parts)

    def has_leaf(self, c: _Cmp, spec: FieldSpec, impl: _Impl) -> _Sql:
        table, column = impl.has_table, impl.has_column
        link = f"{table}.patron_id = patrons.id"
        none = _Sql(f"NOT EXISTS (SELECT 1 FROM {table} WHERE {link})", [])
        if c.op == "empty":
            return none
        values = c.values
        if c.op in ("=", "in"):
            for v in values:
                self.ctx.check_code(spec, impl, v)
        if c.op == "~":
            v = values[0]
            if v.text == "":
                return none
            cond, params = f"{table}.{column} LIKE ? ESCAPE '\\'", [_like_pattern(v)]
        else:
            texts = list(dict.fromkeys(v.text for v in values))
            if "" in texts:
                rest = [t for t in texts if t]
                if not rest:
                    return none
                others = self.has_leaf(
                    _Cmp(c.field, "in", [_Value(t, c.pos, c.end, True) for t in rest], c.pos, c.end,
                         c.op_pos, c.op_end), spec, impl)
                return _or([none, others])
            if len(texts) == 1:
                cond, params = f"{table}.{column} = ? COLLATE NOCASE", texts
            else:
                cond = f"{table}.{column} COLLATE NOCASE IN ({', '.join('?' * len(texts))})"
                params = texts
        return _Sql(f"EXISTS (SELECT 1 FROM {table} WHERE {link} AND {cond})", params)


_MAX_VARIANTS = 64


def _case_variants(text: str) -> list[str] | None:
    """Every spelling of `text` that NOCASE calls equal (A-Z either case), or None if too many.

    `barcode = ab12` as `barcode IN ('ab12', 'aB12', 'Ab12', 'AB12')` finds the patron
    through the unique case-sensitive index instead of reading every patron.
    """
    letters = [k for k, ch in enumerate(text) if ch.isascii() and ch.isalpha()]
    if 2 ** len(letters) > _MAX_VARIANTS:
        return None
    variants = []
    for mask in range(2 ** len(letters)):
        chars = list(text.lower())
        for bit, k in enumerate(letters):
            if mask >> bit & 1:
                chars[k] = chars[k].upper()
        variants.append("".join(chars))
    return variants


def _ident_in(col: str, texts: list[str], null_col: str | None) -> _Sql | None:
    spelled: list[str] = []
    for text in texts:
        variants = _case_variants(text)
        if variants is None:
            return None
        spelled += variants
        if len(spelled) > 4 * _MAX_VARIANTS:
            return None
    spelled = list(dict.fromkeys(spelled))
    if len(spelled) == 1:
        return _Sql(f"{col} = ?", spelled, null_col)
    return _Sql(f"{col} IN ({', '.join('?' * len(spelled))})", spelled, null_col)


def _and(a: _Sql, b: _Sql) -> _Sql:
    if a.text == "0" or b.text == "0":
        return _FALSE
    if a.text == "1":
        return b
    if b.text == "1":
        return a
    return _Sql(f"({a.text} AND {b.text})", a.params + b.params)


def _or(parts: list[_Sql]) -> _Sql:
    parts = [p for p in parts if p.text != "0"]
    if any(p.text == "1" for p in parts):
        return _TRUE
    if not parts:
        return _FALSE
    if len(parts) == 1:
        return parts[0]
    return _Sql("(" + " OR ".join(p.text for p in parts) + ")", [x for p in parts for x in p.params])


def _compare(expr: str, op: str, vals: list, null_col: str | None) -> _Sql:
    if op == "between":
        return _Sql(f"{expr} BETWEEN ? AND ?", [vals[0], vals[1]], null_col)
    if op == "in":
        uniq = list(dict.fromkeys(vals))
        if len(uniq) == 1:
            return _Sql(f"{expr} = ?", uniq, null_col)
        return _Sql(f"{expr} IN ({', '.join('?' * len(uniq))})", uniq, null_col)
    return _Sql(f"{expr} {op} ?", [vals[0]], null_col)


def _date_range(col: str, op: str, days: list[date], null_col: str | None) -> _Sql:
    """Day comparisons as text ranges, so plain dates and timestamps alike use an index:
    a value is on day D when D <= value < D+1 in text order ('2024-01-31T10:00...Z')."""
    if op == "<":
        return _Sql(f"({col} > '' AND {col} < ?)", [_iso(days[0])], null_col)
    if op == "<=":
        return _Sql(f"({col} > '' AND {col} < ?)", [_next_day(days[0])], null_col)
    if op == ">":
        return _Sql(f"{col} >= ?", [_next_day(days[0])], null_col)
    if op == ">=":
        return _Sql(f"{col} >= ?", [_iso(days[0])], null_col)
    if op == "between":
        return _Sql(f"({col} >= ? AND {col} < ?)", [_iso(days[0]), _next_day(days[1])], null_col)
    # = and in
    uniq = list(dict.fromkeys(days))
    parts = [_Sql(f"({col} >= ? AND {col} < ?)", [_iso(d), _next_day(d)]) for d in uniq]
    sql = _or(parts)
    return _Sql(sql.text, sql.params, null_col)


# ============================================================================================
# entry point
# ============================================================================================


def compile_statement(
    statement: str, *, conn: sqlite3.Connection | None = None, today: date | None = None
) -> Compiled:
    """Compile a search statement to a SQL condition over `patrons` with `?` parameters.

    `conn` (optional) supplies the settings (`statistical_year_start_month`)
    and the reference codes that coded values are checked against; `today`
    (default: the local date) anchors relative dates and ages. Raises
    StatementError, which names the position of the problem.
    """
    if not isinstance(statement, str):
        raise TypeError("a statement is text")
    tokens = _tokenize(statement)
    normalized = _normalize(tokens)
    tree = _Parser(statement, tokens).parse()
    if tree is None:
        return Compiled(normalized, "1", ())
    ctx = _Context(statement, conn, today or date.today())
    where, params = _Compiler(ctx).compile(tree)
    return Compiled(normalized, where, tuple(params))
