"""One DP simulation run shared by the tests that resume it (each resumes its own copy)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedsynth.server.config import FederationConfig
from fedsynth.server.simulation import simulate


def whas500_config(run_dir: Path, rounds: int, min_sites: int = 3) -> FederationConfig:
    """3 WHAS500 sites, epsilon 2 each planned over ``rounds`` rounds of one local epoch, a small model."""
    return FederationConfig.from_dict(
        {
            "federation": {"rounds": rounds, "min_sites": min_sites, "run_dir": str(run_dir), "round_timeout": 300},
            "simulation": {"dataset": "whas500", "sites": 3},
            "site": {"privacy": {"target_epsilon": 2.0}, "training": {"local_epochs": 1}},
            "model": {"hidden": 16, "n_bins": 16},
        }
    )


@pytest.fixture(scope="session")
def two_round_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-round run on Flower's simulation engine: every site's budget planned and spent.

    Its rounds ran under SecAgg+ (the coordinator held only the sums); runs resumed from it by
    the tests are plain, as a federation that turns secure aggregation off would be."""
    run_dir = tmp_path_factory.mktemp("two-rounds") / "run"
    document = whas500_config(run_dir, rounds=2).to_document()
    document["secure_aggregation"] = {"enabled": True}
    simulate(FederationConfig.from_dict(document))
    return run_dir


@pytest.fixture()
def two_round_copy(two_round_run: Path, tmp_path: Path) -> Path:
    """This test's own copy of the 2-round run (its sites' ledgers included), to resume or damage."""
    return Path(shutil.copytree(two_round_run, tmp_path / "run"))
