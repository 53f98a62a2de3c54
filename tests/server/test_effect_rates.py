"""The coordinator's effect rates: computed once from the run's DP tables, recorded, sent to the sites."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fedsynth.data.schema import Schema
from fedsynth.model.generators import new_generator
from fedsynth.server.config import FederationConfig
from fedsynth.server.effect_rates import EFFECT_RATES_FILE, run_effect_rates
from fedsynth.server.run import RunDirectory
from tests.server.conftest import whas500_config


def _model(run_dir, schema):  # noqa: ANN001, ANN202
    return new_generator(whas500_config(run_dir, rounds=2).model).build(schema)


@pytest.mark.integration
def test_a_simulated_run_trained_at_the_rates_of_its_dp_tables(two_round_copy) -> None:
    # The shared run (federated defaults, 3 WHAS500 sites, 1 local epoch: 2 steps a round) asked for
    # rates; what it recorded is what the run's own tables give, one rate per covariate.
    run = RunDirectory(two_round_copy)
    schema = Schema.from_toml(two_round_copy / "schema.toml")
    recorded = json.loads((two_round_copy / EFFECT_RATES_FILE).read_text())
    model = _model(two_round_copy, schema)
    rates = run_effect_rates(run, model)
    assert rates is not None and recorded["source"] == "marginals.json"
    assert set(recorded["rates"]) == set(schema.covariates)  # WHAS500 has no categorical covariate
    live = model.network_.covariate_input.numpy() > 0
    assert list(recorded["rates"].values()) == pytest.approx(np.asarray(rates)[live].tolist())
    assert recorded["rates"]["age"] > 2 * recorded["rates"]["chf"]  # DP tables still see age's narrow spread


def test_no_complete_tables_no_rates_and_a_warning(whas500, tmp_path, caplog) -> None:
    _, schema = whas500
    model = _model(tmp_path, schema)
    with caplog.at_level(logging.WARNING):
        assert run_effect_rates(RunDirectory(tmp_path), model) is None
    assert "No complete DP marginal tables" in caplog.text and not (tmp_path / EFFECT_RATES_FILE).exists()
    uniform = new_generator(FederationConfig.from_dict({"model": {"survival_effect_rates": "uniform"}}).model)
    assert run_effect_rates(RunDirectory(tmp_path), uniform.build(schema)) is None
