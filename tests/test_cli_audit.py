"""`patron-tui undo`, `audit` and `prune-journal` (cli_audit.py) on a real database: the dry run
prints the plan and changes nothing; conflicts refuse the undo and are listed until
--skip-conflicts or --overwrite says what to do; the audit prints who changed a patron; refusals
exit 2 with the sentence."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from patron_tui.cli import main
from patron_tui.runs import RunEngine
from patron_tui.store import Store

from tests.conftest import district


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> Store:
    s = district(tmp_path / "d.db", [
        {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS",
         "email": "ann@old"},
        {"district_id": "D2", "barcode": "B2", "last_name": "Baker", "first_name": "Bob", "site": "ELM"},
    ])
    monkeypatch.setattr("patron_tui.store.identity.current_login", lambda: "tester")
    monkeypatch.setattr("patron_tui.store.current_login", lambda: "tester")
    return s


def email_run(store: Store, changes: dict[str, str], title: str) -> int:
    eng = RunEngine(store, pool_size=1)
    try:
        def fn(ctx):
            with ctx.writer() as w:
                for barcode, email in changes.items():
                    pid = w.conn.execute("SELECT id FROM patrons WHERE barcode = ?", (barcode,)).fetchone()[0]
                    w.update("patrons", pid, {"email": email})
            return {}
        h = eng.execute("test", title, fn)
        assert h.status.value == "succeeded", h.error
        return h.run_id
    finally:
        eng.shutdown()


def emails(store: Store) -> dict[str, str]:
    conn = sqlite3.connect(store.path)
    try:
        return dict(conn.execute("SELECT barcode, email FROM patrons WHERE barcode IS NOT NULL"))
    finally:
        conn.close()


def cli(store: Store, *args: str) -> int:
    return main([*args, "--db", str(store.path)])


def test_dry_run_then_undo_then_already_undone(store, capsys):
    run = email_run(store, {"B1": "a@1", "B2": "b@1"}, "Emails")
    assert cli(store, "undo", str(run), "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"Undo run {run} (Emails): restore 2 patrons" in out and "dry run: nothing changed" in out
    assert emails(store) == {"B1": "a@1", "B2": "b@1"}
    assert cli(store, "undo", str(run), "--dry-run", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["restore"] == {"patrons": 2} and plan["conflicts"] == [] and plan["dry_run"] is True
    assert cli(store, "undo", str(run)) == 0
    assert f"undid run {run}: 0 rows re-inserted, 0 deleted, 2 restored" in capsys.readouterr().out
    assert emails(store) == {"B1": "ann@old", "B2": ""}
    assert cli(store, "undo", str(run)) == 2
    assert "was already undone by run" in capsys.readouterr().err


def test_conflicts_refuse_until_a_choice_is_given(store, capsys):
    run = email_run(store, {"B1": "a@1", "B2": "b@1"}, "Emails")
    later = email_run(store, {"B1": "a@later"}, "Later")
    assert cli(store, "undo", str(run)) == 2
    captured = capsys.readouterr()
    assert f"changed again by run {later} (Later)" in captured.out and "B1" in captured.out
    assert "email: run left 'a@1', now 'a@later'" in captured.out
    assert "--skip-conflicts" in captured.err and "nothing was undone" in captured.err
    assert emails(store) == {"B1": "a@later", "B2": "b@1"}
    assert cli(store, "undo", str(run), "--dry-run", "--json") == 0
    conflict, = json.loads(capsys.readouterr().out)["conflicts"]
    assert (conflict["barcode"], conflict["later_run_id"], conflict["fields"]) == (
        "B1", later, [{"field": "email", "run_left": "a@1", "now": "a@later"}])
    assert cli(store, "undo", str(run), "--skip-conflicts", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "succeeded" and result["summary"]["conflicts"] == 1
    assert emails(store) == {"B1": "a@later", "B2": ""}
    assert cli(store, "undo", str(result["run_id"])) == 0           # redo
    assert emails(store) == {"B1": "a@later", "B2": "b@1"}
    assert cli(store, "undo", str(run), "--overwrite") == 0
    assert emails(store) == {"B1": "ann@old", "B2": ""}


def test_refusals_exit_2_with_the_sentence(store, capsys):
    assert cli(store, "undo", "42") == 2
    assert "There is no run 42." in capsys.readouterr().err
    assert cli(store, "undo", "42", "--json") == 2
    assert json.loads(capsys.readouterr().out)["refusal"] == "There is no run 42."


def test_audit_text_and_json(store, capsys):
    run = email_run(store, {"B1": "ann@new"}, "Fix email")
    assert cli(store, "audit", "--patron", "B1") == 0
    out = capsys.readouterr().out
    assert f"tester  run {run} (Fix email)  update patrons" in out
    assert "email: 'ann@old' -> 'ann@new'" in out
    assert cli(store, "audit", "--run", str(run), "--json") == 0
    entry, = json.loads(capsys.readouterr().out)
    assert entry["changes"] == [{"field": "email", "before": "ann@old", "after": "ann@new"}]
    assert cli(store, "audit", "--operator", "nobody") == 0
    assert "no changes match" in capsys.readouterr().out
    assert cli(store, "audit", "--since", dt.date.today().isoformat(), "--json") == 0
    assert any(e["run_id"] == run for e in json.loads(capsys.readouterr().out))
    assert cli(store, "audit", "--patron", "NOPE") == 2
    assert "No patron has the barcode" in capsys.readouterr().err
    assert cli(store, "audit", "--since", "yesterday") == 2
    assert "not a date" in capsys.readouterr().err


def test_prune_journal(store, capsys):
    run = email_run(store, {"B1": "x"}, "Old")
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE runs SET finished_at = '2001-01-01T00:00:00Z' WHERE id = ?", (run,))
    conn.commit()
    conn.close()
    assert cli(store, "prune-journal", "--dry-run") == 0
    assert "would prune 1 journal rows of 1 runs" in capsys.readouterr().out
    assert cli(store, "prune-journal") == 0
    assert "pruned 1 journal rows of 1 runs" in capsys.readouterr().out
    assert cli(store, "undo", str(run)) == 2
    assert "its journal was pruned" in capsys.readouterr().err
    assert cli(store, "prune-journal", "--json") == 0
    assert json.loads(capsys.readouterr().out)["summary"]["runs"] == 0
