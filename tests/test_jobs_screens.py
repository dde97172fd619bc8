"""Pilot tests at 80x24, keyboard only: the Jobs section creates a directory job and an SFTP
job through the form, tests them, runs one into a real store, and the Job Manager lists the
run and opens its job summary with the real counts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList, Select

from patron_tui.services.jobs import get_job, job_runs
from patron_tui.services.jobs.secrets import default_secret_store
from patron_tui.store import Store
from patron_tui.ui.app import make_app
from patron_tui.ui.screens.job_form import DiscardScreen, JobFormScreen
from patron_tui.ui.screens.job_manager import JobManagerScreen
from patron_tui.ui.screens.job_summary import JobSummaryScreen
from patron_tui.ui.screens.job_test import TestServerScreen
from patron_tui.ui.screens.jobs import JobRunScreen, JobsScreen, RunModeScreen
from patron_tui.ui.screens.key_help import KeyHelpScreen
from patron_tui.ui.screens.query_dialogs import ConfirmScreen

from tests.conftest import patron_where
from tests.pilot import from_palette, in_every_theme, settle, type_text, wait_until
from tests.jobs_helpers import add_job, make_store, write_files

ROWS = ["D1,B1,Able,Ann,HS", "D2,B2,Baker,Bob,HS", "D3,,Nobar,Ned,HS"]   # the third is skipped
PASSWORD = "Pa55-[bold]w0rd!"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return make_store(tmp_path)


@pytest.fixture(autouse=True)
def _no_settle(monkeypatch):
    # the directory source looks twice, 2 s apart, for a file still being written;
    # these files are complete before the run starts
    monkeypatch.setattr("patron_tui.services.jobs.directory.SETTLE_SECONDS", 0.0)


async def open_jobs(app, pilot):
    await settle(app, pilot)
    await pilot.press("4")
    await settle(app, pilot)
    assert isinstance(app.screen, JobsScreen)


async def highlight_job(app, pilot, name: str):
    ol = app.screen.query_one("#jobs-list", OptionList)
    rows = app.screen.rows
    index = next(i for i, r in enumerate(rows) if r["job"].name == name)
    for _ in range(ol.option_count):
        if ol.highlighted is not None and ol.get_option_at_index(ol.highlighted).id == f"job-{index}":
            return
        await pilot.press("down")
    raise AssertionError(f"job {name} not in the list")


def job_lines(app) -> list[str]:
    ol = app.screen.query_one("#jobs-list", OptionList)
    return [str(ol.get_option_at_index(i).prompt) for i in range(ol.option_count)
            if (ol.get_option_at_index(i).id or "").startswith("job-")]


def err(screen, key: str) -> str:
    widget = screen.query_one(f"#err-{key}")
    return str(widget.render()) if widget.has_class("-shown") else ""


def saved(store: Store, name: str):
    conn = store.connect()
    try:
        return get_job(conn, name)
    finally:
        conn.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_directory_job_by_keyboard_test_run_and_job_manager(store, tmp_path):
    csv_path, props = write_files(tmp_path, ROWS)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        assert "No jobs yet" in str(app.screen.query_one("#jobs-list", OptionList).get_option_at_index(3).prompt)
        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        assert isinstance(form, JobFormScreen) and form.query_one("#job-name", Input).has_focus
        # tab order: name, source (Directory already chosen), CSV path, properties file
        await type_text(app, pilot, "Students")
        await pilot.press("tab", "tab")
        assert form.query_one("#job-path", Input).has_focus
        await type_text(app, pilot, "sis/students.csv")   # not a full path: said under the field as typed
        await pilot.pause()
        assert "not a full path" in err(form, "path")
        await pilot.press("end", "ctrl+u")
        await type_text(app, pilot, str(csv_path))
        await pilot.pause()
        assert err(form, "path") == ""
        await pilot.press("tab")
        await type_text(app, pilot, str(props))
        await settle(app, pilot)
        assert "Valid properties file; its encoding is utf-8" in str(form.query_one("#hint-properties").render())
        await pilot.press("tab")
        assert form.query_one("#job-encoding", Select).has_focus
        await pilot.press("tab")
        assert form.query_one("#day-mon-mode", Select).has_focus
        assert "3 patrons" not in str(form.query_one("#hint-schedule").render())
        assert "Full for each update" in str(form.query_one("#hint-schedule").render())
        await pilot.press("ctrl+g")   # the suggestion: under 50,000 patrons, Full every day
        await pilot.pause()
        await pilot.press("tab")
        assert form.query_one("#day-mon-time", Input).has_focus
        await pilot.press("end", "ctrl+u")
        await type_text(app, pilot, "25:00")
        await pilot.pause()
        assert "HH:MM" in err(form, "schedule-mon")
        await pilot.press("end", "ctrl+u")
        await type_text(app, pilot, "1:30")
        await pilot.pause()
        assert err(form, "schedule-mon") == ""
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        job = saved(store, "Students")
        assert job is not None and job.source == "directory" and job.path == str(csv_path)
        assert job.schedule.mon.mode == "full" and job.schedule.mon.time == "01:30"
        assert {d.mode for _, d in job.schedule.days()} == {"full"}
        (line,) = job_lines(app)
        assert line.startswith("Students") and "dir" in line and "never run" in line and "Full" in line

        # Test Server: every check passes, each with its sentence
        await highlight_job(app, pilot, "Students")
        await pilot.press("t")
        await wait_until(app, pilot, lambda: isinstance(app.screen, TestServerScreen) and app.screen.report)
        report = str(app.screen.query_one("#test-report").render())
        assert "✓ folder" in report and "✓ file" in report and "✓ properties" in report and "✗" not in report
        assert "Every check passed" in str(app.screen.query_one("#test-where").render())
        await pilot.press("escape")
        await settle(app, pilot)

        # Run now, Full: the progress screen, then the job summary with the real counts
        await pilot.press("r")
        await settle(app, pilot)
        assert isinstance(app.screen, RunModeScreen)
        await pilot.press("f")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
        await settle(app, pilot)
        run_id = app.screen.run_id
        counts = str(app.screen.query_one("#summary-counts").render())
        assert "Read 3 · added 2 · updated 0 · unchanged 0 · skipped 1" in counts and "full" in counts, counts
        assert f"Source {csv_path}" in counts and "patron-job-" not in counts   # not the staging copy
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, JobRunScreen)
        assert f"Run {run_id} succeeded" in str(app.screen.query_one("#jobrun-status").render())
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        assert "succeeded" in job_lines(app)[0]

        # the Job Manager: the run, who started it, its counts; Enter opens its summary
        await pilot.press("m")
        await settle(app, pilot)
        manager = app.screen
        assert isinstance(manager, JobManagerScreen)
        table = manager.query_one("#manager-runs", DataTable)
        assert table.has_focus and table.row_count == 1
        cells = [str(c) for c in table.get_row_at(0)]
        assert cells[:5] == [str(run_id), "job Full", "Students", "succeeded",
                             "3 read · 2 added · 1 skipped"], cells
        assert cells[7] == "tester"
        detail = str(manager.query_one("#manager-detail").render())
        assert "started by tester" in detail and "read 3, added 2, updated 0, skipped 1, errors 0" in detail
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, JobSummaryScreen) and app.screen.run_id == run_id
        assert "Read 3 · added 2" in str(app.screen.query_one("#summary-counts").render())
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("question_mark")
        await settle(app, pilot)
        assert isinstance(app.screen, KeyHelpScreen)
        keys = app.screen.query_one(DataTable)
        listed = [str(keys.get_row_at(i)[1]) for i in range(keys.row_count)]
        assert listed[:3] == ["Back", "Filter by job", "Refresh"]   # the screen's own keys come first
        await pilot.press("escape", "escape")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
    assert patron_where(store, district_id="D1")["last_name"] == "Able"
    assert patron_where(store, district_id="D3") is None
    conn = store.connect()
    try:
        (run,) = job_runs(conn, "Students")
    finally:
        conn.close()
    assert run["status"] == "succeeded" and run["started_by"] == "operator" and run["mode"] == "full"


async def test_sftp_job_by_keyboard_password_masked_and_never_in_the_database(store, tmp_path):
    _, props = write_files(tmp_path, ROWS)
    port = closed_port()
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        await type_text(app, pilot, "Nightly SFTP")
        await pilot.press("tab", "right", "space")   # source: SFTP
        await pilot.pause()
        assert form.query_one("#grp-sftp").display and not form.query_one("#grp-directory").display
        await pilot.press("tab")
        assert form.query_one("#job-sftp-url", Input).has_focus
        await type_text(app, pilot, "ftp://127.0.0.1/in")
        await pilot.pause()
        assert "is not an sftp:// URL" in err(form, "sftp_url")
        await pilot.press("home", "delete", "delete", "delete", *"sftp")
        await pilot.pause()
        assert err(form, "sftp_url") == ""
        await pilot.press("tab", "end", "ctrl+u", *"x99")   # only digits go into the port
        await pilot.pause()
        assert form.query_one("#job-sftp-port", Input).value == "99"
        await pilot.press("end", "ctrl+u")
        await type_text(app, pilot, str(port))
        await pilot.press("tab", "tab", "tab")   # user name left blank; auth: password
        assert form.query_one("#job-password", Input).has_focus
        await type_text(app, pilot, PASSWORD)
        await pilot.press("tab")
        await type_text(app, pilot, "students.csv")
        await pilot.press("tab")
        await type_text(app, pilot, str(props))
        await settle(app, pilot)
        await pilot.press("ctrl+s")   # refused: the user name is missing, said under it
        await settle(app, pilot)
        assert isinstance(app.screen, JobFormScreen)
        assert "needs the user name" in err(form, "sftp_user")
        assert form.query_one("#job-sftp-user", Input).has_focus
        await pilot.press(*"clerk")
        await pilot.pause()
        assert err(form, "sftp_user") == ""
        screen_text = app.export_screenshot()
        assert PASSWORD not in screen_text and "Pa55" not in screen_text
        assert "•" * len(PASSWORD) in screen_text.replace("&#160;", " ")

        # Test Server with the typed password: nobody listens there, said as a failed connect
        await pilot.press("ctrl+t")
        await wait_until(app, pilot, lambda: isinstance(app.screen, TestServerScreen) and app.screen.report)
        report = str(app.screen.query_one("#test-report").render())
        assert "✗ connect" in report and str(port) in report and PASSWORD not in report
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.screen is form
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        (line,) = job_lines(app)
        assert "sftp" in line and "not scheduled" in line

        # editing shows that a password is stored, never the password
        await highlight_job(app, pilot, "Nightly SFTP")
        await pilot.press("enter")
        await settle(app, pilot)
        form = app.screen
        assert isinstance(form, JobFormScreen)
        assert form.query_one("#job-password", Input).value == ""
        assert "A password is stored for this job (not shown)" in str(form.query_one("#hint-password").render())
        assert form.query_one("#job-sftp-user", Input).value == "clerk"
        # a changed field makes Esc ask first
        await pilot.press("end", *"2")
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, DiscardScreen)
        await pilot.press("n")
        await settle(app, pilot)
        assert app.screen is form
        await pilot.press("escape", "y")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
    job = saved(store, "Nightly SFTP")
    assert job.source == "sftp" and job.sftp_user == "clerk" and job.sftp_port == port
    assert job.sftp_url == "sftp://127.0.0.1/in" and job.file_name == "students.csv"
    assert default_secret_store(store.path).get("Nightly SFTP").reveal() == PASSWORD
    for path in store.path.parent.glob(store.path.name + "*"):
        assert PASSWORD.encode() not in path.read_bytes(), path


async def test_delete_asks_for_a_typed_answer_and_names_must_be_unique(store, tmp_path):
    csv_path, props = write_files(tmp_path, ROWS)
    add_job(store, "Students", path=csv_path, props=props, schedule="mon-fri=incremental@02:00")
    add_job(store, "Staff", path=csv_path, props=props)
    default_secret_store(store.path).set("Students", "left-over")   # from when it was an SFTP job
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        lines = job_lines(app)
        assert [line.split()[0] for line in lines] == ["Staff", "Students"]
        assert "Incr" in lines[1] and "not scheduled" in lines[0]
        # a second job with a taken name: refused, said under the name
        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        await type_text(app, pilot, "Students")
        await pilot.press("tab", "tab")
        await type_text(app, pilot, str(csv_path))
        await pilot.press("tab")
        await type_text(app, pilot, str(props))
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert app.screen is form and "already exists" in err(form, "name")
        await pilot.press("escape", "y")
        await settle(app, pilot)
        await highlight_job(app, pilot, "Students")
        await pilot.press("d")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press(*"no", "enter")   # not the answer: nothing is deleted
        await settle(app, pilot)
        assert saved(store, "Students") is not None
        await highlight_job(app, pilot, "Students")
        await pilot.press("d")
        await settle(app, pilot)
        await pilot.press(*"delete", "enter")
        await settle(app, pilot)
        assert [line.split()[0] for line in job_lines(app)] == ["Staff"]
    assert saved(store, "Students") is None and saved(store, "Staff") is not None
    assert default_secret_store(store.path).get("Students") is None   # its secret went with it


async def test_large_district_suggests_incremental_on_weekdays(store, tmp_path, monkeypatch):
    monkeypatch.setattr("patron_tui.ui.screens.job_form.count_patrons", lambda conn: 62_000)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        hint = str(form.query_one("#hint-schedule").render())
        assert "62,000 patrons, over 50,000" in hint and "Incremental on weekdays and Full on weekends" in hint
        await pilot.press("ctrl+g")
        await pilot.pause()
        modes = {d: form.query_one(f"#day-{d}-mode", Select).value for d in ("mon", "fri", "sat", "sun")}
        assert modes == {"mon": "incremental", "fri": "incremental", "sat": "full", "sun": "full"}


async def test_an_operator_who_may_not_manage_district_patrons_is_refused(store, tmp_path):
    csv_path, props = write_files(tmp_path, ROWS)
    add_job(store, "Students", path=csv_path, props=props)
    app = make_app(store.path, operator="clerk")   # no operator row: no permission
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        ol = app.screen.query_one("#jobs-list", OptionList)
        heads = [str(ol.get_option_at_index(i).prompt) for i in range(ol.option_count)]
        assert any("view only: you may not manage jobs" in h for h in heads)
        await pilot.press("a")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
        assert any("manage patrons for the district" in n.message for n in app._notifications)
        await highlight_job(app, pilot, "Students")
        for key in ("enter", "d", "t", "r"):
            await pilot.press(key)
            await settle(app, pilot)
            assert isinstance(app.screen, JobsScreen), key
        await pilot.press("m")   # the Job Manager is open to everyone
        await settle(app, pilot)
        assert isinstance(app.screen, JobManagerScreen)
    conn = store.connect()
    try:
        assert job_runs(conn) == []
    finally:
        conn.close()
    assert saved(store, "Students") is not None


async def test_palette_opens_the_job_manager_and_the_job_form(store):
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await from_palette(app, pilot, "job manager", "Job Manager")
        await settle(app, pilot)
        assert app.current_mode == "jobs" and isinstance(app.screen, JobManagerScreen)
        assert "No runs yet" in str(app.screen.query_one("#manager-detail").render())
        await pilot.press("escape")
        await settle(app, pilot)
        await from_palette(app, pilot, "add a scheduled job", "Add a scheduled job")
        await settle(app, pilot)
        assert isinstance(app.screen, JobFormScreen) and app.screen.query_one("#job-name", Input).has_focus


def inside(region, width: int = 80, height: int = 24) -> bool:
    return region.x >= 0 and region.y >= 0 and region.right <= width and region.bottom <= height


async def test_jobs_screens_fit_80x24_in_every_theme(store, tmp_path):
    # One keyboard walkthrough in the default theme; at each screen it reaches, in_every_theme
    # re-runs that screen's fit assertions in all four themes and checks that no widget moves
    # and no character changes (this was four walkthroughs, one per theme).
    csv_path, props = write_files(tmp_path, ROWS)
    add_job(store, "A job with a rather long name for the list", path=csv_path, props=props,
            schedule="mon=full@02:00")
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)

        def list_fits():
            assert inside(app.screen.query_one("#jobs-list").region)

        list_fits()
        await in_every_theme(app, pilot, list_fits)
        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        scroll = form.query_one("#form-scroll").region

        def form_fits():
            assert form.query_one("#form-scroll").region == scroll
            assert inside(scroll) and scroll.height >= 15
            assert inside(form.query_one("#form-status").region)
            source = form.query_one("#src-directory")
            assert "●" in str(source.render()) and "●" not in str(form.query_one("#src-sftp").render())
            focused = app.focused
            assert focused is not None and scroll.contains_region(focused.region), focused

        form_fits()
        await in_every_theme(app, pilot, form_fits)
        # every field scrolls into view when it gets the focus
        for _ in range(20):
            await pilot.press("tab")
            await pilot.pause()
            focused = app.focused
            assert focused is not None and scroll.contains_region(focused.region), focused
        await in_every_theme(app, pilot, form_fits)   # scrolled down, the last field focused
        await pilot.press("escape")
        await settle(app, pilot)
        await highlight_job(app, pilot, "A job with a rather long name for the list")
        await pilot.press("t")
        await wait_until(app, pilot, lambda: isinstance(app.screen, TestServerScreen) and app.screen.report)

        def test_frame_fits():
            assert inside(app.screen.query_one("#test-frame").region)

        test_frame_fits()
        await in_every_theme(app, pilot, test_frame_fits)
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("m")
        await settle(app, pilot)

        def manager_fits():
            for wid in ("#manager-title", "#manager-job", "#manager-runs", "#manager-detail"):
                assert inside(app.screen.query_one(wid).region), wid

        manager_fits()
        await in_every_theme(app, pilot, manager_fits)


async def test_editing_keeps_what_the_form_does_not_show(store, tmp_path):
    from patron_tui.services.inactivation import InactivationRules

    csv_path, props = write_files(tmp_path, ROWS)
    rules = InactivationRules(records_read_greater_than=10, inactivate_days=30)
    add_job(store, "Students", path=csv_path, props=props, inactivation=rules,
            options={"delete_previous_runs": True, "keep_runs": 5})
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        await highlight_job(app, pilot, "Students")
        await pilot.press("enter")
        await settle(app, pilot)
        form = app.screen
        assert isinstance(form, JobFormScreen) and form.query_one("#opt-keep-runs", Input).value == "5"
        form.query_one("#day-sat-time", Input).focus()
        await pilot.press("end", "ctrl+u", *"6:15")
        await pilot.pause()
        assert err(form, "schedule-sat") == ""
        form.query_one("#opt-keep-runs", Input).focus()
        await pilot.press("end", "ctrl+u", *"12")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)
    job = saved(store, "Students")
    assert job.inactivation == rules
    assert job.options.keep_runs == 12 and job.schedule.sat.time == "06:15"


async def test_sftp_job_end_to_end_host_key_accepted_run_and_summary(sshd_password, store, tmp_path, monkeypatch):
    import uuid

    from tests.jobs_helpers import HEADER
    from tests.sshd import ssh_keygen_fingerprint

    srv = sshd_password
    folder = "ui" + uuid.uuid4().hex[:8]
    srv.serve(f"{folder}/students.csv", HEADER + "".join(r + "\n" for r in ROWS))
    _, props = write_files(tmp_path, ROWS)
    monkeypatch.setattr(JobRunScreen, "SFTP_OPTIONS", {"settle_seconds": 0, "timeout": 10.0, "attempts": 1})
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        await type_text(app, pilot, "District SFTP")
        await pilot.press("tab", "right", "space", "tab")
        await type_text(app, pilot, srv.sftp_url(folder))
        await pilot.press("tab", "end", "ctrl+u")
        await type_text(app, pilot, str(srv.port))
        await pilot.press("tab")
        await type_text(app, pilot, srv.password_user)
        await pilot.press("tab", "tab")
        assert form.query_one("#job-password", Input).has_focus
        await type_text(app, pilot, srv.password)
        await pilot.press("tab")
        await type_text(app, pilot, "students.csv")
        await pilot.press("tab")
        await type_text(app, pilot, str(props))
        await settle(app, pilot)
        assert not [w.id for w in form.query(".field-error.-shown")]

        # Test Server: the host key is unknown; its fingerprint is shown; a + "accept" takes it
        await pilot.press("ctrl+t")
        await wait_until(app, pilot, lambda: isinstance(app.screen, TestServerScreen) and app.screen.report)
        dialog = app.screen
        report = str(dialog.query_one("#test-report").render())
        assert "✓ connect" in report and "✗ host key" in report
        fingerprint = ssh_keygen_fingerprint(srv.host_pub)
        assert dialog.unknown_fingerprint == fingerprint
        assert fingerprint in str(dialog.query_one("#test-fingerprint").render())
        await pilot.press("a")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press(*"accept", "enter")
        await wait_until(app, pilot, lambda: dialog.report.ok,
                         why=lambda: (str(dialog.query_one("#test-report").render()),
                                      [n.message for n in app._notifications]))
        report = str(dialog.query_one("#test-report").render())
        assert "✓ host key" in report and "✓ login" in report and "✓ file" in report and "✗" not in report
        assert srv.password not in report
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, JobsScreen)

        await highlight_job(app, pilot, "District SFTP")
        await pilot.press("r", "f")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
        await settle(app, pilot)
        counts = str(app.screen.query_one("#summary-counts").render())
        assert "Read 3 · added 2 · updated 0 · unchanged 0 · skipped 1" in counts, counts
        await pilot.press("escape", "escape")
        await settle(app, pilot)
        await pilot.press("m")
        await settle(app, pilot)
        table = app.screen.query_one("#manager-runs", DataTable)
        cells = [str(c) for c in table.get_row_at(0)]
        assert cells[1:4] == ["job Full", "District SFTP", "succeeded"] and cells[4].startswith("3 read"), cells
    for path in store.path.parent.glob(store.path.name + "*"):
        assert srv.password.encode() not in path.read_bytes(), path


async def test_a_failed_run_says_why_in_the_summary_list_and_job_manager(store, tmp_path):
    _, props = write_files(tmp_path, ROWS)
    add_job(store, "Missing [bold]x", path=tmp_path / "sis" / "gone.csv", props=props)
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        assert job_lines(app)[0].startswith("Missing [bold]x")   # data, shown as written
        await highlight_job(app, pilot, "Missing [bold]x")
        await pilot.press("r", "i")
        await wait_until(app, pilot, lambda: isinstance(app.screen, JobSummaryScreen))
        await settle(app, pilot)
        title = str(app.screen.query_one("#summary-title").render())
        assert "failed" in title and "gone.csv" in title and "no such file" in title, title
        await pilot.press("escape", "escape")
        await settle(app, pilot)
        assert "failed" in job_lines(app)[0]
        await pilot.press("m")
        await settle(app, pilot)
        cells = [str(c) for c in app.screen.query_one("#manager-runs", DataTable).get_row_at(0)]
        assert cells[1:4] == ["job Incr", "Missing [bold]x", "failed"]
        assert "no such file" in str(app.screen.query_one("#manager-detail").render())


async def test_job_manager_shows_scheduler_runs_and_missed_slots(store, tmp_path):
    from datetime import datetime, timedelta, timezone

    from patron_tui.services.jobs import next_run, run_due

    csv_path, props = write_files(tmp_path, ROWS)
    job = add_job(store, "Students", path=csv_path, props=props, schedule="mon-sun=full@02:00")
    slot, _ = next_run(job, datetime.now(timezone.utc) + timedelta(days=2))
    results = run_due(store, now=slot.astimezone(timezone.utc) + timedelta(minutes=1))
    add_job(store, "Staff", path=csv_path, props=props)
    assert [r["action"] for r in results][-1] == "run" and "missed" in [r["action"] for r in results]
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        await pilot.press("m")
        await settle(app, pilot)
        table = app.screen.query_one("#manager-runs", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert len(rows) == len(results)
        assert rows[0][1] == "job Full" and rows[0][3] == "succeeded" and rows[0][4].startswith("3 read")
        assert rows[0][7] == "sched"
        assert {r[3] for r in rows[1:]} == {"missed"} and {r[7] for r in rows[1:]} == {"sched"}
        assert "started by the scheduler" in str(app.screen.query_one("#manager-detail").render())
        await pilot.press("down")
        await pilot.pause()
        detail = str(app.screen.query_one("#manager-detail").render())
        assert "missed" in detail and "scheduled for" in detail
        # f: only one job's runs
        await pilot.press("f")
        await pilot.pause()
        assert app.screen.query_one("#manager-job", Select).has_focus
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("down", "enter")   # All jobs, Staff, Students
        await settle(app, pilot)
        assert table.has_focus and table.row_count == 0
        assert "0 runs of job Staff" in str(app.screen.query_one("#manager-title").render())
        await pilot.press("f", "enter")
        await pilot.pause()
        await pilot.press("down", "enter")
        await settle(app, pilot)
        assert table.row_count == len(results)
        assert f"{len(results)} runs of job Students" in str(app.screen.query_one("#manager-title").render())


async def test_key_login_asks_for_the_key_file_and_calls_the_secret_a_passphrase(store, tmp_path):
    app = make_app(store.path, operator="tester")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_jobs(app, pilot)
        await pilot.press("a")
        await settle(app, pilot)
        form = app.screen
        await type_text(app, pilot, "Keyed")
        await pilot.press("tab", "right", "space", "tab")
        await type_text(app, pilot, "sis.example.org/out")
        await pilot.press("tab", "tab")
        await type_text(app, pilot, "lib")
        await pilot.press("tab", "right", "space")   # login with: Key file
        await pilot.pause()
        assert form.query_one("#row-key-path").display
        assert str(form.query_one("#row-password > Label").render()) == "Key passphrase"
        await pilot.press("tab", "tab", "tab")
        await type_text(app, pilot, "out.csv")
        await pilot.press("tab")
        await type_text(app, pilot, "/srv/sis/students.properties")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert "needs the private key file" in err(form, "sftp_key_path")
        assert form.query_one("#job-key-path", Input).has_focus
        await pilot.press("shift+tab", "shift+tab", "left", "space")   # back to Password
        await pilot.pause()
        assert not form.query_one("#row-key-path").display
        assert str(form.query_one("#row-password > Label").render()) == "Password"
