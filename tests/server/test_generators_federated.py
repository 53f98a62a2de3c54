"""A Med-VAE trained federated on Flower's simulation engine: the sites' DP-SGD, ledger and DP
marginal tables unchanged, the published model calibrated and DP by the run's own records."""

from __future__ import annotations

import json

import pandas as pd

from fedsynth.data.conditions import satisfies
from fedsynth.evaluation.fidelity import marginal_distances
from fedsynth.model.generators import load_generator
from fedsynth.model.medvae import MedVAE
from fedsynth.server.budget import budget_report
from fedsynth.server.config import FederationConfig
from fedsynth.server.evidence import check_dp_claim
from fedsynth.server.simulation import simulate
from fedsynth.server.simulation_score import site_tables


def test_a_federated_medvae_run_is_dp_calibrated_and_honours_conditions(tmp_path) -> None:
    config = FederationConfig.from_dict(
        {
            "federation": {"rounds": 2, "min_sites": 3, "run_dir": str(tmp_path / "run"), "round_timeout": 300},
            "simulation": {"dataset": "whas500", "sites": 3},
            "site": {"privacy": {"target_epsilon": 4.0}, "training": {"local_epochs": 1}},
            "model": {"generator": "medvae", "hidden": [32, 16], "latent": 8},
        }
    )
    simulate(config)
    run_dir = config.run_dir
    assert json.loads((run_dir / "run.json").read_text())["config"]["model"]["generator"] == "medvae"
    model = load_generator(run_dir / "model")
    assert isinstance(model, MedVAE) and model.calibration_ is not None
    evidence = check_dp_claim(run_dir / "model", model)
    assert evidence.differentially_private, evidence.reason
    budget = budget_report(run_dir)
    assert len(budget["sites"]) == 3 and all(0 < s["epsilon_spent"] <= 4.0 for s in budget["sites"])
    rows = model.sample(600, conditions=["chf=1", "60<=age<=80"], seed=1)
    assert len(rows) == 600 and all(satisfies(rows, c).all() for c in model.resolve(["chf=1", "60<=age<=80"]))
    # Calibrated to the sites' DP tables: the rare shock column keeps a rare rate, not a coin flip.
    pooled = pd.concat([train for _, train, _ in site_tables(run_dir)], ignore_index=True)
    sample = model.sample(len(pooled), seed=2)
    tvd = [d["value"] for d in marginal_distances(pooled, sample, model.schema_).values() if d["statistic"] == "tv"]
    assert sum(tvd) / len(tvd) < 0.1 and sample["sho"].mean() < 0.2
