"""The run config keys of fedsynth's Flower app: one list, declared where `flwr run` reads it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedsynth.deploy.local import LoopbackFederation
from fedsynth.server.app_config import APP_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def test_the_checkout_app_declares_every_run_config_key_the_server_reads() -> None:
    # Flower refuses a --run-config key the app does not declare, so `flwr run .` from a source
    # checkout could not ask for an audit if pyproject.toml missed `task`.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert set(declared) == set(APP_CONFIG)
    assert {k: v for k, v in declared.items() if k != "federation-config"} == {
        k: v for k, v in APP_CONFIG.items() if k != "federation-config"
    }


def test_a_loopback_submission_refuses_a_key_the_app_does_not_declare(tmp_path) -> None:
    federation = LoopbackFederation(tmp_path / "deployment")  # nothing started
    with pytest.raises(ValueError, match=r"\['tsk'\] are not the app's"):
        federation.submit(tmp_path / "federation.toml", run_config={"tsk": "audit"})
