"""The prompt SuperNode entry point: Flower's own SuperNode with its loop's sleeps capped."""

from __future__ import annotations

import subprocess
import sys
import time

from fedsynth.deploy.prompt_supernode import FLOWER_IDLE_POLL, IDLE_POLL, scaled_time


def test_the_loops_sleeps_are_shortened_and_everything_else_is_time() -> None:
    view = scaled_time(0.02)
    started = time.monotonic()
    view.sleep(3)  # Flower's idle poll: 0.06 s
    assert 0.06 <= time.monotonic() - started < 2.5
    assert view.time is time.time and view.monotonic is time.monotonic
    assert 0 < IDLE_POLL < FLOWER_IDLE_POLL


def test_it_is_flower_supernode_with_flowers_own_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedsynth.deploy.prompt_supernode", "--help"], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    text = done.stdout.decode()
    assert "--superlink" in text and "--auth-supernode-private-key" in text and "--isolation" in text
