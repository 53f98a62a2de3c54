"""The coordinator's head centres: set once from the run's DP tables, recorded, carried in the weights."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from fedsynth.model.generators import load_generator, new_generator
from fedsynth.model.table_moments import table_centres
from fedsynth.server.config import FederationConfig
from fedsynth.server.head_centre import HEAD_CENTRE_FILE, run_head_centre
from fedsynth.server.run import RunDirectory
from tests.server.conftest import whas500_config


def _covariate_inputs(model) -> list[int]:  # noqa: ANN001
    return [i for i, c in enumerate(model.network_.covariate_input.tolist()) if c]


@pytest.mark.integration
def test_a_simulated_run_centres_its_head_on_its_dp_tables(two_round_copy) -> None:
    # The shared run (federated defaults, 3 WHAS500 sites over Ray): the published model, trained
    # by the sites and averaged by the coordinator, holds the centres its own DP tables give.
    run = RunDirectory(two_round_copy)
    target = run.marginal_target()
    model = load_generator(two_round_copy / "model")
    expected = table_centres(model.network_.layout, target)
    torch.testing.assert_close(model.network_.covariate_centre(), torch.tensor(expected, dtype=torch.float32))
    recorded = json.loads((two_round_copy / HEAD_CENTRE_FILE).read_text())
    assert recorded["source"] == "marginals.json" and set(recorded["centres"]) == set(model.schema_.covariates)
    assert list(recorded["centres"].values()) == pytest.approx([expected[i] for i in _covariate_inputs(model)])
    assert max(abs(v - 0.5) for v in recorded["centres"].values()) > 0.2  # WHAS500's rare binaries


def test_no_complete_tables_no_centres_and_a_warning(whas500, tmp_path, caplog) -> None:
    _, schema = whas500
    model = new_generator(whas500_config(tmp_path, rounds=2).model).build(schema)
    with caplog.at_level(logging.WARNING):
        assert run_head_centre(RunDirectory(tmp_path), model) is None
    assert "centres covariates at 0.5" in caplog.text and not (tmp_path / HEAD_CENTRE_FILE).exists()
    assert torch.all(model.network_.covariate_centre() == 0.5)
    marginal = new_generator(FederationConfig.from_dict({"model": {"survival_centre": "marginal"}}).model)
    assert run_head_centre(RunDirectory(tmp_path), marginal.build(schema)) is None
