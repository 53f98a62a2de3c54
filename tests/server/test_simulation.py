"""Flower's real simulation engine (Ray): 3 virtual sites, DP rounds, checkpoints, resume, refusal."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from fedsynth.client.slope_release import head_slope_round
from fedsynth.model.head_slope import SLOPE_BOUNDS
from fedsynth.model.mcm import MCM
from fedsynth.server.run import RunDirectory
from fedsynth.server.simulation import simulate
from fedsynth.server.simulation_score import score_simulated_run, site_tables
from tests.client.rdp_reference import independent_epsilon
from tests.server.conftest import whas500_config

pytestmark = pytest.mark.integration


def test_federated_rounds_then_resume_past_the_budget_is_refused(two_round_copy) -> None:
    run_dir = two_round_copy
    run = RunDirectory(run_dir)
    # After round 2 each site released its slope score once; the published model is the slope's.
    assert run.latest_checkpoint().round == head_slope_round(2)
    # Both rounds ran under SecAgg+ on the simulation engine (its node state kept between stages).
    assert (run_dir / "logs" / "train.log").read_text().count("Secure aggregation completed") == 2
    assert json.loads((run_dir / "run.json").read_text())["config"]["secure_aggregation"]["enabled"] is True
    records = run.budget_records()
    # Before round 1 each site released its marginal tables once (round 0): one Gaussian step at q = 1.
    released = [r for r in records if r["round"] == 0]
    assert [(r["status"], r["mechanism"], r["sample-rate"], r["steps"]) for r in released] == [
        ("ok", "marginals", 1.0, 1)
    ] * 3
    slopes = [r for r in records if r.get("mechanism") == "head-slope"]
    assert [(r["status"], r["round"], r["sample-rate"], r["steps"]) for r in slopes] == [
        ("ok", head_slope_round(2), 1.0, 1)
    ] * 3
    records = [r for r in records if r["round"] >= 1 and "mechanism" not in r]
    assert [r["status"] for r in records] == ["ok"] * 6
    assert sorted({r["site"] for r in records}) == ["site-0", "site-1", "site-2"]
    for site in ("site-0", "site-1", "site-2"):
        (marginal,) = [r for r in released if r["site"] == site]
        (slope,) = [r for r in slopes if r["site"] == site]
        spent = [r["epsilon"] for r in (*records, slope) if r["site"] == site]
        assert spent[0] < spent[1] < spent[2] <= 2.0  # planned for 2 rounds and the slope: it reaches the target
        assert spent[2] > 2.0 - 0.05
        # The site's reported epsilon is Opacus RDP of its whole history: tables, rounds, slope.
        history = [
            (r["noise-multiplier"], r["sample-rate"], r["steps"])
            for r in (marginal, *records, slope)
            if r["site"] == site
        ]
        assert spent[2] == pytest.approx(independent_epsilon(history, marginal["delta"]), abs=1e-6)
    slope_document = json.loads((run_dir / "head_slope.json").read_text())
    assert slope_document["complete"] and SLOPE_BOUNDS[0] <= slope_document["slope"] <= SLOPE_BOUNDS[1]
    trained, scaled = MCM.load(run_dir / "checkpoints" / "round-0002"), MCM.load(run_dir / "model")
    effects = trained.network_.survival_head.effects.weight.detach()
    torch.testing.assert_close(
        scaled.network_.survival_head.effects.weight.detach(),
        torch.stack([effects[0], effects[1] * slope_document["slope"]]),
    )
    document = json.loads((run_dir / "marginals.json").read_text())
    assert document["complete"] and [s["site"] for s in document["sites"]] == ["site-0", "site-1", "site-2"]
    consistent = document["consistent_tables"]
    assert set(consistent) == set(document["noisy_tables"]) and all(min(np.ravel(t)) >= 0 for t in consistent.values())
    model = MCM.load(run_dir / "model")
    assert model.differentially_private_ and len(model.sample(50, seed=1)) == 50

    # Scoring samples the pooled training size by default (the protocol's), any size on request.
    pooled = sum(len(train) for _, train, _ in site_tables(run_dir))
    score, sample = score_simulated_run(run_dir, seed=1)
    assert score.n_synthetic == len(sample) == pooled and score.differentially_private
    assert [s.site for s in score.sites] == ["site-0", "site-1", "site-2"]
    assert 0.0 < score.correlation_gap_mean <= score.correlation_gap_max <= 2.0  # |r - r'| of column pairs
    larger, sample = score_simulated_run(run_dir, seed=1, n_synthetic=2 * pooled)
    assert larger.n_synthetic == len(sample) == 2 * pooled

    # The coordinator asks for a third round: it resumes after round 2, every site refuses
    # (its plan was for 2 rounds and its budget is spent), and the run ends without a crash.
    simulate(whas500_config(run_dir, rounds=3))
    records = run.budget_records()
    third = [r for r in records if r["round"] == 3]
    assert len(third) == 3 and all(r["status"] == "error" for r in third)
    assert all("refused: round 3" in r["reason"] for r in third)
    # A resumed run has new node ids, so the refusal itself names the site.
    named = sorted(re.search(r"site '([^']+)' refused", r["reason"]).group(1) for r in third)
    assert named == ["site-0", "site-1", "site-2"]
    assert run.latest_checkpoint().round == head_slope_round(2)  # no site returned weights: nothing new
