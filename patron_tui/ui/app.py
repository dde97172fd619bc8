"""The console frame: sections as modes, the run engine, the live log.

`make_app` is the one factory the CLI and the tests use.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from patron_tui.config import load_ui_settings, save_ui_settings
from patron_tui.runs import RunEngine
from patron_tui.store import Store
from patron_tui.textsafe import visible
from patron_tui.ui.logbuffer import LogBuffer
from patron_tui.ui.screens.home import HomeScreen
from patron_tui.ui.screens.key_help import KeyHelpScreen
from patron_tui.ui.screens.patrons import PatronsScreen
from patron_tui.ui.screens.batch import BatchScreen
from patron_tui.ui.screens.sections import JobsScreen, LogScreen
from patron_tui.ui.screens.utilities import UtilitiesScreen
from patron_tui.ui.themes import DEFAULT_THEME, load_themes
from patron_tui.ui.widgets.header import SECTIONS
from patron_tui.ui.widgets.log_pane import LogPane


class PatronApp(App[int]):
    TITLE = "patron-tui"
    CSS_PATH = "app.tcss"
    MODES = {
        "home": HomeScreen,
        "patrons": PatronsScreen,
        "batch": BatchScreen,
        "jobs": JobsScreen,
        "utilities": UtilitiesScreen,
        "log": LogScreen,
    }
    DEFAULT_MODE = "home"
    BINDINGS = [
        *[
            Binding(key, f"section('{mode}')", label, show=False, id=f"section.{mode}")
            for mode, key, label in SECTIONS
        ],
        Binding("question_mark", "key_help", "Keys", id="app.keys"),
        Binding("ctrl+l", "toggle_log", "Log pane", id="app.toggle_log"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(
        self,
        store: Store,
        *,
        theme: str | None = None,
        notice: str | None = None,
        pool_size: int | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.log_buffer = LogBuffer()
        self.log_visible = True
        self.engine: RunEngine | None = None
        self._pool_size = pool_size
        self._requested_theme = theme
        self._notice = notice
        self.theme_problems: list[str] = []
        themes, self.theme_problems = load_themes()
        for t in themes:
            self.register_theme(t)

    # -- start-up and shutdown ---------------------------------------------------------
    def on_mount(self) -> None:
        wanted = self._requested_theme or load_ui_settings().get("theme") or DEFAULT_THEME
        if wanted not in self.available_themes:
            self.notify(f"Unknown theme {visible(wanted)!r}; using {DEFAULT_THEME}.", severity="warning",
                        markup=False)
            wanted = DEFAULT_THEME
        self.theme = wanted
        if self._requested_theme:
            save_ui_settings(theme=wanted)
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.engine = RunEngine(self.store, pool_size=self._pool_size)
        self.engine.subscribe(self.log_buffer.accept)
        for problem in self.theme_problems:
            self.log_buffer.add("warning", f"theme file skipped: {problem}")
        for run_id in self.engine.interrupted_on_start:
            self.log_buffer.add("warning", f"run {run_id} was left running by a stopped process: marked interrupted",
                                run_id=run_id, code="interrupted")
        self.set_interval(0.1, self._drain_log)
        if self._notice:
            self.notify(visible(self._notice), timeout=8, markup=False)

    def _remember_theme(self, theme) -> None:
        save_ui_settings(theme=theme.name)

    def on_unmount(self) -> None:
        if self.engine is not None:
            # closed mid-run: each run commits or rolls back whole, and is marked interrupted
            self.engine.interrupt_active("the console was closed while it ran")
            self.engine.shutdown(cancel_running=True)

    # -- the live log ---------------------------------------------------------------------
    def _drain_log(self) -> None:
        new = self.log_buffer.drain()
        if new:
            for pane in self.screen.query(LogPane):
                pane.extend(new)

    # -- runs ----------------------------------------------------------------------------
    def start_check(self) -> None:
        self._start_check()

    @work(thread=True, group="runs", exit_on_error=False)
    def _start_check(self) -> None:
        from patron_tui.services.check import CHECK_KIND, CHECK_TITLE, check_database

        assert self.engine is not None
        handle = self.engine.start(CHECK_KIND, CHECK_TITLE, check_database)
        self.call_from_thread(self.notify, f"Run {handle.run_id}: {CHECK_TITLE} started.", markup=False)

    def open_import(self) -> None:
        from patron_tui.ui.screens.import_run import ImportScreen

        if self.current_mode != "jobs":
            self.switch_mode("jobs")
        self.push_screen(ImportScreen())

    def open_job_manager(self) -> None:
        from patron_tui.ui.screens.job_manager import JobManagerScreen

        if self.current_mode != "jobs":
            self.switch_mode("jobs")
        self.push_screen(JobManagerScreen())

    def open_job_form(self) -> None:
        if self.current_mode != "jobs":
            self.switch_mode("jobs")
        self.call_after_refresh(self._add_job)

    def _add_job(self) -> None:
        if isinstance(self.screen, JobsScreen):
            self.screen.action_add_job()

    def action_open_audit(self, patron: str | None = None) -> None:
        from patron_tui.ui.screens.audit import AuditScreen

        self.push_screen(AuditScreen(patron))

    def action_open_operators(self) -> None:
        from patron_tui.ui.screens.operators import OperatorsScreen

        self.push_screen(OperatorsScreen())

    def cancel_runs(self) -> None:
        if self.engine is None:
            return
        active = self.engine.active_runs()
        for run_id in active:
            self.engine.cancel(run_id)
        self.notify(f"Cancelling {len(active)} run(s)." if active else "No run is running.")

    # -- actions ---------------------------------------------------------------------------
    def action_section(self, mode: str) -> None:
        self.switch_mode(mode)

    def action_toggle_log(self) -> None:
        self.log_visible = not self.log_visible
        for pane in self.screen.query(LogPane):
            if not pane.has_class("-full"):
                pane.set_class(not self.log_visible, "-hidden")

    def action_key_help(self) -> None:
        if isinstance(self.screen, KeyHelpScreen):
            return
        keys: list[tuple[str, str]] = []
        seen: set[str] = set()
        # the screen's own footer keys first, then the focused widget's, then the rest
        def rank(item) -> int:
            node, binding = item[1].node, item[1].binding
            if node is self.screen:
                return 0 if binding.show else 2
            return 3 if node is self else 1

        ranked = sorted(self.screen.active_bindings.items(), key=rank)
        for key, active in ranked:
            binding = active.binding
            if not binding.description or binding.description in seen and binding.action.startswith("section"):
                continue
            keys.append((self.get_key_display(binding), binding.description))
            seen.add(binding.description)
        title = type(self.screen).__name__.removesuffix("Screen")
        self.push_screen(KeyHelpScreen(title, keys))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, key, label in SECTIONS:
            yield SystemCommand(f"Go to {label}", f"Open the {label} section (key {key})",
                                lambda m=mode: self.action_section(m))
        yield SystemCommand("Toggle log pane", "Show or hide the live log pane (Ctrl+L)", self.action_toggle_log)
        yield SystemCommand("Import a patron file", "Import a patron CSV file with a properties file (Jobs, i)",
                            self.open_import)
        yield SystemCommand("Jobs: scheduled patron updates", "The job list: add, edit, test, run (Jobs, 4)",
                            lambda: self.action_section("jobs"))
        yield SystemCommand("Add a scheduled job", "A new scheduled patron update job (Jobs, a)",
                            self.open_job_form)
        yield SystemCommand("Job Manager", "Every run of every scheduled job and its job summary (Jobs, m)",
                            self.open_job_manager)
        yield SystemCommand("Audit trail", "Who changed what, when, in which run, from what to what (Home, a)",
                            self.action_open_audit)
        yield SystemCommand("Operators", "Operators and their permissions: add, edit, remove (Home, o)",
                            self.action_open_operators)
        yield SystemCommand("Check database", "Run the troubleshooting check of the patron database",
                            self.start_check)
        yield SystemCommand("Key help", "Keys of the current screen (?)", self.action_key_help)


def make_app(
    db_path: str | Path,
    *,
    theme: str | None = None,
    notice: str | None = None,
    operator: str | None = None,
    pool_size: int | None = None,
) -> PatronApp:
    store = Store(db_path, operator=operator)
    return PatronApp(store, theme=theme, notice=notice, pool_size=pool_size)


def run_console(db_path: Path, *, theme: str | None = None, pool_size: int | None = None) -> int:
    """Open the console; with no database yet, build the demo district first."""
    import sys

    from patron_tui.store import StoreError

    notice = None
    if not Path(db_path).exists():
        from patron_tui.services.demo import build_demo

        print(f"No patron database at {db_path}: creating a demo district…", file=sys.stderr)
        stats = build_demo(db_path, patrons=2000, seed=1)
        notice = (f"No database was found, so a demo district with {stats['patrons']:,} patrons "
                  f"was created at {db_path}.")
    try:
        Store(db_path).connect().close()
    except StoreError as exc:
        print(f"patron-tui: {exc}", file=sys.stderr)
        return 2
    app = make_app(db_path, theme=theme, notice=notice, pool_size=pool_size)
    from patron_tui.ui.hangup import install as handle_hangup   # SIGHUP/SIGTERM mid-run

    handle_hangup(app)
    app.run()
    return 0
