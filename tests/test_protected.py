"""The protected flag (staff accounts...): an operator with "manage patrons for the district" sets
it (issue 14 item 9: tests/test_permission_truth.py refuses the others), from the patron's detail (p) or
`patron-tui protect`; no inactivation or deletion rule touches a protected patron."""

from __future__ import annotations

import datetime as dt

import pytest

from patron_tui.cli import main
from patron_tui.services import patrons as svc
from patron_tui.services.inactivation import InactivationRules, select
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.patrons import PatronDetailScreen

from tests.conftest import allow_login, district, patron_where

OLD = "2025-01-01T00:00:00Z"


@pytest.fixture
def store(tmp_path):
    s = district(tmp_path / "district.db", [
        {"barcode": "S1", "district_id": "STAFF1", "site": "HS", "last_name": "Staff", "first_name": "Sam",
         "last_seen_import_at": OLD},
        {"barcode": "P1", "district_id": "D1", "site": "HS", "last_name": "Pupil", "first_name": "Pat",
         "last_seen_import_at": OLD},
    ])
    allow_login(s)   # `patron-tui protect` acts as the login: it needs "manage patrons for the district"
    return s


def taken(store) -> set[str]:
    conn = store.connect()
    try:
        out = select(conn, InactivationRules(inactivate_days=30), dt.date(2026, 6, 1), allow_outstanding=False)
        return {barcode for rows in out.values() for _pid, _name, barcode, *_ in rows}
    finally:
        conn.close()


def test_cli_protect_and_unprotect(store, capsys):
    assert taken(store) == {"S1", "P1"}
    assert main(["protect", "S1", "--db", str(store.path)]) == 0
    assert "S1: protected" in capsys.readouterr().out
    assert patron_where(store, barcode="S1")["protected"] == 1
    assert taken(store) == {"P1"}
    assert main(["protect", "STAFF1", "--db", str(store.path)]) == 0          # by district ID too
    assert "(already)" in capsys.readouterr().out
    assert main(["protect", "S1", "--off", "--db", str(store.path)]) == 0
    assert patron_where(store, barcode="S1")["protected"] == 0
    assert main(["protect", "NOPE", "--db", str(store.path)]) == 2
    assert "no patron with barcode or district ID 'NOPE'" in capsys.readouterr().err
    conn = store.connect()
    journal = conn.execute("SELECT count(*) FROM change_journal WHERE table_name = 'patrons' AND op = 'update'"
                           " AND after LIKE '%protected%'").fetchone()[0]
    unknown = conn.execute("SELECT id FROM patrons WHERE is_system = 1").fetchone()[0]
    with pytest.raises(ValueError, match="system patron"):
        with store.writer(conn, None) as w:
            svc.set_protected(w, unknown, False)
    conn.close()
    assert journal == 2


async def test_p_in_the_patron_detail_toggles_protected(store):
    pid = patron_where(store, barcode="S1")["id"]
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(PatronDetailScreen(pid))
        for _ in range(3):
            await pilot.pause()
            await app.workers.wait_for_complete()
        assert isinstance(app.screen, PatronDetailScreen) and app.screen.detail["protected"] == 0
        await pilot.press("p")
        for _ in range(4):
            await pilot.pause()
            await app.workers.wait_for_complete()
        assert app.screen.detail["protected"] == 1
        assert any(line.strip().startswith("Protected") and line.rstrip().endswith("yes")
                   for line in app.screen.rendered_lines())
    assert patron_where(store, barcode="S1")["protected"] == 1
    assert taken(store) == {"P1"}
