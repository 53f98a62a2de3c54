"""The DP plan and a site's rounds agree with an independent Opacus RDP computation."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from fedsynth.client.dp_training import DPPlanError, batches_per_epoch, plan_dp, train_dp_round
from fedsynth.client.single_pass_clipping import ClippingSetupError, SinglePassClipping
from fedsynth.data.datasets import load_dataset
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


CLIP = 0.05  # small enough that every record of the test batches is clipped


def _opacus_clipped_mean(network, batch, config: MCMConfig) -> list[torch.Tensor]:
    """The clipped, noiseless mean gradient from Opacus' own per-sample gradients (hooks mode)."""
    network = copy.deepcopy(network)
    loader = DataLoader(TensorDataset(batch), batch_size=len(batch))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.0)
    module, dp_optimizer, _ = PrivacyEngine(accountant="rdp").make_private(
        module=network, optimizer=optimizer, data_loader=loader,
        noise_multiplier=0.0, max_grad_norm=CLIP, poisson_sampling=False, grad_sample_mode="hooks",
    )  # fmt: skip
    dp_optimizer.zero_grad(set_to_none=True)
    per_sample_loss(module, batch, config, torch.Generator().manual_seed(3)).mean().backward()
    dp_optimizer.step()  # clips each record, sums, adds zero noise, divides by the batch size
    grads = [p.grad.detach().clone() for p in module.parameters()]
    module._close()
    return grads


def _single_pass_clipped_mean(network, batch, config: MCMConfig) -> tuple[list[torch.Tensor], torch.Tensor]:
    network = copy.deepcopy(network)
    network.train()
    with SinglePassClipping(network, CLIP) as clipping:
        norms = clipping.backward(per_sample_loss(network, batch, config, torch.Generator().manual_seed(3)))
    return [p.grad.detach() / len(batch) for p in network.parameters()], norms


@pytest.mark.parametrize(
    "survival",
    [
        {},
        {"survival_head": True, "survival_form": "joint"},
        {"survival_head": True, "survival_form": "hazard"},
        # the federated default: covariates centred by a no-gradient pass of the same layers
        {"survival_head": True, "survival_form": "hazard", "survival_centre": "marginal", "survival_level": True},
        # ACTG320's categorical (one-hot) covariates in the centring pass too
        {
            "survival_head": True,
            "survival_form": "hazard",
            "survival_centre": "marginal",
            "survival_level": True,
            "dataset": "actg320",
        },
    ],
    ids=["no-head", "joint", "hazard", "hazard-marginal-level", "hazard-marginal-level-actg320"],
)
def test_single_pass_clipping_equals_opacus_per_sample_clipping_on_the_mcm(whas500, survival) -> None:
    # The sites clip in one backward pass for speed; it must clip exactly as Opacus' per-sample
    # gradients do, for every layer the MCM has.
    survival = dict(survival)
    frame, schema = load_dataset(survival.pop("dataset")) if "dataset" in survival else whas500
    config = MCMConfig(hidden=16, n_bins=16, **survival)
    model = MCM(config).build(schema)
    batch = model.codes_tensor(frame.head(64))
    ours, norms = _single_pass_clipped_mean(model.network_, batch, config)
    opacus = _opacus_clipped_mean(model.network_, batch, config)
    assert len(ours) == len(opacus) == len(list(model.network_.parameters()))
    assert bool((norms > CLIP).all())  # every record clipped: the clipping really is exercised
    scale = max(float(g.abs().max()) for g in opacus)
    assert scale > 0
    for g, h in zip(ours, opacus, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6 * scale)


def test_single_pass_clipping_leaves_records_under_the_norm_unscaled(whas500) -> None:
    # With a clip norm above every record's norm, the clipped sum is the plain summed gradient.
    frame, schema = whas500
    config = MCMConfig(hidden=8, n_bins=8)
    network = MCM(config).build(schema).network_
    batch = MCM(config).build(schema).codes_tensor(frame.head(32))
    plain = copy.deepcopy(network)
    per_sample_loss(plain, batch, config, torch.Generator().manual_seed(3)).sum().backward()
    network.train()
    with SinglePassClipping(network, 1e9) as clipping:
        clipping.backward(per_sample_loss(network, batch, config, torch.Generator().manual_seed(3)))
    for ours, reference in zip(network.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-4, atol=1e-7)


def _opacus_per_record_gradients(network, batch, config: MCMConfig) -> dict[str, torch.Tensor]:
    """Each record's unclipped gradient of every parameter, (n, *shape), from Opacus' hooks."""
    from opacus.grad_sample import GradSampleModule

    module = GradSampleModule(copy.deepcopy(network), loss_reduction="sum")
    per_sample_loss(module, batch, config, torch.Generator().manual_seed(3)).sum().backward()
    grads = {name: p.grad_sample.detach().clone() for name, p in module._module.named_parameters()}
    module._close()
    return grads


@pytest.mark.parametrize("head_averaging", [0.0, 1.0])
def test_a_round_with_the_hazard_head_spends_exactly_what_the_plan_says_and_every_part_trains(
    whas500, head_averaging
) -> None:
    # Opacus' accountant sees the plan's noise, rate and steps; the head and the masked model both
    # move. Averaging the head's iterates is post-processing: the spend is the same.
    frame, schema = whas500
    config = MCMConfig(hidden=8, n_bins=8, survival_head=True, survival_form="hazard", survival_centre="marginal",
                       survival_level=True, survival_head_averaging=head_averaging,
                       survival_head_averaging_min_steps=1)  # fmt: skip
    plan = plan_dp(n_records=200, batch_size=50, local_epochs=2, planned_rounds=1, target_epsilon=8.0,
                   target_delta=1e-3, max_grad_norm=10.0)  # fmt: skip
    model = MCM(config).build(schema)
    before = {name: p.detach().clone() for name, p in model.network_.named_parameters()}
    _, history = train_dp_round(model.network_, model.codes_tensor(frame.head(200)), config, plan, 1e-2,
                                torch.Generator().manual_seed(0))  # fmt: skip
    assert history == [(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)]
    assert 8.0 - 0.011 <= independent_epsilon(history, 1e-3) <= 8.0
    moved = {name: float((p.detach() - before[name]).abs().max()) for name, p in model.network_.named_parameters()}
    assert moved["survival_head.effects.weight"] > 0 and moved["heads.weight"] > 0 and moved["block1.net.0.weight"] > 0


def test_a_round_with_the_default_loss_averages_the_head_as_its_config_says(whas500, monkeypatch) -> None:
    # Without a generator's loss the MCM's own is used, and with it the head's averaging.
    from fedsynth.client.dp_training import TailAverage

    frame, schema = whas500
    config = MCMConfig(hidden=8, n_bins=8, survival_head=True, survival_form="hazard", survival_head_averaging=1.0,
                       survival_head_averaging_min_steps=1)  # fmt: skip
    plan = plan_dp(n_records=200, batch_size=50, local_epochs=1, planned_rounds=1, target_epsilon=8.0,
                   target_delta=1e-3, max_grad_norm=10.0)  # fmt: skip
    model = MCM(config).build(schema)
    copied: list[set[int]] = []
    monkeypatch.setattr(TailAverage, "copy_to_parameters", lambda self: copied.append({id(p) for p in self.parameters}))
    train_dp_round(model.network_, model.codes_tensor(frame.head(200)), config, plan, 1e-2, torch.Generator())
    assert copied == [{id(p) for p in model.network_.survival_head.parameters()}]


def test_the_tail_average_is_the_mean_of_the_iterates_after_its_first_step() -> None:
    from fedsynth.client.dp_training import TailAverage

    layer = torch.nn.Linear(2, 1)
    averaged = TailAverage(list(layer.parameters()), first_step=2)
    for step, value in enumerate((1.0, 3.0, 5.0, 7.0), start=1):
        with torch.no_grad():
            layer.weight.fill_(value)
        averaged.update(step)
    averaged.copy_to_parameters()
    torch.testing.assert_close(layer.weight, torch.full((1, 2), 6.0))  # (5 + 7) / 2: steps 3 and 4


def test_the_head_average_covers_the_survival_head_alone_over_its_share_of_the_round(whas500) -> None:
    from fedsynth.client.dp_training import head_tail_average

    _, schema = whas500
    config = MCMConfig(hidden=8, n_bins=8, survival_head=True, survival_form="hazard", survival_head_averaging=0.3,
                       survival_head_averaging_min_steps=20)  # fmt: skip
    network = MCM(config).build(schema).network_
    averaged = head_tail_average(network, config, steps_per_round=20)
    assert averaged is not None and averaged.first_step == 14  # the last 6 of 20 steps
    assert head_tail_average(network, config, steps_per_round=19) is None  # a round too short to settle in
    assert {id(p) for p in averaged.parameters} == {id(p) for p in network.survival_head.parameters()}
    assert head_tail_average(network, config.model_copy(update={"survival_head_averaging": 0.0}), 20) is None
    plain = MCM(MCMConfig(hidden=8, n_bins=8, survival_head_averaging=0.3)).build(schema).network_
    assert head_tail_average(plain, config, 20) is None  # no head, nothing to average


def test_single_pass_clipping_needs_a_positive_norm_and_hooks_nothing_when_refused() -> None:
    network = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    for norm in (0.0, -1.0, float("nan")):
        with pytest.raises(ClippingSetupError, match="max_grad_norm must be > 0"):
            SinglePassClipping(network, norm)
    assert not network[0]._forward_hooks


def test_single_pass_clipping_refuses_what_it_cannot_clip_and_removes_its_hooks() -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.layer(self.layer(x))

    tied = Tied()
    with SinglePassClipping(tied, 1.0) as clipping, pytest.raises(ClippingSetupError, match="ran twice"):
        clipping.backward(tied(torch.ones(4, 3)).sum(dim=1))
    assert not tied.layer._forward_hooks
    loose = torch.nn.Module()
    loose.scale = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ClippingSetupError, match="scale"):
        SinglePassClipping(loose, 1.0)
    unsupported = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    with pytest.raises(ClippingSetupError, match="1.weight, 1.bias belong to a BatchNorm1d"):
        SinglePassClipping(unsupported, 1.0)
    assert not unsupported[0]._forward_hooks  # refused before any layer was hooked
    shared = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    shared[1].weight = shared[0].weight
    with pytest.raises(ClippingSetupError, match="1.weight is the same parameter as 0.weight"):
        SinglePassClipping(shared, 1.0)


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


def test_one_noise_free_step_moves_every_weight_by_at_most_the_learning_rate(whas500) -> None:
    # One full-batch step without noise: Adam's first step moves each weight with a gradient by
    # about its learning rate, so the largest moves read the rate each part trains at: one for all.
    frame, schema = whas500
    config = MCMConfig(hidden=8, n_bins=8, survival_head=True, survival_form="hazard", survival_centre="marginal",
                       survival_level=True)  # fmt: skip
    plan = plan_dp(n_records=200, batch_size=200, local_epochs=1, planned_rounds=1, target_epsilon=50.0,
                   target_delta=1e-3, max_grad_norm=1.0)  # fmt: skip
    plan = dataclasses.replace(plan, noise_multiplier=0.0)
    assert plan.total_steps == 1
    model = MCM(config).build(schema)
    network = model.network_
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    train_dp_round(network, model.codes_tensor(frame.head(200)), config, plan, 1e-2, torch.Generator().manual_seed(0))
    moved = {name: float((p.detach() - before[name]).abs().max()) for name, p in network.named_parameters()}
    assert all(distance <= 1e-2 * (1 + 1e-3) for distance in moved.values()), moved
    for name in ("survival_head.effects.weight", "survival_head.baseline.weight", "heads.weight"):
        assert moved[name] == pytest.approx(1e-2, rel=1e-3)


def test_single_pass_clipping_equals_opacus_with_missing_values_modelled(whas500) -> None:
    # missing = "model" changes only the masks and the loss's targets: DP-SGD clips each record's
    # gradient of that loss exactly as Opacus does, indicator heads included.
    from tests.missing import blank

    frame, schema = blank(*whas500, {"bmi": 0.3, "cvd": 0.3}, seed=0)
    config = MCMConfig(hidden=16, n_bins=16, survival_head=True, survival_form="hazard", survival_centre="marginal")
    model = MCM(config).build(schema)
    batch = model.codes_tensor(frame.head(64))
    assert model.network_.layout.missing_mask(batch).any()
    ours, norms = _single_pass_clipped_mean(model.network_, batch, config)
    opacus = _opacus_clipped_mean(model.network_, batch, config)
    assert bool((norms > CLIP).all())
    scale = max(float(g.abs().max()) for g in opacus)
    for g, h in zip(ours, opacus, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6 * scale)
