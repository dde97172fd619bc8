"""patron_tui: a keyboard-driven console for keeping a library's patron records right."""

__version__ = "0.1.0"
