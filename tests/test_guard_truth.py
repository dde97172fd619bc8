"""Issue 14 item 8: the "% of the previous Full update" safeguard compares with the last Full
update whose rules RAN, never with a run it held back (whose file nobody trusted), and says
which run it compared with: in the held message, the run's summary, the summary header and the
`summary` CLI. Every run here is a real job run over a directory source."""

from __future__ import annotations

from patron_tui.cli import main
from patron_tui.services.inactivation import InactivationRules
from patron_tui.services.jobs import Job, save_job
from patron_tui.services.run_history import summary_lines
from patron_tui.store import ChangesetWriter, runlog

from tests.conftest import allow_login
from tests.test_job_inactivation import backdate, patrons, rows, run
from tests.test_job_inactivation import setup as make_job

GUARD = InactivationRules(inactivate_days=30, min_percent_of_previous=90)
ALL = rows()                                    # 60 records (two schools of 30)
TRUNCATED = ALL[:25]                            # a file cut short: 41% of 60
MOST = ALL[:52]                                 # 52 of 60 = 86%: still short of 90%


def day_of(store, run_id: int) -> str:
    conn = store.connect()
    try:
        return runlog.get_run(conn, run_id)["started_at"][:10]
    finally:
        conn.close()


def held_text(store, run_id: int) -> str:
    conn = store.connect()
    try:
        (text,) = conn.execute("SELECT text FROM run_messages WHERE run_id = ? AND code = 'inactivation_held'",
                               (run_id,)).fetchone()
        return text
    finally:
        conn.close()


def test_a_run_after_a_held_one_compares_with_the_last_run_whose_rules_ran(tmp_path, capsys):
    store, csv_path = make_job(tmp_path, GUARD)
    a = run(store, csv_path, ALL)                        # A: 60 read, the rules run (nothing due yet)
    backdate(store)
    b = run(store, csv_path, TRUNCATED)                  # B: 25 read, held (41% of A)
    assert "held" in b.summary["inactivation"]
    before = patrons(store)

    c = run(store, csv_path, MOST)                       # C: 52 read = 86% of A (but 208% of B)
    assert c.status.value == "succeeded", c.error
    # not one patron the file lacked was inactivated (the old code inactivated all 8)
    after = patrons(store)
    assert [d for d, r in after.items() if r["status"] != "Active"] == []
    assert {d: r["status"] for d, r in after.items()} == {d: r["status"] for d, r in before.items()}
    assert a.summary["inactivation"]["ran"] is True
    assert b.summary["inactivation"]["ran"] is False and "41% of the 60 read by run" in b.summary["inactivation"]["held"]
    inact = c.summary["inactivation"]
    assert inact["ran"] is False
    assert inact["compared_with"]["run_id"] == a.run_id and inact["compared_with"]["read"] == 60
    sentence = (f"52 records read is 86% of the 60 read by run {a.run_id} on {day_of(store, a.run_id)}, "
                f"the last Full update whose rules ran; the job needs at least 90%: the file may be incomplete")
    assert inact["held"] == sentence
    assert held_text(store, c.run_id) == f"Inactivation / deletion did not run: {sentence}."

    # the summary header (one line that fits 80 columns) and the summary CLI say it
    conn = store.connect()
    header = summary_lines(runlog.get_run(conn, c.run_id))
    conn.close()
    assert header[-1] == f"Inactivation held, the warning says why · compared with run {a.run_id} (60 read)"
    allow_login(store)
    assert main(["--db", str(store.path), "summary", str(c.run_id)]) == 0
    assert sentence in capsys.readouterr().out

    # D: the whole file again but one: compared with A (C handed A on), so the rules run
    backdate(store)
    d = run(store, csv_path, rows(leave={"HS3"}))
    assert d.summary["inactivation"]["ran"] is True and d.summary["inactivation"]["inactivated"] == 1
    assert d.summary["inactivation"]["compared_with"]["run_id"] == a.run_id
    conn = store.connect()
    header = summary_lines(runlog.get_run(conn, d.run_id))
    conn.close()
    assert header[-1] == f"Inactivation: 1 inactivated · 0 deleted · 0 kept back (compared with run {a.run_id})"
    # and E compares with D, the newest run whose rules ran
    e = run(store, csv_path, rows(leave={"HS3"}))
    assert e.summary["inactivation"]["compared_with"]["run_id"] == d.run_id


def test_the_yardstick_survives_pruning_of_the_run_whose_rules_ran(tmp_path):
    # "delete previously run jobs, keep 1": B's run deletes A's row, yet C still compares with A
    store, csv_path = make_job(tmp_path, GUARD, delete_previous_runs=True, keep_runs=1)
    a = run(store, csv_path, ALL)
    backdate(store)
    b = run(store, csv_path, TRUNCATED)
    assert "held" in b.summary["inactivation"]
    c = run(store, csv_path, MOST)
    assert all(r["status"] == "Active" for r in patrons(store).values())   # the old code: 8 inactivated
    conn = store.connect()
    assert conn.execute("SELECT count(*) FROM runs WHERE id = ?", (a.run_id,)).fetchone()[0] == 0
    conn.close()
    assert c.summary["inactivation"]["compared_with"]["run_id"] == a.run_id
    assert f"86% of the 60 read by run {a.run_id}" in c.summary["inactivation"]["held"]
    assert all(r["status"] == "Active" for r in patrons(store).values())


def test_rules_added_after_a_truncated_run_compare_with_the_largest_earlier_full_run(tmp_path):
    # two Full runs without rules (60 read, then a truncated 25); then the job gains its rules:
    # no earlier run ran them, so the yardstick is the largest earlier run, not the truncated one
    store, csv_path = make_job(tmp_path, InactivationRules())
    a = run(store, csv_path, ALL)
    run(store, csv_path, TRUNCATED)
    backdate(store)
    conn = store.connect()
    job = Job.model_validate({**dict(conn.execute("SELECT id, name, path, properties_path FROM jobs").fetchone()),
                              "inactivation": GUARD})
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        save_job(w, job)
    conn.close()
    c = run(store, csv_path, MOST)
    assert all(r["status"] == "Active" for r in patrons(store).values())   # the old code: 8 inactivated
    held = c.summary["inactivation"]["held"]
    assert f"86% of the 60 read by run {a.run_id}" in held and "the largest earlier Full update" in held
    assert all(r["status"] == "Active" for r in patrons(store).values())


async def test_the_job_summary_screen_shows_the_held_line_and_the_sentence(tmp_path):
    from patron_tui.ui.app import make_app
    from patron_tui.ui.screens.job_summary import JobSummaryScreen, MessageView
    from tests.pilot import wait_until

    store, csv_path = make_job(tmp_path, GUARD)
    a = run(store, csv_path, ALL)
    run(store, csv_path, TRUNCATED)
    c = run(store, csv_path, MOST)
    sentence = c.summary["inactivation"]["held"]
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(JobSummaryScreen(c.run_id))
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen) and app.screen.run is not None)
        counts = app.screen.query_one("#summary-counts")
        shown = str(counts.render())
        line = f"Inactivation held, the warning says why · compared with run {a.run_id} (60 read)"
        assert line in shown.splitlines(), shown
        assert counts.size.height == len(shown.splitlines()) == 4   # nothing clipped at 80 columns
        view = app.screen.query_one(MessageView)
        texts = [view.line_text(r).plain for r in view.rows]
        assert any(f"Inactivation / deletion did not run: {sentence}." in t for t in texts), texts
