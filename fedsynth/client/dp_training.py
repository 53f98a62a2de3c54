"""DP-SGD for one federated round at a site, with Opacus, and the plan that fixes its noise.

Why a plan: peers derive the noise for *one* round (Flower's Opacus example builds a new
PrivacyEngine every round, so its epsilon covers one round). Here the noise multiplier is
derived once, from the site's target (epsilon, delta), Opacus' sample rate and the *planned*
rounds x local epochs, so the whole run fits the budget; the site's ledger composes every
round's steps and refuses any that would not fit.

Opacus details that matter: with Poisson sampling its data loader draws each record with
probability ``1 / len(data_loader)`` (not ``batch_size / n``), so the plan uses that rate;
``accountant="rdp"`` because the ledger composes RDP (Opacus' default is PRV).

Speed: per-record clipping takes one backward pass (``single_pass_clipping``) instead of
Opacus' two-pass ghost clipping behind module hooks; Opacus still does everything else: the
Poisson ``DPDataLoader``, the ``DPOptimizerFastGradientClipping`` that adds the noise, and the
RDP accountant hooked to its steps. Batches are fetched as one tensor index, not row by row.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from opacus.accountants import RDPAccountant
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader, Dataset

from fedsynth.client.rdp import rdp_epsilon
from fedsynth.client.single_pass_clipping import SinglePassClipping
from fedsynth.errors import UserError
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import head_tail_spec
from fedsynth.model.network import MCMNetwork
from fedsynth.model.training import per_sample_loss

ACCOUNTANT = "rdp"
CLIPPING = "per-record, single backward pass (book-keeping)"
EPSILON_TOLERANCE = 0.01
MAX_NOISE_MULTIPLIER = 1e4


class DPPlanError(UserError, ValueError):
    """The requested budget cannot be met with these settings; the message says what to change."""


@dataclass(frozen=True)
class DPPlan:
    """The fixed DP-SGD parameters of one site for one run."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    planned_rounds: int
    target_epsilon: float
    target_delta: float
    max_grad_norm: float
    batch_size: int
    local_epochs: int
    accountant: str = ACCOUNTANT
    # The run's one Gaussian release of marginal tables (sample rate 1, one step), planned with
    # DP-SGD so that whichever comes first leaves room for the other; None: no release this run.
    marginals_share: float = 0.0
    marginal_noise_multiplier: float | None = None
    # The run's one release of the survival head's slope score (sample rate 1, one step) at the
    # end of the run, planned with the rest; None: no release this run.
    head_slope_noise_multiplier: float | None = None

    @property
    def total_steps(self) -> int:
        return self.steps_per_round * self.planned_rounds

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def batches_per_epoch(n_records: int, batch_size: int) -> int:
    """Length of a ``DataLoader`` over ``n_records`` (what Opacus turns into 1/sample rate)."""
    return max(1, math.ceil(n_records / batch_size))


def plan_dp(
    *,
    n_records: int,
    batch_size: int,
    local_epochs: int,
    planned_rounds: int,
    target_epsilon: float,
    target_delta: float,
    max_grad_norm: float,
    prior_history: list[tuple[float, float, int]] | None = None,
    marginal_noise_multiplier: float | None = None,
    marginals_share: float = 0.0,
    head_slope_noise_multiplier: float | None = None,
) -> DPPlan:
    """Smallest noise (to 0.01 in epsilon) whose epsilon after all planned steps is <= target.

    ``prior_history`` is what the site's ledger already holds from earlier runs: the plan's
    steps are composed with it (in RDP, as the ledger will), so a site that joins a second
    run plans for exactly what is left of its budget. ``marginal_noise_multiplier`` adds the
    run's marginal release (one step at sample rate 1) to what the DP-SGD steps must leave room for;
    ``head_slope_noise_multiplier`` the end-of-run slope release likewise.
    """
    if planned_rounds < 1:
        raise DPPlanError(f"planned_rounds must be >= 1, got {planned_rounds}")
    loader_length = batches_per_epoch(n_records, batch_size)
    sample_rate = 1.0 / loader_length
    # Opacus' Poisson sampler takes int(1 / sample_rate) steps per epoch, which floating point
    # makes loader_length - 1 for some lengths (93, 99, 105, ...): plan exactly what it runs.
    steps_per_round = local_epochs * int(1 / sample_rate)
    prior = list(prior_history or [])
    if marginal_noise_multiplier is not None:
        prior.append((float(marginal_noise_multiplier), 1.0, 1))
    if head_slope_noise_multiplier is not None:
        prior.append((float(head_slope_noise_multiplier), 1.0, 1))

    def epsilon(noise: float) -> float:
        return rdp_epsilon([*prior, (noise, sample_rate, steps_per_round * planned_rounds)], target_delta)

    low, high = 0.0, 1.0
    while epsilon(high) > target_epsilon:
        low, high = high, 2.0 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise DPPlanError(
                f"even noise multiplier {MAX_NOISE_MULTIPLIER:g} exceeds epsilon={target_epsilon:g} at "
                f"delta={target_delta:g} over {planned_rounds} rounds x {steps_per_round} steps"
                + (f" after {rdp_epsilon(prior, target_delta):.3f} already spent" if prior else "")
                + ". Raise the site's privacy.target_epsilon, or lower training.local_epochs or the rounds."
            )
    while epsilon(high) < target_epsilon - EPSILON_TOLERANCE and high - low > 1e-6:
        middle = (low + high) / 2
        if epsilon(middle) > target_epsilon:
            low = middle
        else:
            high = middle
    return DPPlan(
        noise_multiplier=float(high),
        sample_rate=sample_rate,
        steps_per_round=steps_per_round,
        planned_rounds=planned_rounds,
        target_epsilon=target_epsilon,
        target_delta=target_delta,
        max_grad_norm=max_grad_norm,
        batch_size=batch_size,
        local_epochs=local_epochs,
        marginals_share=marginals_share if marginal_noise_multiplier is not None else 0.0,
        marginal_noise_multiplier=marginal_noise_multiplier,
        head_slope_noise_multiplier=head_slope_noise_multiplier,
    )


def marginal_noise_for_share(share: float, epsilon: float, delta: float) -> float | None:
    """The noise multiplier at which one Gaussian step (sample rate 1) alone costs ``share * epsilon``
    at ``delta`` (RDP, within 0.1% above it); None for a share of 0 (no release)."""
    if share <= 0:
        return None
    goal = share * epsilon
    low, high = 1e-3, 1.0
    while rdp_epsilon([(high, 1.0, 1)], delta) > goal:
        low, high = high, 2.0 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise DPPlanError(f"no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} costs epsilon {goal:g} or less")
    while high / low > 1.001:
        middle = math.sqrt(low * high)
        if rdp_epsilon([(middle, 1.0, 1)], delta) > goal:
            low = middle
        else:
            high = middle
    return float(high)


class SiteDPOptimizer(DPOptimizerFastGradientClipping):
    """Opacus' optimizer for pre-clipped gradients, with a cheaper gradient hand-over.

    Opacus copies every parameter's gradient into ``summed_grad`` with ``copy.deepcopy`` each
    step; through Python's copy machinery that was a sixth of a DP step on the MCM's small
    layers. ``clone`` is the same copy. Noise, scaling and accounting are Opacus' own.
    """

    def accumulate(self) -> None:
        for p in self.params:
            if p.summed_grad is not None:
                p.summed_grad.add_(p.grad)
            else:
                p.summed_grad = p.grad.detach().clone()


class RowsDataset(Dataset[tuple[torch.Tensor]]):
    """The site's encoded rows; a batch is fetched as one tensor index (``__getitems__``).

    Items are 1-tuples like ``TensorDataset``'s, so that Opacus' empty-batch collate (which
    inspects ``dataset[0]``) yields ``[empty (0, width) tensor]`` in the same shape.
    """

    def __init__(self, codes: torch.Tensor) -> None:
        self.codes = codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (self.codes[index],)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor]]:
        return [(self.codes[torch.as_tensor(indices, dtype=torch.long)],)] if len(indices) else []


def _whole_batch(batch: list[tuple[torch.Tensor]]) -> tuple[torch.Tensor]:
    """Collate for :class:`RowsDataset`: the one item already is the whole batch."""
    return batch[0]


@contextmanager
def scaled_step(scaled: tuple[torch.nn.Parameter, torch.Tensor] | None) -> Iterator[None]:
    """Multiply the step the optimiser takes inside on one parameter by fixed per-coordinate
    rates: Adam with a learning rate per coordinate, which its parameter groups (one rate per
    tensor) cannot express. Post-processing of the noisy gradient: no privacy cost."""
    if scaled is None:
        yield
        return
    parameter, rates = scaled
    before = parameter.detach().clone()
    yield
    with torch.no_grad():
        parameter.copy_(before + rates * (parameter - before))


def _noise_only_step(module: torch.nn.Module, dp_optimizer: torch.optim.Optimizer) -> None:
    """An empty Poisson batch (probability (1 - q)^n) still releases noise: a zero clipped sum plus
    Gaussian noise, through Opacus' optimizer so its accountant counts the step.

    Skipping it instead would release a different mechanism from the one DP-SGD's analysis
    covers: whether a step moved the weights would depend on whether any record was sampled.
    """
    for parameter in module.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.zeros_like(parameter)
    dp_optimizer.step()


class TailAverage:
    """The plain mean of some parameters' iterates over a round's steps from ``first_step`` on
    (Polyak-Ruppert tail averaging). Post-processing: DP-SGD's guarantee covers every noisy
    iterate, so any function of them costs nothing more."""

    def __init__(self, parameters: list[torch.nn.Parameter], first_step: int) -> None:
        self.parameters, self.first_step = parameters, first_step
        self.sums = [torch.zeros_like(p) for p in parameters]
        self.count = 0

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After the round's ``step``-th step (1-based)."""
        if step > self.first_step:
            self.count += 1
            torch._foreach_add_(self.sums, [p.detach() for p in self.parameters])

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        if self.count:
            for parameter, total in zip(self.parameters, self.sums, strict=True):
                parameter.copy_(total / self.count)


# (parameters averaged over a round, share of the round's steps, fewest steps a round must take)
TailSpec = tuple[list[torch.nn.Parameter], float, int]


def tail_average(spec: TailSpec | None, steps_per_round: int) -> TailAverage | None:
    """The round's tail average of ``spec``'s parameters, or None: no spec, share 0, or a round
    shorter than its minimum (a public plan figure: in a short round the mean lags the path)."""
    if spec is None:
        return None
    parameters, share, min_steps = spec
    if share <= 0 or not parameters or steps_per_round < min_steps:
        return None
    averaged_steps = max(1, round(share * steps_per_round))
    return TailAverage(parameters, steps_per_round - averaged_steps)


def head_tail_average(network: MCMNetwork, model_config: MCMConfig, steps_per_round: int) -> TailAverage | None:
    """The MCM survival head's tail average for a round (MCMConfig.survival_head_averaging), or
    None (see :func:`tail_average`; no head, no average)."""
    return tail_average(head_tail_spec(network, model_config), steps_per_round)


def _mcm_record_loss(
    network: MCMNetwork, model_config: MCMConfig, codes: torch.Tensor, generator: torch.Generator, run_fraction: float
) -> torch.Tensor:
    return per_sample_loss(network, codes, model_config, generator)


def run_schedule(kind: str, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor of the run's step ``t`` (0-based): cosine to zero, or constant 1."""
    if kind == "constant":
        return lambda t: 1.0
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / max(1, total_steps)))


# (records' model codes, the loss's own randomness, share of the run's steps done) -> per-record loss
RecordLoss = Callable[[torch.Tensor, torch.Generator, float], torch.Tensor]


def train_dp_round(
    network: torch.nn.Module,
    codes: torch.Tensor,
    model_config: Any,
    plan: DPPlan,
    learning_rate: float,
    generator: torch.Generator,
    server_round: int = 1,
    record_loss: RecordLoss | None = None,
    averaged: TailSpec | None = None,
    scaled: tuple[torch.nn.Parameter, torch.Tensor] | None = None,
) -> tuple[float, list[tuple[float, float, int]]]:
    """Train ``network`` in place for one round of ``plan.steps_per_round`` DP-SGD steps.

    ``record_loss`` is the generator's per-record loss
    (:meth:`~fedsynth.model.generator.NetworkGenerator.per_record_loss`); by default the MCM's
    (``network`` an :class:`MCMNetwork`, ``model_config`` its :class:`MCMConfig`, its survival
    head averaged as the config says); with another generator's loss, ``averaged`` says which
    parameters it sends as the mean of their iterates
    (:meth:`~fedsynth.model.generator.NetworkGenerator.tail_averaged`) and ``scaled`` which
    parameter's steps fixed multipliers scale
    (:meth:`~fedsynth.model.generator.NetworkGenerator.rate_scaled`). The plan, the clipping,
    the noise and the accounting do not depend on the generator.

    With ``model_config.lr_schedule == "cosine"`` the learning rate follows one cosine decay
    over the whole run (``plan.planned_rounds`` rounds, this one being ``server_round``), not
    one per round. Why: every DP-SGD step adds noise, and at a constant rate the weights the
    site sends are the last noisy iterate; decaying to zero over the run averages the noise
    out of the final weights (a public schedule: no privacy cost).

    Returns the mean training loss and Opacus' own accountant history for the round, which
    the caller checks against what its ledger reserved (Opacus counts every step, an empty
    Poisson batch's noise-only step included).
    """
    # Which records a step samples and the noise it adds must be secret: the DP analysis assumes
    # an attacker cannot predict them. ``generator`` (seeded, reproducible) only draws the masks;
    # sampling and noise get fresh OS randomness, never a seed anyone else knows.
    sampling = torch.Generator().manual_seed(secrets.randbits(63))
    noise = torch.Generator().manual_seed(secrets.randbits(63))
    ModuleValidator.validate(network, strict=True)  # what PrivacyEngine.make_private checks
    loader = DataLoader(RowsDataset(codes), batch_size=plan.batch_size, generator=sampling, collate_fn=_whole_batch)
    dp_loader = DPDataLoader.from_data_loader(loader, generator=sampling)
    if not math.isclose(dp_loader.sample_rate, plan.sample_rate):
        raise RuntimeError(f"Opacus sample rate {dp_loader.sample_rate} differs from the plan's {plan.sample_rate}")
    dp_optimizer = SiteDPOptimizer(
        torch.optim.Adam(network.parameters(), lr=learning_rate),
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=int(len(codes) * dp_loader.sample_rate),  # as make_private sets it
        loss_reduction="mean",
        generator=noise,
    )
    accountant = RDPAccountant()
    dp_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=dp_loader.sample_rate))
    total, count = 0.0, 0
    step = (min(server_round, plan.planned_rounds) - 1) * plan.steps_per_round
    schedule = run_schedule(getattr(model_config, "lr_schedule", "constant"), plan.total_steps)
    if record_loss is None:  # the MCM's own loss, its survival head averaged as its config says
        record_loss = functools.partial(_mcm_record_loss, network, model_config)
        averaging = head_tail_average(network, model_config, plan.steps_per_round)
    else:
        averaging = tail_average(averaged, plan.steps_per_round)
    network.train()
    round_step = 0
    with SinglePassClipping(network, plan.max_grad_norm) as clipping:
        for _ in range(plan.local_epochs):
            for (batch,) in dp_loader:
                for group in dp_optimizer.param_groups:
                    group["lr"] = learning_rate * schedule(step)
                step += 1
                dp_optimizer.zero_grad(set_to_none=True)
                if len(batch) == 0:
                    with scaled_step(scaled):
                        _noise_only_step(network, dp_optimizer)
                else:
                    loss = record_loss(batch, generator, (step - 1) / max(1, plan.total_steps))
                    clipping.backward(loss)  # .grad = sum of the clipped per-record gradients
                    with scaled_step(scaled):
                        dp_optimizer.step()  # Opacus: + Gaussian noise, / expected batch size, Adam, accountant
                    total += float(loss.detach().sum())
                    count += len(batch)
                round_step += 1
                if averaging is not None:
                    averaging.update(round_step)
    if averaging is not None:
        averaging.copy_to_parameters()
    network.eval()
    history = [(float(n), float(q), int(s)) for n, q, s in accountant.history]
    return (total / count if count else float("nan")), history
