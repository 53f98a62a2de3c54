"""Membership inference: the summary against exact answers, the distance attack against known cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedsynth.data.datasets import load_dataset
from fedsynth.privacy.membership import distance_attack, summarise_attack, tpr_at_fpr


def test_summary_matches_sklearn_auc_and_exact_tpr() -> None:
    rng = np.random.default_rng(0)
    members, non_members = rng.normal(0.5, 1.0, 3000), rng.normal(0.0, 1.0, 3000)
    result = summarise_attack("toy", members, non_members)
    labels = np.r_[np.ones(3000), np.zeros(3000)]
    assert result.auc == pytest.approx(roc_auc_score(labels, np.r_[members, non_members]), abs=1e-12)
    low, high = result.auc_ci
    assert low < result.auc < high and high - low < 0.04
    # Known answer by construction: non-members -990..9, so 1% FPR allows the 10 scores 0..9 and
    # the threshold is -1; members -50.5..48.5 of which -0.5..48.5 (50 of 100) lie above it.
    assert tpr_at_fpr(np.arange(100.0) - 50.5, np.arange(1000.0) - 990, 0.01) == pytest.approx(0.5)
    assert result.roc_tpr[0] <= result.tpr_at_0_1pct_fpr <= result.tpr_at_1pct_fpr <= result.roc_tpr[-1] == 1.0
    # Fewer non-members than 1/FPR: the TPR at that FPR is withheld, not reported as noise.
    small = summarise_attack("toy", members[:500], non_members[:500])
    assert small.tpr_at_0_1pct_fpr is None and small.tpr_at_1pct_fpr is not None
    assert summarise_attack("toy", members[:99], non_members[:99]).tpr_at_1pct_fpr is None


@pytest.fixture(scope="module")
def flchain_thirds():
    frame, schema = load_dataset("flchain")
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    return shuffled[:1500], shuffled[1500:3000], shuffled[3000:4500], schema


def test_distance_attack_catches_a_copy_and_not_fresh_rows(flchain_thirds) -> None:
    train, holdout, fresh, schema = flchain_thirds
    copied = distance_attack(train.copy(), train, holdout, schema)
    assert copied.tpr_at_1pct_fpr > 0.5 and copied.auc > 0.9
    independent = distance_attack(fresh, train, holdout, schema)
    low, high = independent.auc_ci
    assert low <= 0.5 <= high
    assert independent.tpr_at_1pct_fpr < 0.05


@pytest.mark.slow  # a 1,500-epoch fit to overfit on purpose
def test_white_box_attack_exposes_an_overfit_model_and_not_a_dp_one(whas500) -> None:
    import torch

    from fedsynth.client.dp_training import plan_dp, train_dp_round
    from fedsynth.model.config import MCMConfig
    from fedsynth.model.mcm import MCM
    from fedsynth.privacy.membership import white_box_attack

    frame, schema = whas500
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, holdout = shuffled[:120], shuffled[120:240]
    # Non-DP, many epochs on 120 rows, the fit's guards (penalty, early stop) off: memorises.
    overfit = MCM(MCMConfig(hidden=64, epochs=1500, seed=0, weight_decay=0.0, validation_fraction=0.0)).fit(
        train, schema
    )
    exposed = white_box_attack(overfit, train, holdout)
    assert exposed.auc >= 0.9, exposed.auc
    # DP-SGD at epsilon 1 on the same rows, from the same architecture.
    private = MCM(MCMConfig(hidden=64, seed=0)).build(schema)
    plan = plan_dp(n_records=len(train), batch_size=32, local_epochs=30, planned_rounds=1, target_epsilon=1.0,
                   target_delta=1e-3, max_grad_norm=1.0)  # fmt: skip
    train_dp_round(private.network_, private.codes_tensor(train), private.config, plan, 1e-2,
                   torch.Generator().manual_seed(0))  # fmt: skip
    guarded = white_box_attack(private, train, holdout)
    assert guarded.auc_ci[0] <= 0.5 <= guarded.auc_ci[1], guarded.auc
    assert guarded.auc < 0.65


def test_density_attack_catches_a_copy_and_not_fresh_rows(flchain_thirds) -> None:
    from fedsynth.privacy.membership import density_attack

    train, holdout, fresh, schema = flchain_thirds
    copied = density_attack(train.copy(), train, holdout, schema)
    assert copied.auc > 0.8 and copied.tpr_at_1pct_fpr > 0.1
    independent = density_attack(fresh, train, holdout, schema)
    assert independent.auc_ci[0] <= 0.5 <= independent.auc_ci[1]
