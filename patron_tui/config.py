"""Where things live: the database path and the per-user console settings.

Database path: `--db`, else `$PATRON_TUI_DB`, else `<user data dir>/district.db`.
Console settings (the chosen theme, ...) are per user, in
`$PATRON_TUI_CONFIG_DIR` or the user config dir, as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import platformdirs

APP_NAME = "patron-tui"


def default_db_path() -> Path:
    env = os.environ.get("PATRON_TUI_DB")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME)) / "district.db"


def resolve_db_path(cli_value: str | None) -> Path:
    return Path(cli_value).expanduser() if cli_value else default_db_path()


def config_dir() -> Path:
    env = os.environ.get("PATRON_TUI_CONFIG_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_config_dir(APP_NAME))


def load_ui_settings() -> dict[str, Any]:
    path = config_dir() / "console.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_ui_settings(**changes: Any) -> None:
    settings = load_ui_settings()
    settings.update(changes)
    path = config_dir() / "console.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    tmp.replace(path)


HISTORY_LIMIT = 200


def load_history() -> list[str]:
    """Search statements this user ran, oldest first."""
    path = config_dir() / "statement_history.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [s for s in data if isinstance(s, str)] if isinstance(data, list) else []


def remember_statement(statement: str) -> list[str]:
    """Add a statement to the history (moved to the end if already there)."""
    statement = statement.strip()
    history = [s for s in load_history() if s != statement]
    if statement:
        history.append(statement)
    history = history[-HISTORY_LIMIT:]
    path = config_dir() / "statement_history.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(history, ensure_ascii=False, indent=0), encoding="utf-8")
    tmp.replace(path)
    return history
