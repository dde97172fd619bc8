"""patron_tui/testpoints.py: a point does nothing unless a variable names it, and acts the N-th
time it is reached (the first without N). The kill and pause behaviour in real processes is
proven by test_run_truth (kill), test_backup_part and test_bad_days (pause)."""

from __future__ import annotations

import os

import pytest

from patron_tui import testpoints


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    for var in (testpoints.PAUSE_AT, testpoints.PAUSE_FDS, testpoints.KILL_AT):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(testpoints, "_seen", {})


def _pipes(monkeypatch):
    reached_r, reached_w = os.pipe()
    go_r, go_w = os.pipe()
    monkeypatch.setenv(testpoints.PAUSE_FDS, f"{reached_w},{go_r}")
    return reached_r, reached_w, go_r, go_w


def test_without_the_variables_a_point_does_nothing():
    testpoints.reach("commit")     # no kill, no pause: the test goes on
    assert testpoints._seen == {}


def test_a_pause_point_says_its_name_and_waits_for_the_go_on_its_nth_time_only(monkeypatch):
    reached_r, reached_w, go_r, go_w = _pipes(monkeypatch)
    monkeypatch.setenv(testpoints.PAUSE_AT, "cli-message:2")
    try:
        os.write(go_w, b"x")              # the go is there already: the pause returns at once
        testpoints.reach("backup-written")   # another point: nothing
        testpoints.reach("cli-message")      # first time: nothing
        os.set_blocking(reached_r, False)
        with pytest.raises(BlockingIOError):
            os.read(reached_r, 64)
        testpoints.reach("cli-message")      # second time: it pauses
        assert os.read(reached_r, 64) == b"cli-message\n"
        os.write(go_w, b"x")              # were it to pause again, it would not hang the test
        testpoints.reach("cli-message")      # third: nothing again
        with pytest.raises(BlockingIOError):
            os.read(reached_r, 64)
    finally:
        for fd in (reached_r, reached_w, go_r, go_w):
            os.close(fd)


def test_a_kill_point_counts_only_its_own_name(monkeypatch):
    killed = []
    monkeypatch.setattr(testpoints.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setenv(testpoints.KILL_AT, "committed:2")
    for name in ("commit", "committed", "finish", "committed", "committed"):
        testpoints.reach(name)
    assert killed == [(os.getpid(), testpoints.signal.SIGKILL)]
