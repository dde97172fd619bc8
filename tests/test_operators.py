"""Operators: the creator is a district administrator; only level 0 manages operators; the last
level-0 operator stays; every change is journalled; the CLI does the same."""

from __future__ import annotations

import json

import pytest

from patron_tui.cli import main
from patron_tui.services.operators import (
    OperatorError,
    add_operator,
    current_operator,
    edit_operator,
    list_operators,
    remove_operator,
)
from patron_tui.services.permissions import PermissionDenied

from .conftest import district


@pytest.fixture
def store(tmp_path):
    return district(tmp_path / "district.db")


def test_the_creator_is_a_district_administrator(store):
    conn = store.connect()
    try:
        me = current_operator(conn, "tester")
        assert me is not None and me.is_administrator
        assert (me.manage_patrons, me.batch_tools, me.reset_passwords) == (True, True, True)
        assert current_operator(conn, "stranger") is None
    finally:
        conn.close()


def test_add_edit_remove_are_journalled(store):
    conn = store.connect()
    try:
        op = add_operator(conn, "tester", "clerk", display_name="Clerk Kent", security_level=3, batch_tools=True)
        assert (op.login_name, op.display_name, op.security_level, op.batch_tools, op.manage_patrons) == \
            ("clerk", "Clerk Kent", 3, True, False)
        op = edit_operator(conn, "tester", "clerk", manage_patrons=True, batch_tools=False)
        assert (op.manage_patrons, op.batch_tools, op.display_name) == (True, False, "Clerk Kent")
        assert [o.login_name for o in list_operators(conn)] == ["tester", "clerk"]
        removed = remove_operator(conn, "tester", "clerk")
        assert removed.login_name == "clerk" and current_operator(conn, "clerk") is None
        journal = conn.execute(
            "SELECT operator, op, before, after FROM change_journal WHERE table_name = 'operators'"
            " AND row_key = ? ORDER BY id", (str(op.id),)).fetchall()
        assert [(r["operator"], r["op"]) for r in journal] == [("tester", "insert"), ("tester", "update"),
                                                             ("tester", "delete")]
        assert json.loads(journal[1]["after"]) == {"may_manage_district_patrons": 1, "may_use_batch_tools": 0}
        assert json.loads(journal[2]["before"])["login_name"] == "clerk"
    finally:
        conn.close()


def test_only_a_district_administrator_manages_operators(store):
    conn = store.connect()
    try:
        add_operator(conn, "tester", "mgr", security_level=1, manage_patrons=True, batch_tools=True,
                     reset_passwords=True)
        before = conn.execute("SELECT count(*) FROM change_journal").fetchone()[0]
        for attempt in (lambda: add_operator(conn, "mgr", "eve"),
                        lambda: edit_operator(conn, "mgr", "mgr", security_level=0),
                        lambda: remove_operator(conn, "mgr", "tester")):
            with pytest.raises(PermissionDenied, match=r"'mgr' \(security level 1\) may not manage operators"):
                attempt()
        with pytest.raises(PermissionDenied, match="not in the operators table"):
            add_operator(conn, "stranger", "eve")
        assert conn.execute("SELECT count(*) FROM change_journal").fetchone()[0] == before
        assert current_operator(conn, "mgr").security_level == 1
    finally:
        conn.close()


def test_the_last_district_administrator_is_neither_removed_nor_demoted(store):
    conn = store.connect()
    try:
        with pytest.raises(OperatorError, match="last district administrator"):
            remove_operator(conn, "tester", "tester")
        with pytest.raises(OperatorError, match="last district administrator"):
            edit_operator(conn, "tester", "tester", security_level=2)
        edit_operator(conn, "tester", "tester", display_name="The Admin")   # other fields may change
        add_operator(conn, "tester", "second", security_level=0)
        # with two, one may go: then the other is the last again
        edit_operator(conn, "second", "tester", security_level=2)
        assert current_operator(conn, "tester").security_level == 2
        with pytest.raises(OperatorError, match="last district administrator"):
            remove_operator(conn, "second", "second")
    finally:
        conn.close()


def test_bad_values_are_refused_with_the_field_named(store):
    conn = store.connect()
    try:
        with pytest.raises(OperatorError, match="security level: must be a whole number 0 or more"):
            add_operator(conn, "tester", "x", security_level=-1)
        with pytest.raises(OperatorError, match="login name"):
            add_operator(conn, "tester", "two words")
        with pytest.raises(OperatorError, match="is an operator already"):
            add_operator(conn, "tester", "tester")
        with pytest.raises(OperatorError, match="no operator with the login name 'ghost'"):
            edit_operator(conn, "tester", "ghost", security_level=3)
        with pytest.raises(OperatorError, match="no operator"):
            remove_operator(conn, "tester", "ghost")
    finally:
        conn.close()


def test_cli_operators(store, monkeypatch, capsys):
    monkeypatch.setattr("patron_tui.store.current_login", lambda: "tester")
    db = str(store.path)
    assert main(["operators", "add", "clerk", "--level", "3", "--batch-tools", "--display-name", "Clerk K",
                 "--db", db]) == 0
    assert main(["operators", "edit", "clerk", "--no-batch-tools", "--reset-passwords", "--manage-patrons",
                 "--json", "--db", db]) == 0
    out = capsys.readouterr().out
    edited = json.loads(out[out.index("{"):])
    assert (edited["batch_tools"], edited["reset_passwords"], edited["manage_patrons"], edited["security_level"]) \
        == (False, True, True, 3)
    assert main(["operators", "list", "--json", "--db", db]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [o["login_name"] for o in listed] == ["tester", "clerk"]
    assert main(["operators", "remove", "tester", "--db", db]) == 2
    assert "last district administrator" in capsys.readouterr().err
    assert main(["operators", "add", "bad", "--level", "-2", "--db", db]) == 2
    assert "security level" in capsys.readouterr().err
    assert main(["operators", "remove", "clerk", "--db", db]) == 0
    assert "operator clerk removed" in capsys.readouterr().out
