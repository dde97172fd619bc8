"""The Pilot helpers' wait on workers: a worker cancelled while it is awaited (an exclusive
worker replaced by a newer one, as the command palette's search is on every typed key) is no
failure; a worker that failed still is (tests/pilot.py workers_done)."""

from __future__ import annotations

import asyncio

import pytest
from textual.app import App
from textual.worker import WorkerFailed

from tests.pilot import workers_done


async def test_a_worker_replaced_by_a_newer_one_is_not_a_failure_a_failed_one_is():
    app = App()
    async with app.run_test() as pilot:
        gate = asyncio.Event()

        async def search() -> str:
            await gate.wait()
            return "found"

        first = app.run_worker(search, exclusive=True, group="search")
        await pilot.pause()
        waiting = asyncio.ensure_future(workers_done(app))     # awaits `first`...
        await pilot.pause()
        second = app.run_worker(search, exclusive=True, group="search")   # ...which this cancels
        gate.set()
        await waiting
        assert first.is_cancelled and second.result == "found"
        with pytest.raises(Exception):   # what app.workers.wait_for_complete() raised here
            await app.workers.wait_for_complete([first])

        async def broken() -> None:
            raise ValueError("broken")

        app.run_worker(broken, exit_on_error=False)
        with pytest.raises(WorkerFailed):
            await workers_done(app)
