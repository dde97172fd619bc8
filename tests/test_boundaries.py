"""The core (services, store, runs, models) runs without Textual, and the
import contracts in pyproject.toml hold."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CORE_IMPORTS = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import patron_tui.services, patron_tui.store
    imported = []
    for package in (patron_tui.services, patron_tui.store):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
            imported.append(info.name)
    import patron_tui.runs, patron_tui.models
    leaked = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
    print("\\n".join(imported))
    assert "textual" not in sys.modules, leaked
    """
)


def test_core_imports_without_textual():
    result = subprocess.run(
        [sys.executable, "-c", CORE_IMPORTS], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    # the walk really reached the modules (an empty walk would prove nothing)
    assert {"patron_tui.services.check", "patron_tui.store.changeset", "patron_tui.store.runlog"} <= imported


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"import-linter is not installed next to {sys.executable}"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
