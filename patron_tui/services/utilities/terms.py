"""Terminology: the district's words for "Grade", "Location" and "2nd Location".

A talking-book library may call grades "Level" and homerooms "Homeroom": the settings
`term_grade`, `term_location` and `term_location2` rename them, and every utility title,
description, option label and report column header is written with placeholders
`{grade}`, `{location}`, `{location2}` that `Terms.apply` fills in.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

__all__ = ["Terms", "DEFAULT_TERMS"]


@dataclass(frozen=True)
class Terms:
    grade: str = "Grade"
    location: str = "Location"
    location2: str = "2nd Location"

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> "Terms":
        """The district's terms (a blank or missing setting keeps the default word)."""
        rows = dict(conn.execute(
            "SELECT key, value FROM settings WHERE key IN ('term_grade', 'term_location', 'term_location2')"
        ).fetchall())
        default = cls()
        return cls(
            grade=(rows.get("term_grade") or "").strip() or default.grade,
            location=(rows.get("term_location") or "").strip() or default.location,
            location2=(rows.get("term_location2") or "").strip() or default.location2,
        )

    def apply(self, text: str) -> str:
        """`text` with {grade}, {location}, {location2} replaced (other braces are left alone)."""
        return (text.replace("{location2}", self.location2)
                .replace("{location}", self.location)
                .replace("{grade}", self.grade))


DEFAULT_TERMS = Terms()
