"""Helpers for Pilot tests: let the app work in bounded rounds (never a clock)."""

from __future__ import annotations


async def settle(app, pilot, rounds: int = 3) -> None:
    """A few rounds of: let messages flow, wait for the workers."""
    for _ in range(rounds):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


async def wait_until(app, pilot, condition, *, limit: int = 400, why=lambda: "") -> None:
    """Let the app work until `condition()` holds (bounded by rounds, not a clock)."""
    for _ in range(limit):
        if condition():
            return
        await pilot.pause(0.05)
        await app.workers.wait_for_complete()
    assert condition(), why()
