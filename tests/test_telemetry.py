"""Flower's usage telemetry is off wherever fedsynth runs, unless an operator turns it on."""

from __future__ import annotations

import os
import subprocess
import sys

SETTING = "import fedsynth, flwr.supercore.telemetry as t; print(t.FLWR_TELEMETRY_ENABLED)"
# "disabled" is what Flower's event returns when it sends nothing.
EVENT = SETTING + "; print(t.create_event(t.EventType.FLWR_CLIENTAPP_RUN_ENTER, None))"


def _probe(code: str, **env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "FLWR_TELEMETRY_ENABLED"} | env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_importing_fedsynth_turns_flowers_telemetry_off_before_flower_reads_it() -> None:
    assert _probe(EVENT) == ["0", "disabled"]


def test_an_operators_explicit_choice_is_kept() -> None:
    assert _probe(SETTING, FLWR_TELEMETRY_ENABLED="1") == ["1"]
