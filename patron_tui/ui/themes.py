"""Themes are data: TOML files in the top-level `themes/` folder.

Each file holds the fields of a `textual.theme.Theme`. `$PATRON_TUI_THEMES`
may point at another folder. A broken file is reported, not fatal.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from pathlib import Path

from textual.theme import Theme

DEFAULT_THEME = "patron-dark"
_FIELDS = {f.name for f in fields(Theme)}


def themes_dir() -> Path:
    env = os.environ.get("PATRON_TUI_THEMES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "themes"


def load_themes(folder: Path | None = None) -> tuple[list[Theme], list[str]]:
    """All themes in the folder, and one problem line per file that failed."""
    folder = folder or themes_dir()
    themes: list[Theme] = []
    problems: list[str] = []
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            unknown = set(data) - _FIELDS
            if unknown:
                raise ValueError(f"unknown keys {', '.join(sorted(unknown))}")
            if "name" not in data or "primary" not in data:
                raise ValueError("needs at least 'name' and 'primary'")
            themes.append(Theme(**data))
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"{path}: {exc}")
    return themes, problems
