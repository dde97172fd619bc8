"""Helpers for Pilot tests: let the app work in bounded rounds (never a clock)."""

from __future__ import annotations

import asyncio

from textual import events
from textual.keys import _character_to_key
from textual.widgets import Input
from textual.worker import WorkerCancelled

from patron_tui.ui.themes import load_themes


async def workers_done(app) -> None:
    """`app.workers.wait_for_complete()`, except that a worker cancelled while it is awaited is
    no failure: an exclusive worker replaced by a newer one (the command palette's search, once
    per typed key) is cancelled by design, at a moment that depends on the machine's load. A
    worker that failed still raises."""
    results = await asyncio.gather(*[w.wait() for w in list(app.workers)], return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, WorkerCancelled):
            raise result


async def settle(app, pilot, rounds: int = 3) -> None:
    """A few rounds of: let messages flow, wait for the workers."""
    for _ in range(rounds):
        await pilot.pause()
        await workers_done(app)
    await pilot.pause()


async def wait_until(app, pilot, condition, *, limit: int = 400, why=lambda: "") -> None:
    """Let the app work until `condition()` holds (bounded by rounds, not a clock)."""
    for _ in range(limit):
        if condition():
            return
        await pilot.pause(0.05)
        await workers_done(app)
    assert condition(), why()


async def type_text(app, pilot, text: str, *, limit: int = 400) -> None:
    """Type `text` into the focused Input, key by key, as a fast typist or a terminal without
    bracketed paste sends it: every character is the same Key event `pilot.press` sends (so the
    app's bindings, the Input and each keystroke's Input.Changed handling all run, in order);
    only the CPU-idle wait `pilot.press` makes after *each* key (two rounds of at least 20 ms,
    often many more while the screen re-renders) is replaced by one wait on a condition: the
    Input holds the typed text."""
    target = app.focused
    assert isinstance(target, Input), f"type_text needs a focused Input, not {target!r}"
    at = target.cursor_position
    expected = target.value[:at] + text + target.value[at:]
    for ch in text:
        key = ch if ch.isalnum() else _character_to_key(ch)
        event = events.Key(key, ch)
        event.set_sender(app)
        app.post_message(event)
    await wait_until(app, pilot, lambda: target.value == expected,
                     limit=limit, why=lambda: f"typed {text!r}: the Input holds {target.value!r}")
    await pilot.pause()


# The shipped themes (four; test_ui_frame checks they ship). A theme is colours only
# (themes/*.toml), so one keyboard walkthrough in the default theme plus `in_every_theme` at
# each screen it reaches checks every theme without walking through again once per theme.
THEMES = tuple(t.name for t in load_themes()[0])


def screen_text(app) -> list[str]:
    """The characters on the terminal for the shown screen, line by line (no colour)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def layout_of(app) -> list[tuple[object, object]]:
    """Every widget of the shown screen with the region it holds on the terminal."""
    return [(widget, widget.region) for widget in app.screen.walk_children(with_self=True)]


async def in_every_theme(app, pilot, check=lambda: None) -> None:
    """The shown screen, in the state it is in, in each shipped theme: every widget holds the
    same region, the terminal shows the same characters and the same widget has the focus as
    in the theme the walkthrough runs in (nothing moves, nothing is cut), and `check()` (the
    screen's own fit and focus assertions) holds in each. Ends back in the starting theme
    (checked last, so each call restyles four times, not five)."""
    start = app.theme
    await pilot.pause()
    layout, text, focused = layout_of(app), screen_text(app), app.focused
    for theme in [t for t in THEMES if t != start] + [start]:
        app.theme = theme
        await pilot.pause()
        assert app.theme == theme
        assert layout_of(app) == layout, f"{theme}: a widget moved or changed size"
        assert screen_text(app) == text, f"{theme}: the screen shows other characters"
        assert app.focused is focused, f"{theme}: the focus moved"
        check()


async def from_palette(app, pilot, typed: str, command: str) -> None:
    """Ctrl+P, type `typed`, and Enter once the palette highlights `command` (its search runs in
    a worker and fills the list in batches: this waits on the list, not on a clock)."""
    from textual.command import CommandList, CommandPalette

    await pilot.press("ctrl+p")
    await wait_until(app, pilot, lambda: isinstance(app.screen, CommandPalette) and isinstance(app.focused, Input))
    await type_text(app, pilot, typed)
    await settle(app, pilot)
    commands = app.screen.query_one(CommandList)

    def top() -> str:
        if not commands.option_count or commands.highlighted is None:
            return ""
        return str(commands.get_option_at_index(commands.highlighted).prompt)

    await wait_until(app, pilot, lambda: command.lower() in top().lower(), why=lambda: f"palette shows {top()!r}")
    await pilot.press("enter")
