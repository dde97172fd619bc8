"""Patrons section (being written)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content
from textual.widgets import Static

from patron_tui.ui.screens.base import SectionScreen


class PatronsScreen(SectionScreen):
    SECTION = "patrons"

    def compose_body(self) -> ComposeResult:
        yield Static(Content("Patrons"), id="patrons-body")
