"""The DP plan and a site's rounds agree with an independent Opacus RDP computation."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from opacus import PrivacyEngine
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from torch.utils.data import DataLoader, TensorDataset

from fedsynth.client.dp_training import DPPlanError, batches_per_epoch, plan_dp, train_dp_round
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from fedsynth.model.training import per_sample_loss
from tests.client.rdp_reference import independent_epsilon

SITE = dict(n_records=400, batch_size=64, local_epochs=5, target_delta=1e-3, max_grad_norm=1.0)


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


def _clipped_sum_gradient(network, batch, mode: str, config: MCMConfig | None = None) -> list[torch.Tensor]:
    """The clipped, noiseless sum gradient Opacus computes for one batch in ``mode``."""
    network = copy.deepcopy(network)
    loader = DataLoader(TensorDataset(batch), batch_size=len(batch))
    engine = PrivacyEngine(accountant="rdp")
    optimizer = torch.optim.SGD(network.parameters(), lr=0.0)
    wrapped = engine.make_private(
        module=network, optimizer=optimizer, criterion=torch.nn.MSELoss(), data_loader=loader,
        noise_multiplier=0.0, max_grad_norm=0.05, poisson_sampling=False, grad_sample_mode=mode,
    )  # fmt: skip
    module, dp_optimizer = wrapped[0], wrapped[1]
    dp_optimizer.zero_grad(set_to_none=True)
    loss = per_sample_loss(module, batch, config or MCMConfig(), torch.Generator().manual_seed(3))
    if mode == "ghost":
        DPTensorFastGradientClipping(module, dp_optimizer, loss, "mean").backward()
    else:
        loss.mean().backward()
    dp_optimizer.step()  # clips, (adds zero noise) and sets .grad to the clipped mean
    grads = [p.grad.detach().clone() for p in module.parameters()]
    module._close()
    return grads


@pytest.mark.parametrize("survival_head", [None, "joint", "hazard"])
def test_ghost_clipping_equals_per_sample_clipping_on_the_mcm(whas500, survival_head: str | None) -> None:
    # The sites use ghost clipping for speed; it must clip exactly as per-sample gradients do,
    # for every layer the MCM has (a clip norm small enough that every record is clipped).
    frame, schema = whas500
    config = MCMConfig(hidden=16, n_bins=16, survival_head=survival_head is not None,
                       survival_form=survival_head or "joint")  # fmt: skip
    model = MCM(config).build(schema)
    batch = model.codes_tensor(frame.head(64))
    ghost = _clipped_sum_gradient(model.network_, batch, "ghost", config)
    hooks = _clipped_sum_gradient(model.network_, batch, "hooks", config)
    assert len(ghost) == len(hooks) == len(list(model.network_.parameters()))
    scale = max(float(g.abs().max()) for g in hooks)
    assert scale > 0
    for g, h in zip(ghost, hooks, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6 * scale)


def test_empty_poisson_batches_take_a_noise_only_step_that_opacus_accounts(whas500) -> None:
    frame, schema = whas500
    model = MCM(MCMConfig(hidden=8, n_bins=8)).build(schema)
    codes = model.codes_tensor(frame.head(3))
    # q = 1/3 over 3 rows: P(empty batch) = (2/3)^3 ~ 0.3 per step, so 30 steps see several.
    plan = plan_dp(n_records=3, batch_size=1, local_epochs=10, planned_rounds=1, target_epsilon=50.0,
                   target_delta=0.01, max_grad_norm=1.0)  # fmt: skip
    loss, history = train_dp_round(model.network_, codes, MCMConfig(), plan, 1e-3, torch.Generator().manual_seed(0))
    assert math.isfinite(loss)
    ((noise, rate, steps),) = history
    assert (noise, rate) == (plan.noise_multiplier, plan.sample_rate)
    # Every step went through Opacus' noise-adding optimizer, the ~9 empty batches' too.
    assert steps == plan.steps_per_round == 30
    assert all(torch.isfinite(p).all() for p in model.network_.parameters())


def test_a_loader_length_opacus_rounds_down_still_trains_within_the_plan() -> None:
    # ceil(5900 / 64) = 93 batches, but Opacus' Poisson sampler runs int(1 / (1 / 93)) = 92 steps.
    from fedsynth.data.datasets import load_dataset

    plan = plan_dp(n_records=5900, batch_size=64, local_epochs=1, planned_rounds=1, target_epsilon=8.0,
                   target_delta=1e-5, max_grad_norm=1.0)  # fmt: skip
    assert plan.sample_rate == 1 / 93 and plan.steps_per_round == int(1 / (1 / 93)) == 92
    frame, schema = load_dataset("flchain")
    model = MCM(MCMConfig(hidden=8, n_bins=8)).build(schema)
    codes = model.codes_tensor(frame.iloc[:5900])
    _, history = train_dp_round(model.network_, codes, model.config, plan, 1e-3, torch.Generator().manual_seed(0))
    ((noise, rate, steps),) = history
    assert noise == plan.noise_multiplier and rate >= plan.sample_rate and steps <= plan.steps_per_round


def test_dp_noise_and_sampling_are_not_reproducible_from_public_seeds(whas500) -> None:
    # Same weights, data, plan and mask seed twice: the DP noise (and the Poisson batches) differ,
    # because they come from OS randomness, not from a seed the coordinator could know.
    frame, schema = whas500
    plan = plan_dp(n_records=200, batch_size=64, local_epochs=1, planned_rounds=1, target_epsilon=4.0,
                   target_delta=1e-3, max_grad_norm=1.0)  # fmt: skip
    results = []
    for _ in range(2):
        model = MCM(MCMConfig(hidden=8, n_bins=8, seed=0)).build(schema)
        codes = model.codes_tensor(frame.iloc[:200])
        train_dp_round(model.network_, codes, model.config, plan, 1e-2, torch.Generator().manual_seed(0))
        results.append(torch.cat([p.detach().flatten() for p in model.network_.parameters()]))
    assert not torch.equal(results[0], results[1])


def test_the_cosine_schedule_spans_the_whole_run_not_each_round() -> None:
    from fedsynth.client.dp_training import run_schedule

    cosine = run_schedule("cosine", total_steps=100)
    assert cosine(0) == 1.0
    assert cosine(50) == pytest.approx(0.5)
    assert cosine(100) == pytest.approx(0.0, abs=1e-12)
    factors = [cosine(t) for t in range(101)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))  # never rises again at a round start
    assert run_schedule("constant", total_steps=100)(99) == 1.0


def test_the_last_planned_round_trains_at_the_end_of_the_decay(whas500) -> None:
    # Same weights, data and plan: round 1 of 2 starts at the full rate, round 2 ends near zero, so
    # (with noise off) round 2 moves the weights less than round 1 does.
    frame, schema = whas500
    config = MCMConfig(hidden=8, n_bins=8)
    plan = plan_dp(n_records=200, batch_size=50, local_epochs=2, planned_rounds=2, target_epsilon=50.0,
                   target_delta=1e-3, max_grad_norm=1.0)  # fmt: skip
    plan = dataclasses.replace(plan, noise_multiplier=0.0)
    moved = []
    for server_round in (1, 2):
        model = MCM(config).build(schema)
        before = [p.detach().clone() for p in model.network_.parameters()]
        train_dp_round(model.network_, model.codes_tensor(frame.head(200)), config, plan, 1e-2,
                       torch.Generator().manual_seed(0), server_round=server_round)  # fmt: skip
        moved.append(sum(float((p - b).norm()) for p, b in zip(model.network_.parameters(), before, strict=True)))
    assert moved[1] < 0.6 * moved[0]
