"""Shared fixtures: every test gets its own console-settings folder, and small
databases are built with the real store and changeset writer."""

from __future__ import annotations

from pathlib import Path

import os

import pytest
from hypothesis import settings as hypothesis_settings

# CI explores the same examples every run (a red build must be reproducible);
# developers' runs keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

from patron_tui.store import ChangesetWriter, Store, utc_now
from tests.conftest_sshd import sshd, sshd_password  # noqa: F401  (real OpenSSH for SFTP tests)


@pytest.fixture(autouse=True)
def _own_config_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PATRON_TUI_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("PATRON_TUI_DB", raising=False)


def add_patrons(store: Store, rows: list[dict]) -> list[int]:
    conn = store.connect()
    now = utc_now()
    ids = []
    try:
        with ChangesetWriter(conn, operator=store.operator, run_id=None) as w:
            for row in rows:
                ids.append(w.insert("patrons", {"created_at": now, "updated_at": now, **row}))
    finally:
        conn.close()
    return ids


def district(path: Path, patrons: list[dict] = (), *,
             sites: tuple[tuple[str, str], ...] = (("HS", "High School"), ("ELM", "Elm Elementary"))) -> Store:
    """A new district database at `path` with these sites and patrons."""
    store = Store.create(path, operator="tester")
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for code, name in sites:
            w.insert("sites", {"code": code, "name": name})
    conn.close()
    if patrons:
        add_patrons(store, list(patrons))
    return store


def patron_where(store: Store, **where) -> dict | None:
    """The patron whose one given column has the given value, as a dict (None if none)."""
    conn = store.connect()
    try:
        (col, value), = where.items()
        row = conn.execute(f"SELECT * FROM patrons WHERE {col} = ?", (value,)).fetchone()
        return dict(row) if row else None
    finally:
        conn.close()


def run_row(store: Store, run_id: int) -> dict:
    """A run's row (runlog.get_run: status, error, summary...), read on a connection of its own."""
    from patron_tui.store import runlog

    conn = store.connect()
    try:
        return runlog.get_run(conn, run_id)
    finally:
        conn.close()


@pytest.fixture
def small_store(tmp_path: Path) -> Store:
    """A district with two sites and a dozen patrons."""
    store = district(tmp_path / "district.db")
    add_patrons(store, [
        {"barcode": f"P{i:04d}", "district_id": f"D{i:04d}", "site": "HS" if i % 3 else "ELM",
         "last_name": f"Last{i}", "first_name": f"First{i}", "grade": str(1 + i % 12),
         "status": "Active" if i % 4 else "Inactive"}
        for i in range(12)
    ])
    return store


def allow_login(store: Store) -> None:
    """Make the Unix login running the tests a district administrator of `store` (districts
    here are created by "tester"; a CLI or console run in this process or a child acts as the
    login, and an operator not in the operators table may do nothing)."""
    from patron_tui.store import current_login

    login = current_login()
    conn = store.connect()
    try:
        if conn.execute("SELECT 1 FROM operators WHERE login_name = ?", (login,)).fetchone():
            return
        with ChangesetWriter(conn, operator="tester", run_id=None) as w:
            w.insert("operators", {"login_name": login, "display_name": login, "security_level": 0,
                                   "may_manage_district_patrons": 1, "may_use_batch_tools": 1,
                                   "may_reset_passwords": 1, "created_at": utc_now()})
    finally:
        conn.close()
