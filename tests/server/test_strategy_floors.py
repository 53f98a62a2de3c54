"""Every train instruction carries each site's largest recorded epsilon, its ledger floor."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from fedsynth.client.app import LEDGER_FLOORS
from fedsynth.data.datasets import bundled_schema
from fedsynth.model.config import MCMConfig
from fedsynth.server.run import RunDirectory
from fedsynth.server.strategy import mcm_fedavg

pytestmark = pytest.mark.usefixtures("server_identity")


class _TwoNodes:
    """The one thing FedAvg asks of Flower's Grid when it builds train instructions: who is connected."""

    def get_node_ids(self) -> list[int]:
        return [11, 12]


def test_train_instructions_carry_the_largest_epsilon_recorded_per_site(tmp_path) -> None:
    schema = bundled_schema("whas500")
    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", schema, {})
    ok = {"status": "ok", "node_id": 11}
    run.append_budget(
        [
            {**ok, "round": 1, "site": "site-a", "epsilon": 1.8},
            {**ok, "round": 1, "site": "site-b", "epsilon": 0.9},
            # A reset site-a later reported less: the floor keeps the largest.
            {**ok, "round": 2, "site": "site-a", "epsilon": 0.7},
            {"status": "error", "round": 2, "node_id": 12, "reason": "refused: ... epsilon from 0.9 to 9.0"},
        ]
    )
    strategy, _ = mcm_fedavg(run, schema, MCMConfig(hidden=16, n_bins=16), [("w", (2,))], round_offset=2)
    arrays = ArrayRecord({"weights": torch.zeros(2)})
    messages = list(strategy.configure_train(1, arrays, ConfigRecord({"run-id": "r1"}), _TwoNodes()))
    assert len(messages) == 2
    for message in messages:
        config = message.content["config"]
        assert json.loads(str(config[LEDGER_FLOORS])) == {"site-a": 1.8, "site-b": 0.9}
        assert config["server-round"] == 3  # the resumed run's global round
