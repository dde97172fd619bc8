"""services.queries: the search statement language, operator by operator, value by value,
with its errors, its injection and markup cases, and the indexes it relies on."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from patron_tui.services import queries as q
from patron_tui.services.patrons import count_patrons, page
from patron_tui.services.queries import (
    FIELDS,
    Compiled,
    StatementError,
    compile_statement,
    complete,
    field_names,
    language_help,
)
from patron_tui.store import ChangesetWriter, Store

T = date(2026, 9, 15)  # "today" in these tests: a Tuesday in the school year that began 1 Aug 2026
EVIL_LAST = "'); DROP TABLE patrons;--"

# label -> patron row (besides the defaults below); labels come back from `who()`
PATRONS: dict[str, dict] = {
    "ann": dict(last_name="O'Brien", first_name="Ann", site="HS", grade="11", status="Active",
                homeroom="Room 101", birthdate="2008-09-15", barcode="B001", district_id="D-1",
                patron_type="Student", picture=b"\x89PNG", graduation_year=2027, email="ann@example.com",
                updated_at="2025-09-14T23:59:59.000000Z", created_at="2020-08-20T12:00:00.000000Z",
                password_hash="x", username="ann"),
    "bob": dict(last_name="o'bryan", first_name="Bob", site="HS", grade="12", status="active",
                homeroom="room 101", birthdate="2008-09-16", barcode="b002", patron_type="Student",
                graduation_year=2026, updated_at="2026-09-15T08:00:00.000000Z",
                created_at="2025-09-15T07:00:00.000000Z", inactive_since=None),
    "cy": dict(last_name="Smith_Jones", first_name="Cy", site="ELM", grade="K", status="Inactive",
               homeroom="", birthdate=None, barcode=None, patron_type="Student",
               updated_at="2025-09-15T00:00:00.000000Z", created_at="2025-09-15T00:00:00.000000Z",
               inactive_since="2026-06-15T09:00:00.000000Z"),
    "dee": dict(last_name="100% Smith", first_name="Dee", site="ELM", grade="5", status="Active",
                homeroom="Room 12", birthdate="1990-01-31", barcode="B004", patron_type="Staff",
                account_expires="2026-09-14", updated_at="2026-01-01T10:00:00.000000Z",
                created_at="2019-01-01T10:00:00.000000Z"),
    "evil": dict(last_name=EVIL_LAST, first_name="[bold]x[/bold]", nickname='say "hi"',
                 middle_name="back\\slash", site="HS", grade="GRAD", status="Restricted", homeroom="Gym",
                 birthdate="2000-02-29", barcode="B005", patron_type="Patron", protected=1,
                 account_expires="2027-06-30", updated_at="2026-09-14T10:00:00.000000Z",
                 created_at="2026-09-14T10:00:00.000000Z", email="e%_@x.org"),
}


def _now_row(row: dict) -> dict:
    base = {"created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-01T00:00:00.000000Z"}
    return {**base, **row}


@pytest.fixture(scope="module")
def district(tmp_path_factory) -> tuple[Store, dict[str, int]]:
    store = Store.create(tmp_path_factory.mktemp("queries") / "district.db", operator="tester")
    conn = store.connect()
    ids: dict[str, int] = {}
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.insert("sites", {"code": "HS", "name": "High School"})
        w.insert("sites", {"code": "ELM", "name": "Elm Elementary"})
        for label, row in PATRONS.items():
            ids[label] = w.insert("patrons", _now_row(row))
        charge = dict(kind="other", transaction_date="2026-09-01")
        # ann: 5.00 open + 3.00 forgiven -> balance 5.00, one open charge
        w.insert("charges", {**charge, "patron_id": ids["ann"], "amount_cents": 500, "balance_cents": 500})
        w.insert("charges", {**charge, "patron_id": ids["ann"], "amount_cents": 300, "balance_cents": 300,
                             "forgiven_at": "2026-09-02T00:00:00.000000Z", "forgiven_by": "x"})
        # bob: 2.50 + 3.00 open, one paid -> balance 5.50, two open charges
        for cents in (250, 300, 0):
            w.insert("charges", {**charge, "patron_id": ids["bob"], "amount_cents": 300, "balance_cents": cents})
        # dee: a credit -> balance -2.50
        w.insert("charges", {**charge, "patron_id": ids["dee"], "amount_cents": -250, "balance_cents": -250})
        out = dict(item_barcode="I1", checked_out_at="2026-09-01T10:00:00.000000Z")
        w.insert("checkouts", {**out, "patron_id": ids["ann"], "due_at": "2026-09-14T23:59:59.000000Z"})
        w.insert("checkouts", {**out, "patron_id": ids["ann"], "due_at": "2026-09-16T23:59:59.000000Z"})
        w.insert("checkouts", {**out, "patron_id": ids["bob"], "due_at": "2026-09-15T23:59:59.000000Z"})
        w.insert("holds", {"patron_id": ids["bob"], "kind": "hold", "placed_at": "2026-09-01"})
        note = dict(created_at="2026-09-01T00:00:00.000000Z")
        w.insert("notes", {**note, "patron_id": ids["ann"], "note_type": "Alert", "text": "Severe peanut allergy"})
        w.insert("notes", {**note, "patron_id": ids["bob"], "note_type": "General", "text": "100% done_ok"})
        w.insert("notes", {**note, "patron_id": ids["evil"], "note_type": "Category", "text": "IEP"})
        w.insert("patron_profiles", {"patron_id": ids["evil"], "medium": "BR"})
        w.insert("patron_profiles", {"patron_id": ids["ann"], "medium": "DB"})
    conn.close()
    return store, ids


@pytest.fixture
def conn(district):
    c = district[0].connect()
    yield c
    c.close()


@pytest.fixture
def who(district, conn):
    """who(statement) -> the set of labels of the patrons it selects."""
    by_id = {v: k for k, v in district[1].items()}

    def run(statement: str, *, today: date = T, with_conn: bool = True) -> set[str]:
        compiled = compile_statement(statement, conn=conn if with_conn else None, today=today)
        rows = conn.execute(f"SELECT id FROM patrons WHERE is_system = 0 AND ({compiled.where})",
                            compiled.params)
        return {by_id[r[0]] for r in rows}

    return run


ALL = set(PATRONS)


def err(statement: str, conn=None, today: date = T) -> StatementError:
    with pytest.raises(StatementError) as info:
        compile_statement(statement, conn=conn, today=today)
    return info.value


# -- the shape of a compiled statement ----------------------------------------------------


def test_empty_statement_selects_everybody(who):
    assert compile_statement("") == Compiled("", "1", ())
    assert compile_statement("   \t ").where == "1"
    assert who("") == ALL


def test_values_travel_as_parameters_and_the_statement_is_normalized():
    c = compile_statement("status=Active  and(grade in(11,12))", today=T)
    assert c.statement == "status = Active and (grade in (11, 12))"
    assert "Active" not in c.where and "11" not in c.where
    assert c.params == ("Active", "11", "12")


# -- operators ---------------------------------------------------------------------------------


def test_equality_ignores_letter_case(who):
    assert who("status = Active") == {"ann", "bob", "dee"}
    assert who("STATUS = ACTIVE") == {"ann", "bob", "dee"}
    assert who("homeroom = 'Room 101'") == {"ann", "bob"}
    assert who("first = bob") == {"bob"}


def test_not_equal_is_not_equal(who):
    assert who("status != Active") == {"cy", "evil"}
    assert who("status <> active") == {"cy", "evil"}
    assert who("status == active") == {"ann", "bob", "dee"}


def test_ordering_on_text(who):
    # NOCASE folds A-Z to a-z before comparing: "[bold]..." sorts before "ann" ('[' < 'a')
    assert who("first < c") == {"ann", "bob", "evil"}
    assert who("first <= cy") == {"ann", "bob", "cy", "evil"}
    assert who("first > Cy") == {"dee"}
    assert who("first >= d") == {"dee"}
    assert who("first < B") == {"ann", "evil"}


def test_ordering_on_numbers(who):
    assert who("grad_year > 2026") == {"ann"}
    assert who("grad_year >= 2026") == {"ann", "bob"}
    assert who("grad_year < 2027") == {"bob"}
    assert who("grad_year <= 2027") == {"ann", "bob"}
    assert who("id > 0") == ALL


def test_wildcard_match(who):
    assert who('last ~ "o\'br*"') == {"ann", "bob"}
    assert who("last ~ O'BRIEN") == {"ann"}  # a pattern without wildcards matches the whole value
    assert who("last ~ o'b?ien") == {"ann"}
    assert who("last ~ *smith*") == {"cy", "dee"}
    assert who("last !~ *smith*") == ALL - {"cy", "dee"}
    assert who("last ~ smith") == set()


def test_percent_and_underscore_are_literal(who):
    assert who('last ~ "100%*"') == {"dee"}
    assert who('last ~ "1%*"') == set()  # % is not a wildcard
    assert who('last ~ "smith_*"') == {"cy"}
    assert who('last ~ "smith_jones"') == {"cy"}
    assert who('last ~ "smithxjones"') == set()  # _ is not a wildcard either
    assert who('last = "100% Smith"') == {"dee"}
    assert who('last = "100_ Smith"') == set()
    assert who('email ~ "e%_@*"') == {"evil"}
    assert who('note_text ~ "100%*"') == {"bob"}


def test_backslash_makes_a_wildcard_literal(district, conn):
    store, ids = district
    c = compile_statement(r'last ~ "a\*b?"', today=T)
    assert c.params == ("a*b_",)
    c = compile_statement(r'middle ~ "back\\*"', today=T)
    assert c.params == ("back\\\\%",)
    rows = conn.execute(f"SELECT id FROM patrons WHERE {c.where}", c.params).fetchall()
    assert [r[0] for r in rows] == [ids["evil"]]


def test_in_and_not_in(who):
    assert who("grade in (11, 12)") == {"ann", "bob"}
    assert who("grade in (11)") == {"ann"}
    assert who("grade not in (11, 12)") == {"cy", "dee", "evil"}
    assert who("status in (inactive, RESTRICTED)") == {"cy", "evil"}
    assert who("barcode in ('', B001)") == {"ann", "cy"}


def test_between(who):
    assert who("grad_year between 2026 and 2027") == {"ann", "bob"}
    assert who("grad_year not between 2026 and 2026") == {"ann", "cy", "dee", "evil"}
    assert who("first between b and d") == {"bob", "cy"}  # 'dee' > 'd'
    assert who("updated between 2025-09-14 and 2025-09-15") == {"ann", "cy"}


def test_is_empty(who):
    assert who("barcode is empty") == {"cy"}
    assert who("barcode is not empty") == ALL - {"cy"}
    assert who("homeroom is empty") == {"cy"}
    assert who('homeroom = ""') == {"cy"}
    assert who("birthdate is empty") == {"cy"}
    assert who("grad_year is empty") == {"cy", "dee", "evil"}
    assert who("inactive_since is not empty") == {"cy"}
    assert who("checkouts is empty") == {"cy", "dee", "evil"}
    assert who("note is empty") == {"cy", "dee"}
    assert who("medium is not empty") == {"ann", "evil"}


def test_and_or_not_and_parentheses(who):
    assert who("site = HS and status = Active") == {"ann", "bob"}
    assert who("site = ELM or status = Restricted") == {"cy", "dee", "evil"}
    # and binds tighter than or
    assert who("site = ELM or site = HS and grade = 12") == {"cy", "dee", "bob"}
    assert who("(site = ELM or site = HS) and grade = 12") == {"bob"}
    assert who("not site = HS") == {"cy", "dee"}
    assert who("not (site = HS or grade = K)") == {"dee"}
    assert who("not not site = ELM") == {"cy", "dee"}
    assert who("SITE = hs AND NOT Grade = 11") == {"bob", "evil"}


def test_missing_values_never_compare_but_not_turns_them_around(who):
    assert who("birthdate < 2100-01-01") == ALL - {"cy"}
    assert who("not (birthdate < 2100-01-01)") == {"cy"}
    assert who("barcode != B001") == ALL - {"ann"}  # cy has no barcode: it is not B001
    assert who("age >= 0") == ALL - {"cy"}
    assert who("age < 1000") == ALL - {"cy"}
    assert who("age != 18") == ALL - {"ann"}


# -- values ------------------------------------------------------------------------------------


def test_quoted_strings_both_quotes_doubled_and_escaped(who):
    assert who("last = \"O'Brien\"") == {"ann"}
    assert who("last = 'O''Brien'") == {"ann"}
    assert who(r"last = 'O\'Brien'") == {"ann"}
    assert who("last = O'Brien") == {"ann"}  # a quote inside a bare word is just a character
    assert who(r'nick = "say \"hi\""') == {"evil"}
    assert who("nick = 'say \"hi\"'") == {"evil"}
    assert who('nick = "say ""hi"""') == {"evil"}


def test_a_field_name_in_value_position_is_a_value(district, conn):
    store, _ = district
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        pid = w.insert("patrons", _now_row({"last_name": "Status", "first_name": "grade", "site": "HS"}))
    try:
        c = compile_statement("last = status and first = grade", conn=conn, today=T)
        assert [r[0] for r in conn.execute(f"SELECT id FROM patrons WHERE {c.where}", c.params)] == [pid]
    finally:
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.delete("patrons", pid)


def test_numbers_money_and_their_forms(who):
    assert who("balance > $5") == {"bob"}
    assert who("balance >= 5") == {"ann", "bob"}
    assert who("balance = 5.00") == {"ann"}
    assert who("balance = $5.5") == {"bob"}
    assert who("balance < 0") == {"dee"}
    assert who("balance = -2.50") == {"dee"}
    assert who("balance = -$2.50") == {"dee"}
    assert who("balance = $-2.50") == {"dee"}
    assert who("balance = 0") == {"cy", "evil"}
    assert who("balance is empty") == {"cy", "evil"}
    assert who("balance between $0.01 and $5") == {"ann"}
    assert who("balance in (5, 5.50)") == {"ann", "bob"}
    assert compile_statement("balance > $5", today=T).params == (500,)
    assert compile_statement("balance > .5", today=T).params == (50,)


def test_iso_and_us_dates(who):
    assert who("birthdate = 2008-09-15") == {"ann"}
    assert who("birthdate = 09/15/2008") == {"ann"}
    assert who("birthdate = 9/15/2008") == {"ann"}
    assert who("birthdate < 1/1/2001") == {"dee", "evil"}
    assert who("expires = 2026-09-14") == {"dee"}


def test_dates_compare_by_day_against_timestamps(who):
    # ann was updated at 23:59:59 on 14 Sep 2025, cy at 00:00:00 on 15 Sep 2025
    assert who("updated = 2025-09-14") == {"ann"}
    assert who("updated = 2025-09-15") == {"cy"}
    assert who("updated < 2025-09-15") == {"ann"}
    assert who("updated <= 2025-09-15") == {"ann", "cy"}
    assert who("updated > 2025-09-14") == ALL - {"ann"}
    assert who("updated >= 2025-09-15") == ALL - {"ann"}
    assert who("updated in (2025-09-14, 2026-09-15)") == {"ann", "bob"}
    assert who("created = today") == set()
    assert who("updated = today") == {"bob"}
    assert who("updated = yesterday") == {"evil"}


def test_relative_dates(who):
    assert who("updated < -365d") == {"ann"}  # before 2025-09-15
    assert who("updated <= -365d") == {"ann", "cy"}
    assert who("updated < -1y") == {"ann"}
    assert who("updated >= -1d") == {"bob", "evil"}
    assert who("expires < +1d") == {"dee"}
    assert who("expires > +1w") == {"evil"}
    assert who("expires = tomorrow") == set()
    assert who("expires = yesterday") == {"dee"}


@pytest.mark.parametrize("text, today, expected", [
    ("-30d", date(2026, 3, 1), date(2026, 1, 30)),
    ("+2w", date(2026, 9, 15), date(2026, 9, 29)),
    ("-1m", date(2026, 3, 31), date(2026, 2, 28)),  # month end: the shorter month's last day
    ("-1m", date(2024, 3, 31), date(2024, 2, 29)),
    ("+1m", date(2026, 1, 31), date(2026, 2, 28)),
    ("-6m", date(2026, 8, 31), date(2026, 2, 28)),
    ("-1y", date(2024, 2, 29), date(2023, 2, 28)),  # a leap day a year back
    ("+4y", date(2024, 2, 29), date(2028, 2, 29)),
    ("-12M", date(2026, 9, 15), date(2025, 9, 15)),
    ("today", date(2026, 1, 1), date(2026, 1, 1)),
    ("yesterday", date(2026, 1, 1), date(2025, 12, 31)),
    ("tomorrow", date(2025, 12, 31), date(2026, 1, 1)),
    ("start of year", date(2026, 9, 15), date(2026, 1, 1)),
    ("end of year", date(2026, 9, 15), date(2026, 12, 31)),
    ("start of month", date(2026, 9, 15), date(2026, 9, 1)),
])
def test_relative_date_forms(text, today, expected):
    c = compile_statement(f"birthdate = {text}", today=today)
    assert c.params[0] == expected.isoformat()


@pytest.mark.parametrize("month, today, expected", [
    (8, date(2026, 9, 15), date(2026, 8, 1)),
    (8, date(2026, 8, 1), date(2026, 8, 1)),  # the first day of the school year
    (8, date(2026, 7, 31), date(2025, 8, 1)),  # the last day of the previous one
    (8, date(2026, 1, 1), date(2025, 8, 1)),
    (1, date(2026, 1, 1), date(2026, 1, 1)),
    (1, date(2026, 12, 31), date(2026, 1, 1)),
    (9, date(2026, 8, 31), date(2025, 9, 1)),
    (9, date(2026, 9, 1), date(2026, 9, 1)),
    (12, date(2026, 11, 30), date(2025, 12, 1)),
])
def test_start_of_school_year_follows_the_setting(tmp_path, month, today, expected):
    store = Store.create(tmp_path / "d.db", operator="tester")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "statistical_year_start_month", {"value": str(month)})
    c = compile_statement("created >= start of school year", conn=conn, today=today)
    assert c.params == (expected.isoformat(),)
    last = compile_statement("created >= start of last school year", conn=conn, today=today)
    assert last.params == (expected.replace(year=expected.year - 1).isoformat(),)
    nxt = compile_statement("created < start of next school year", conn=conn, today=today)
    assert nxt.params[-1] == expected.replace(year=expected.year + 1).isoformat()
    end = compile_statement("created = end of school year", conn=conn, today=today)
    assert end.params[0] < nxt.params[-1]
    conn.close()


def test_start_of_school_year_without_a_database_starts_in_august():
    c = compile_statement("updated >= start of school year", today=date(2026, 7, 31))
    assert c.params == ("2025-08-01",)
    c = compile_statement("updated >= Start Of School Year", today=date(2026, 8, 1))
    assert c.params == ("2026-08-01",)


def test_a_bad_setting_falls_back_to_august(tmp_path):
    store = Store.create(tmp_path / "d.db", operator="tester")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        w.update("settings", "statistical_year_start_month", {"value": "13"})
    assert compile_statement("updated >= start of school year", conn=conn, today=T).params == ("2026-08-01",)
    conn.close()


def test_date_words_may_be_quoted(who):
    assert who('updated = "today"') == {"bob"}
    assert who("grad_year = 'this year'") == {"bob"}
    assert who('updated >= "Start of School  Year"') == who("updated >= start of school year")
    assert who('last = "today"') == set()  # for a text field it is just text


def test_years_for_the_graduation_year(who):
    assert who("grad_year = this year") == {"bob"}
    assert who("grad_year = next year") == {"ann"}
    assert who("grad_year > last year") == {"ann", "bob"}
    assert who("grad_year between 2020 and 2026") == {"bob"}
    assert who("grad_year >= -1y") == {"ann", "bob"}  # a date counts by its year (2025)
    assert who("grad_year = start of next school year") == {"ann"}  # 2027-08-01


def test_saved_relative_statement_means_the_same_thing_later(who):
    statement = "status = Active and updated < -365d"
    assert who(statement, today=date(2026, 9, 15)) == {"ann"}
    assert who(statement, today=date(2027, 1, 2)) == {"ann", "dee"}


def test_yes_no_fields(who):
    assert who("has_picture") == {"ann"}
    assert who("picture = yes") == {"ann"}
    assert who("has_picture = no") == ALL - {"ann"}
    assert who("not has_picture") == ALL - {"ann"}
    assert who("has_picture != true") == ALL - {"ann"}
    assert who("protected") == {"evil"}
    assert who("protected = 1 or has_password") == {"ann", "evil"}


# -- aliases and fields -----------------------------------------------------------------------


@pytest.mark.parametrize("alias, canonical", [
    ("homeroom", "location"), ("type", "patron_type"), ("last", "last_name"), ("first", "first_name"),
    ("grad_year", "graduation_year"), ("updated", "updated_at"), ("created", "created_at"),
    ("group", "security_group"), ("access", "access_level"), ("nick", "nickname"),
    ("dob", "birthdate"), ("expires", "account_expires"), ("picture", "has_picture"),
    ("inactive", "inactive_since"), ("last_seen", "last_seen_import_at"), ("district", "district_id"),
])
def test_aliases_mean_their_field(alias, canonical):
    value = {"text": "x", "code": "x", "date": "2020-01-01", "year": "2020", "bool": "yes",
             "number": "1"}[FIELDS[q._BY_NAME[canonical]].kind]
    a = compile_statement(f"{alias} = {value}", today=T)
    b = compile_statement(f"{canonical} = {value}", today=T)
    assert (a.where, a.params) == (b.where, b.params)


def test_every_patron_column_is_a_field(conn):
    columns = {r[1] for r in conn.execute("PRAGMA table_info(patrons)")}
    reachable = {q._IMPL[name].column for name in FIELDS} | {"password_hash", "picture", "protected"}
    # is_system is the caller's business (it adds is_system = 0)
    # import_fingerprint and flagged (schema v3) are the import engine's bookkeeping, not searchable yet
    assert columns - reachable == {"is_system", "import_fingerprint", "flagged"}


def test_field_names_and_completion():
    names = field_names()
    assert names == sorted(names)
    assert {"homeroom", "location", "grade", "grad_year", "balance", "age", "medium"} <= set(names)
    assert complete("gr") == ["grad_year", "grade", "graduation", "graduation_year", "gradyear", "group"]
    assert complete("status = Active an") == ["and"]
    assert complete("last ~ smith and HOME") == ["homeroom"]
    assert "between" in complete("age betw")
    assert complete("status = ") == []
    assert complete("") == []


def test_language_help_lists_every_field():
    text = language_help()
    assert "start of school year" in text and "did you mean" in text
    for spec in FIELDS.values():
        assert spec.name in text


# -- derived fields ------------------------------------------------------------------------------


def test_counts(who):
    assert who("charges = 2") == {"bob"}
    assert who("charges > 0") == {"ann", "bob"}
    assert who("charges = 0") == {"cy", "dee", "evil"}  # paid, forgiven and credits are not open
    assert who("checkouts = 2") == {"ann"}
    assert who("checkouts >= 1") == {"ann", "bob"}
    assert who("checkouts between 1 and 1") == {"bob"}
    assert who("checkouts < 2") == ALL - {"ann"}
    assert who("checkouts <= 0.5") == {"cy", "dee", "evil"}
    assert who("checkouts > 1.5") == {"ann"}
    assert who("checkouts in (0, 2)") == ALL - {"bob"}
    assert who("checkouts = 1.5") == set()
    assert who("not (checkouts = 1.5)") == ALL
    assert who("overdue > 0") == {"ann"}  # bob's item is due today: not overdue yet
    assert who("overdue > 0", today=date(2026, 9, 16)) == {"ann", "bob"}
    assert who("holds = 1") == {"bob"}
    assert who("holds is empty") == ALL - {"bob"}


def test_notes_by_type_and_text(who):
    assert who("note = Alert") == {"ann"}
    assert who("note = alert") == {"ann"}
    assert who("note != Alert") == ALL - {"ann"}
    assert who("note in (Alert, Category)") == {"ann", "evil"}
    assert who("note ~ *a*") == {"ann", "bob", "evil"}  # Alert, General, Category
    assert who("note_text ~ *peanut*") == {"ann"}
    assert who("note_text = iep") == {"evil"}
    assert who("note is not empty and not note = General") == {"ann", "evil"}


def test_medium(who):
    assert who("medium = BR") == {"evil"}
    assert who("medium in (br, db)") == {"ann", "evil"}
    assert who("medium != BR") == ALL - {"evil"}


@pytest.mark.parametrize("today, age_evil, age_ann", [
    (date(2026, 9, 15), 26, 18),
    (date(2026, 9, 14), 26, 17),  # ann's 18th birthday is tomorrow
    (date(2026, 2, 28), 25, 17),  # evil, born on 29 Feb 2000, is still 25 on 28 Feb 2026
    (date(2026, 3, 1), 26, 17),   # ... and 26 on 1 March
    (date(2028, 2, 29), 28, 19),  # leap year: the birthday itself
    (date(2028, 2, 28), 27, 19),
])
def test_age_in_whole_years(who, today, age_evil, age_ann):
    assert "evil" in who(f"age = {age_evil}", today=today)
    assert "evil" not in who(f"age = {age_evil - 1}", today=today)
    assert "evil" not in who(f"age = {age_evil + 1}", today=today)
    assert "ann" in who(f"age = {age_ann}", today=today)
    assert "ann" in who(f"age >= {age_ann}", today=today)
    assert "ann" not in who(f"age > {age_ann}", today=today)
    assert "ann" in who(f"age < {age_ann + 1}", today=today)
    assert "ann" in who(f"age <= {age_ann}", today=today)
    assert "ann" in who(f"age between {age_ann} and {age_ann}", today=today)
    assert "ann" not in who(f"age between {age_ann + 1} and 200", today=today)


def test_age_with_fractions_and_lists(who):
    assert who("age >= 17.5") == who("age >= 18")
    assert who("age > 17.5") == who("age >= 18")
    assert who("age < 17.5") == who("age <= 17")
    assert who("age = 17.5") == set()
    assert who("age in (18, 17)") == {"ann", "bob"}
    assert who("age is empty") == {"cy"}
    assert who("age >= 18 and type = Student") == {"ann"}


def test_grade_orders_by_the_grade_table(who):
    # the default grade table: PK, K, 1..12, GRAD
    assert who("grade >= 11") == {"ann", "bob", "evil"}
    assert who("grade > 11") == {"bob", "evil"}
    assert who("grade < 1") == {"cy"}
    assert who("grade <= 5") == {"cy", "dee"}
    assert who("grade between K and 5") == {"cy", "dee"}
    assert who("grade between 9 and 12") == {"ann", "bob"}
    assert who("grade not between 9 and 12") == {"cy", "dee", "evil"}
    # grades compare by the table, not as text ("5" > "11" as text)
    assert who("grade > 5", with_conn=False) == {"ann", "bob", "evil"}


# -- Alexandria's Selections --------------------------------------------------------------------


def test_selections_are_expressible(who):
    assert who("grade in (11, 12) and site = HS and status = Active") == {"ann", "bob"}
    assert who("grad_year between 2026 and 2027") == {"ann", "bob"}
    assert who("grad_year <= this year") == {"bob"}
    assert who("homeroom = 'room 101' and balance between $0 and $5") == {"ann"}
    assert who("site = ELM and type in (Student, Staff)") == {"cy", "dee"}
    assert who("status != Active and site = HS") == {"evil"}


# -- errors -------------------------------------------------------------------------------------


def test_unknown_field_suggests_the_nearest():
    e = err("grde = 5")
    assert (e.position, e.length, e.suggestion) == (0, 4, "grade")
    assert e.message == 'unknown field "grde" — did you mean grade?'
    assert e.caret() == 'grde = 5\n^^^^\nunknown field "grde" — did you mean grade?'
    assert str(e) == e.message
    assert isinstance(e, ValueError)
    e = err("status = Active and homerom = x")
    assert (e.position, e.length, e.suggestion) == (20, 7, "homeroom")
    assert e.caret().splitlines()[1] == " " * 20 + "^" * 7
    e = err("grad-year = 2020")
    assert e.suggestion in ("grad_year", "gradyear")
    e = err("frobnicate = 1")
    assert e.suggestion is None and "frobnicate" in e.message


def test_unknown_code_suggests_the_nearest(conn):
    e = err("status = Actve", conn)
    assert (e.position, e.length, e.suggestion) == (9, 5, "Active")
    assert e.message == 'unknown status "Actve" — did you mean Active?'
    e = err("grade in (11, 21)", conn)
    assert e.position == 14 and e.suggestion in ("1", "11", "12", "2")
    e = err("type = Studnet", conn)
    assert e.suggestion == "Student"
    e = err("site = Q", conn)
    assert e.suggestion is None and "known:" in e.message and "HS" in e.message
    e = err("note = Alrt")  # note types are fixed: checked even without a database
    assert e.suggestion == "Alert"
    e = err("medium = BX", conn)
    assert "medium" in e.message
    e = err("grade > 13", conn)
    assert e.position == 8


def test_unknown_codes_pass_without_a_database_and_codes_in_use_pass_with_one(conn):
    assert compile_statement("status = Actve").params == ("Actve",)
    # a code an import delivered before the reference table knew it still passes
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        pid = w.insert("patrons", _now_row({"last_name": "Z", "site": "ACAD", "status": "Graduated"}))
    try:
        compile_statement("site = acad and status = GRADUATED", conn=conn, today=T)
    finally:
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.delete("patrons", pid)


def test_code_matching_ignores_case(who):
    assert who("site = hs") == {"ann", "bob", "evil"}
    assert who("grade = k") == {"cy"}
    assert who("grade = grad") == {"evil"}


@pytest.mark.parametrize("statement, position, length, words", [
    ("age > tomorrow", 6, 8, ["age", "number", '"tomorrow"', "date"]),
    ("updated < soon", 10, 4, ["updated", "date", '"soon"']),
    ("balance > lots", 10, 4, ["balance", "money"]),
    ("balance > $5.001", 10, 6, ["two decimals"]),
    ("grad_year = someday", 12, 7, ["year"]),
    ("has_picture = maybe", 14, 5, ["yes or no"]),
    ("birthdate = 02/30/2024", 12, 10, ["not a real date"]),
    ("birthdate = 2024-13-01", 12, 10, ["not a real date"]),
    ("updated > 30d", 10, 3, ["sign", "-30d"]),
    ("birthdate = this year", 12, 9, ["date", "year"]),
    ('last = "o\'brien', 7, 8, ["unterminated string"]),
    ("last = 'abc\\", 7, 5, ["unterminated string"]),
    ("(status = Active", 0, 1, ['unclosed "("']),
    ("grade in (1, 2", 9, 1, ['unclosed "("']),
    ("status = Active)", 15, 1, ['unexpected ")"']),
    ("status = Active grade = 5", 16, 5, ['"and" or "or"']),
    ("homeroom = Room 101", 16, 3, ['"Room 101"']),
    ("status = Active and", 19, 1, ["ends too soon", "field"]),
    ("status =", 8, 1, ["ends too soon", "value"]),
    ("status Active", 7, 6, ["expected an operator"]),
    ("status = and", 9, 3, ["expected a value"]),
    ("grade between 1 or 5", 16, 2, ['"and"']),
    ("grade in 1, 2", 9, 1, ['"("']),
    ("grade is full", 9, 4, ['"empty"']),
    ("()", 1, 1, ["field name"]),
    ("and = 1", 0, 3, ["field name"]),
    ("'status' = Active", 0, 8, ["field name"]),
    ("age ~ 5*", 4, 1, ["~", "age"]),
    ("has_picture > 1", 12, 1, [">", "has_picture"]),
    ("note < Alert", 5, 1, ["<", "note"]),
    ("has_picture is empty", 12, 8, ["is empty"]),
    ("status = Active; DROP TABLE patrons", 17, 4, ['"and" or "or"']),
])
def test_errors_name_the_position(statement, position, length, words):
    e = err(statement)
    assert (e.position, e.length) == (position, length), e.caret()
    for word in words:
        assert word in e.message, e.message
    lines = e.caret().splitlines()
    assert lines[0] == statement
    assert lines[1] == " " * position + "^" * length
    assert lines[2] == e.message


def test_a_caret_at_the_end_points_past_the_last_character():
    e = err("grade = ")
    assert e.caret().splitlines()[1] == " " * 8 + "^"


# -- injection and markup ---------------------------------------------------------------------


HOSTILE = [
    "x" + EVIL_LAST, "'; DELETE FROM patrons; --", '"); DROP TABLE notes; --', "%", "_", "%%", "\\", "\\%",
    "[bold]y[/bold]", "[red]", "\x1b[31mred", "' OR 1=1 --", "\" OR \"\"=\"", "*/", "/*", "?", ":name",
    "$1", "NULL", "';", "--", "\u202eevil", "a\tb", "*",
]


def _quoted(value: str) -> str:
    """`value` as a statement string: backslash before a quote or a backslash."""
    return '"' + "".join("\\" + ch if ch in '"\\' else ch for ch in value) + '"'


def _pattern(value: str) -> str:
    """`value` as a ~ pattern that matches only itself: its * and ? made literal too."""
    return '"' + "".join("\\" + ch if ch in '"\\*?' else ch for ch in value) + '"'


STATEMENTS = [
    lambda v: f"last = {_quoted(v)}",
    lambda v: f"last ~ {_pattern(v)}",
    lambda v: f"first in ({_quoted(v)}, 'zzz')",
    lambda v: f"last = {_quoted(v)} and nick = hostile",
    lambda v: f"not (last != {_quoted(v)})",
    lambda v: f"last between {_quoted(v)} and {_quoted(v)}",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_select_exactly_what_they_say(district, conn, value):
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        pid = w.insert("patrons", _now_row({"last_name": value, "first_name": value, "site": "HS",
                                            "nickname": "hostile"}))
    try:
        tables = conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
        total = conn.execute("SELECT count(*) FROM patrons").fetchone()[0]
        for make in STATEMENTS:
            statement = make(value)
            c = compile_statement(statement, conn=conn, today=T)
            # the SQL is the same whatever the value: the value is only ever a parameter
            assert c.where == compile_statement(make("benign"), conn=conn, today=T).where, statement
            got = [r[0] for r in conn.execute(
                f"SELECT id FROM patrons WHERE is_system = 0 AND ({c.where})", c.params)]
            assert got == [pid], statement
            assert count_patrons(conn, where=c.where, params=c.params) == 1
            assert [r["last_name"] for r in page(conn, where=c.where, params=c.params)] == [value]
        assert conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == tables
        assert conn.execute("SELECT count(*) FROM patrons").fetchone()[0] == total
    finally:
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.delete("patrons", pid)


def test_injection_as_bare_words_is_a_syntax_error_or_a_plain_value(who, conn):
    assert who("""last = "'); DROP TABLE patrons;--\"""") == {"evil"}
    assert who("last = '''); DROP TABLE patrons;--'") == {"evil"}
    assert who(f"last ~ \"*DROP TABLE*\"") == {"evil"}
    with pytest.raises(StatementError):
        compile_statement("last = x'); DROP TABLE patrons;--", conn=conn)
    assert who("first = [bold]x[/bold]") == {"evil"}
    assert who("first ~ [bold]*") == {"evil"}
    assert conn.execute("SELECT count(*) FROM patrons WHERE is_system = 0").fetchone()[0] == len(PATRONS)


def test_sql_identifiers_come_only_from_the_field_table():
    c = compile_statement('last = "x" and status = "y; DROP" and note = Alert or age > 3', today=T)
    words = set(c.where.replace("(", " ").replace(")", " ").replace(",", " ").split())
    assert not {"x", '"x"', "DROP", "y;"} & words


def test_error_messages_show_the_text_literally():
    e = err("[bold]grde[/bold] = 5")
    assert "[bold]grde[/bold]" in e.message
    e = err("last = 'x\n")
    assert "\n" not in e.caret().splitlines()[0]


# -- identifiers with a unique index ---------------------------------------------------------


def test_identifiers_match_any_letter_case_through_their_index(who, conn):
    assert who("barcode = b001") == {"ann"}
    assert who("barcode = B002") == {"bob"}
    assert who("barcode in (b001, B002)") == {"ann", "bob"}
    assert who("district = d-1") == {"ann"}
    assert who("username = ANN") == {"ann"}
    c = compile_statement("barcode = b001", conn=conn, today=T)
    plan = " ".join(r[3] for r in conn.execute(
        f"EXPLAIN QUERY PLAN SELECT id FROM patrons WHERE {c.where}", c.params))
    assert "patrons_barcode" in plan
    long = compile_statement("username = abcdefghij", today=T)
    assert "NOCASE" in long.where and long.params == ("abcdefghij",)


# -- the indexes (migration 2) -----------------------------------------------------------------


def _plan(conn, statement: str) -> str:
    c = compile_statement(statement, conn=conn, today=T)
    sql = (f"SELECT id FROM patrons WHERE is_system = 0 AND ({c.where})"
           " ORDER BY last_name, first_name, id LIMIT 25")
    return " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, c.params))


def test_the_statement_indexes_exist_and_are_used(conn):
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"patrons_last_nocase", "patrons_homeroom_nocase", "charges_open", "checkouts_patron_due",
            "notes_patron_type"} <= names
    assert "patrons_last_nocase" in _plan(conn, "last ~ \"o'br*\"")
    assert "patrons_last_nocase" in _plan(conn, "last = smith")
    plan = _plan(conn, 'homeroom = "Room 101"')
    assert "patrons_homeroom_nocase" in plan and "TEMP B-TREE" not in plan  # already in list order
    assert "charges_open" in _plan(conn, "balance > 5")
    assert "checkouts_patron_due" in _plan(conn, "overdue > 0")
    assert "notes_patron_type" in _plan(conn, "note = Alert")


def test_an_old_database_gains_the_indexes_when_opened(tmp_path):
    from patron_tui.store.db import connect
    from patron_tui.store.schema import MIGRATIONS

    path = tmp_path / "v1.db"
    raw = connect(path)
    raw.execute("BEGIN IMMEDIATE")
    for statement in MIGRATIONS[0].statements:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("COMMIT")
    raw.close()
    conn = Store(path).connect()
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'patrons_last_nocase'").fetchone()
    conn.close()


def test_today_defaults_to_the_local_date():
    assert compile_statement("updated = today").params[0] == date.today().isoformat()


def test_compiles_against_a_plain_sqlite_connection(district):
    raw = sqlite3.connect(Path(district[0].path))
    try:
        c = compile_statement("status = Active and updated < start of school year", conn=raw, today=T)
        assert c.params == ("Active", "2026-08-01")
        with pytest.raises(StatementError):
            compile_statement("status = Actve", conn=raw)
    finally:
        raw.close()
