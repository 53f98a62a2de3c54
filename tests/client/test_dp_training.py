"""The DP plan and a site's rounds agree with an independent Opacus RDP computation."""

from __future__ import annotations

import math

import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant

from fedsynth.client.dp_training import DPPlanError, batches_per_epoch, plan_dp

ALPHAS = RDPAccountant.DEFAULT_ALPHAS
SITE = dict(n_records=400, batch_size=64, local_epochs=5, target_delta=1e-3, max_grad_norm=1.0)


def independent_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus' RDP analysis called directly (not through our ledger or accountant objects)."""
    rdp = sum(compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=ALPHAS) for sigma, q, steps in history)
    epsilon, _ = get_privacy_spent(orders=ALPHAS, rdp=rdp, delta=delta)
    return float(epsilon)


def test_plan_spends_close_to_but_never_above_the_target() -> None:
    plan = plan_dp(planned_rounds=4, target_epsilon=2.0, **SITE)
    assert plan.sample_rate == 1 / batches_per_epoch(400, 64) == 1 / 7
    assert plan.steps_per_round == 35
    spent = independent_epsilon([(plan.noise_multiplier, plan.sample_rate, plan.total_steps)], 1e-3)
    assert 2.0 - 0.011 <= spent <= 2.0


def test_plan_composes_with_an_earlier_run() -> None:
    common = dict(planned_rounds=2, **SITE)
    first = plan_dp(target_epsilon=2.0, **common)
    prior = [(first.noise_multiplier, first.sample_rate, first.total_steps)]
    second = plan_dp(target_epsilon=4.0, prior_history=prior, **common)
    total = independent_epsilon([*prior, (second.noise_multiplier, second.sample_rate, second.total_steps)], 1e-3)
    assert 4.0 - 0.011 <= total <= 4.0
    # without the prior the same target would allow less noise: the prior is really counted
    assert second.noise_multiplier > plan_dp(target_epsilon=4.0, **common).noise_multiplier


def test_an_unreachable_budget_is_refused_with_the_fix() -> None:
    with pytest.raises(DPPlanError, match="target_epsilon"):
        plan_dp(planned_rounds=2, target_epsilon=0.5, prior_history=[(0.5, 0.5, 1000)], **SITE)
    assert math.isfinite(independent_epsilon([(0.5, 0.5, 1000)], 1e-3))
