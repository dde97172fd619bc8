"""Test Server (Jobs → t, or Ctrl+T in the job form): every check of the job's source and
properties file, each with ✓ or ✗ and its sentence.

The test runs on a worker thread (`services.jobs.test_job`). When the SFTP server's host key
is not known yet, its SHA256 fingerprint is shown and `a` accepts it after a typed "accept"
(`services.jobs.sftp.accept_host_key`, which accepts only if the server still shows that key);
the test then runs again. The password typed in the form is used for the test without being
stored; otherwise the stored one is, and neither is ever shown.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from patron_tui.textsafe import visible
from patron_tui.ui.screens.query_dialogs import DIALOG_CSS, ConfirmScreen


class _FormSecrets:
    """The secret source a test uses: the typed one, else the stored one (by the saved name)."""

    def __init__(self, db_path, typed: str | None, stored_name: str | None) -> None:
        self.db_path = db_path
        self.typed = typed
        self.stored_name = stored_name

    def get(self, job_name: str):
        if self.typed:
            from patron_tui.services.jobs.secrets import Secret

            return Secret(self.typed)
        from patron_tui.services.jobs.secrets import default_secret_store

        return default_secret_store(self.db_path).get(self.stored_name or job_name)


def report_text(report) -> Text:
    """The checks, one paragraph each: ✓/✗, the step, the sentence (data, never markup)."""
    text = Text()
    for check in report.checks:
        mark = "✓" if check.ok else "✗"
        text.append(f"{mark} {visible(check.step)}: ", "bold")
        text.append(visible(check.sentence))
        text.append("\n")
    if not report.checks:
        text.append("No check ran.\n")
    return text


class TestServerScreen(ModalScreen[None]):
    """The checks of one job's source; `a` accepts an unknown SFTP host key."""

    __test__ = False   # not a pytest test class

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("a", "accept_key", "Accept host key"),
        Binding("t", "retest", "Test again"),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(name="TestServerScreen") + """
    TestServerScreen > Vertical { width: 78; }
    TestServerScreen #test-checks { height: auto; max-height: 14; }
    TestServerScreen #test-fingerprint { height: auto; text-style: bold; }
    """

    def __init__(self, job, *, typed_secret: str | None = None, stored_name: str | None = None) -> None:
        super().__init__()
        self.job = job
        self.typed_secret = typed_secret
        self.stored_name = stored_name or job.name
        self.report = None
        self.unknown_fingerprint: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="test-frame"):
            yield Static(Content(f"Testing {visible(self.job.source_label())}…"), id="test-where",
                         classes="dialog-help")
            with VerticalScroll(id="test-checks"):
                yield Static(Content("Running the checks…"), id="test-report")
            yield Static(Content(""), id="test-fingerprint")
            yield Static(Content("t tests again · Esc closes"), id="test-help", classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#test-frame").border_title = Content(f"Test Server: {visible(self.job.name)}")
        self.query_one("#test-checks").focus()
        self.run_test()

    def action_retest(self) -> None:
        self.query_one("#test-report", Static).update(Content("Running the checks…"))
        self.run_test()

    @work(thread=True, exclusive=True, exit_on_error=False, group="test-server")
    def run_test(self) -> None:
        from patron_tui.services.jobs import test_job

        db_path = self.app.store.path
        unknown = None
        try:
            if self.job.source == "sftp":
                report = test_job(self.job, _FormSecrets(db_path, self.typed_secret, self.stored_name),
                                  db_path=db_path)
                if report.fingerprint:
                    from patron_tui.services.jobs.sftp import KnownHosts, known_hosts_path

                    known = KnownHosts(known_hosts_path(db_path))
                    if not known.fingerprints(self.job.sftp_host, self.job.sftp_port):
                        unknown = report.fingerprint
            else:
                report = test_job(self.job, db_path)
        except Exception as exc:   # a test that cannot run says why; the console stays up
            from patron_tui.services.jobs import TestReport

            report = TestReport()
            report.add("test", False, f"The test could not run: {type(exc).__name__}: {exc}")
        self.app.call_from_thread(self.show, report, unknown)

    def show(self, report, unknown: str | None) -> None:
        self.report = report
        self.unknown_fingerprint = unknown
        self.query_one("#test-report", Static).update(report_text(report))
        verdict = "Every check passed." if report.ok else "Some checks failed: see ✗ above."
        self.query_one("#test-where", Static).update(Content(f"{visible(self.job.source_label())} — {verdict}"))
        fp = self.query_one("#test-fingerprint", Static)
        help_ = self.query_one("#test-help", Static)
        if unknown:
            fp.update(Content(f"Unknown host key {visible(unknown)}: compare it with the one the server's "
                              "administrator gives you."))
            help_.update(Content("a accepts this host key (type accept) · t tests again · Esc closes"))
        else:
            fp.update(Content(f"Host key {visible(report.fingerprint)} is accepted." if report.fingerprint else ""))
            help_.update(Content("t tests again · Esc closes"))

    def action_accept_key(self) -> None:
        fingerprint = self.unknown_fingerprint
        if not fingerprint:
            self.notify("There is no unknown host key to accept.", markup=False)
            return
        question = (f"Accept the host key {visible(fingerprint)} for {visible(self.job.sftp_host)}:"
                    f"{self.job.sftp_port}? Only if the server's administrator confirms this fingerprint.")
        self.app.push_screen(ConfirmScreen(question, "accept"),
                             lambda ok: self.accept(fingerprint) if ok else None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="test-server-accept")
    def accept(self, fingerprint: str) -> None:
        from patron_tui.services.jobs.sftp import SftpError, accept_host_key

        try:
            accepted = accept_host_key(self.job, fingerprint, db_path=self.app.store.path)
        except SftpError as exc:
            self.app.call_from_thread(self.notify, visible(exc.sentence), severity="error", markup=False,
                                      timeout=10)
            return
        self.app.call_from_thread(self.notify, f"Host key {visible(accepted)} accepted.", markup=False)
        self.app.call_from_thread(self.action_retest)
