"""Issue 14 item 9 (security levels): an operator changes or deletes only patrons of a security
group with a higher level number than their own (level 0: everyone). Remove Patrons by a level-5
operator used to delete a level-1 (Site Administrator) patron although Change Patron Security
Group refused to touch that patron; now every utility skips such a patron, reported per patron
with the sentence the security-group rule uses, and the patron is left exactly as it was."""

from __future__ import annotations

import pytest

from patron_tui.services import utilities as U
from patron_tui.services.utilities import Selections
from patron_tui.services.utilities.base import option_fields

from tests.conftest import district, patron_where
from tests.utilities_helpers import add_operator, run

SEL = Selections(sites=["HS"])
LEVEL1 = ("current security group 'SITEADMIN' (security level 1) is not one an operator at level 5 may "
          "change (only higher level numbers)")


@pytest.fixture
def store(tmp_path):
    s = district(tmp_path / "district.db", [
        {"barcode": "ADMIN1", "district_id": "A1", "site": "HS", "last_name": "Admin", "first_name": "Sue",
         "security_group": "SITEADMIN", "grade": "9", "homeroom": "101", "email": "sue@school.test"},
        {"barcode": "KID1", "district_id": "K1", "site": "HS", "last_name": "Kid", "first_name": "Pat",
         "security_group": "PATRON", "grade": "9", "homeroom": "101", "email": "pat@school.test"},
    ])
    add_operator(s, "clerk5", level=5, batch=True, reset=True)   # batch tools and password resets
    return s


def options_for(conn, util) -> dict:
    """Valid options: every required choice gets the district's last choice."""
    out = {}
    for f in option_fields(util):
        if f.required:
            out[f.name] = U.choices(conn, f.choices)[-1][0] if f.choices else "A note"
    if util.name == "reset-patron-accounts":
        out.update(username_by="barcode", password_by="no_change")
    return out


def test_remove_patrons_skips_a_patron_of_a_higher_privileged_level_with_the_security_group_sentence(store):
    before = patron_where(store, barcode="ADMIN1")
    conn = store.connect()
    try:
        group_pv = U.preview(conn, "change-patron-security-group", SEL, {"new_security_group": "PATRON"}, "clerk5")
        pv = U.preview(conn, "remove-patrons", SEL, {}, "clerk5")
    finally:
        conn.close()
    # the security-group rule's sentence for this patron ...
    assert [(s.barcode, s.reason) for s in group_pv.skipped if s.barcode == "ADMIN1"] == [("ADMIN1", LEVEL1)]
    # ... is Remove Patrons' too, and only the level-6 patron is removed
    assert [(s.barcode, s.reason) for s in pv.skipped] == [("ADMIN1", LEVEL1)]
    assert [c.barcode for c in pv.samples] == ["KID1"] and pv.selected == 2
    handle = run(store, "remove-patrons", SEL, {}, fingerprint=pv.fingerprint, operator="clerk5")
    assert handle.status.value == "succeeded", handle.error
    assert (handle.summary["changed"], handle.summary["skipped"]) == (1, 1)
    assert patron_where(store, barcode="ADMIN1") == before
    assert patron_where(store, barcode="KID1") is None
    conn = store.connect()
    (text,) = conn.execute("SELECT text FROM run_messages WHERE run_id = ? AND code = 'skipped'",
                           (handle.run_id,)).fetchone()
    conn.close()
    assert text == f"Admin, Sue: {LEVEL1}"


def test_a_district_administrator_may_still_remove_anyone(store):
    handle = run(store, "remove-patrons", SEL, {}, operator="tester")     # level 0
    assert handle.status.value == "succeeded", handle.error
    assert handle.summary["changed"] == 2


@pytest.mark.parametrize("name", sorted(U.UTILITIES))
def test_no_utility_changes_a_patron_of_a_higher_privileged_level(store, name):
    util = U.get(name)
    conn = store.connect()
    try:
        options = options_for(conn, util)
        plan = U.plan_for(conn, name, SEL, options, "clerk5")
    finally:
        conn.close()
    admin = patron_where(store, barcode="ADMIN1")["id"]
    assert admin not in {c.patron_id for c in plan.changes}, name
    reasons = [s.reason for s in plan.skipped if s.patron_id == admin]
    assert len(reasons) == 1, (name, plan.skipped)
    if name == "reset-patron-accounts":     # its own, older words for the same rule
        assert "level 1; your level 5 may reset only higher level numbers" in reasons[0]
    else:
        assert reasons[0] == LEVEL1, name
