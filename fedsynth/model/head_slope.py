"""The survival head's calibration slope: one factor on its event effects, fitted to the sites' data.

Why: DP-SGD's few noisy steps leave the hazard head's event effects too weak on some tables
(ACTG320: the slope that maximises the head's likelihood on the real rows is 1.35-1.65 on eleven
of twelve models) and too spread on others (noise inflating every effect). A Cox model fitted on
the samples then reads effects that are too small or too large, and on a sample of the real size
a weak effect also leaves the fit's ranking noisier. Scaling every event effect by one factor
``s`` keeps the head's ranking and its covariate structure; ``s`` is the classic calibration
slope of a prognostic model, and one number is cheap to measure with DP.

The measurement (``docs/research/2026-12-05-head-slope.md``): each site releases the sum of its
records' scores d log-likelihood / ds at s = 1, each clipped to [-C, C] (C the 99th percentile of
the model's own scores: :func:`score_clip`), plus Gaussian noise of std ``sigma * C`` (one step at sample rate 1 in its
RDP ledger). The coordinator finds the slope at which rows like the model's own (calibrated)
rows, as many as the sites' records and clipped as theirs, expect the released sum (:func:`solve_slope`, within
``SLOPE_BOUNDS``): computed from the model alone, post-processing of the DP release. The
information (:func:`slope_information`) gives the slope's noise: about sqrt(sites) * sigma * C /
information.
"""

from __future__ import annotations

import math

import torch

from fedsynth.model.draws import log_reached
from fedsynth.model.loss import hazard_log_probs, survival_hazard_nll
from fedsynth.model.network import HazardHead, MCMNetwork

SLOPE_BOUNDS = (0.5, 2.0)  # one noisy release never more than halves or doubles the effects


def has_hazard_head(network: torch.nn.Module) -> bool:
    """Whether ``network`` (any generator's) is an MCM network with a hazard survival head."""
    return isinstance(getattr(network, "survival_head", None), HazardHead)


def event_linear_predictor(network: MCMNetwork, encoded: torch.Tensor) -> torch.Tensor:
    """(n,) each row's event effect term: what the slope multiplies (the level is not in it)."""
    head = network.survival_head
    assert isinstance(head, HazardHead)
    centred = (encoded - network.covariate_centre()) * network.covariate_input
    return (centred @ head.effects.weight[1]) * head.effect_scale


def slope_scores(network: MCMNetwork, codes: torch.Tensor) -> torch.Tensor:
    """(n,) each record's score d log-likelihood / ds at s = 1 under the hazard head.

    The slope adds ``(s - 1) * eta`` to every event logit of a row, so the score is ``eta`` times
    the derivative of the row's log-likelihood in a shift of its event logits."""
    layout = network.layout
    with torch.no_grad():
        encoded = layout.encode_codes(codes)
        logits = network.survival_logits(encoded)
        eta = event_linear_predictor(network, encoded)
    n_bins = layout.n_bins
    shift = torch.zeros(len(codes), dtype=logits.dtype, requires_grad=True)
    shifted = torch.cat([logits[:, :n_bins], logits[:, n_bins:] + shift.unsqueeze(1)], dim=1)
    log_likelihood = -survival_hazard_nll(layout, shifted, codes).sum()
    (gradient,) = torch.autograd.grad(log_likelihood, shift)
    return eta * gradient.detach()


def slope_information(network: MCMNetwork, encoded: torch.Tensor) -> torch.Tensor:
    """(n,) each row's expected information about s at s = 1 under the head (no outcome needed):
    the variance of its score over its possible outcomes, whose mean there is 0."""
    with torch.no_grad():
        probabilities, scores = _outcome_scores(network, encoded, 1.0)
        return (probabilities * scores**2).sum(dim=(1, 2))


def _outcome_scores(network: MCMNetwork, encoded: torch.Tensor, slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row's possible outcomes (ending in each bin by censoring or the event): their
    probabilities under slope ``slope`` and their scores at s = 1, each (n, 2, n_bins)."""
    logits = network.survival_logits(encoded)
    eta = event_linear_predictor(network, encoded).unsqueeze(1)
    n_bins = logits.shape[1] // 2
    _, log_cause = hazard_log_probs(logits)
    scored = -torch.exp(log_cause[:, 1]).cumsum(dim=1)  # the event probabilities up to and including each bin
    scaled = logits.clone()
    scaled[:, n_bins:] += (slope - 1.0) * eta
    log_nothing, log_cause_scaled = hazard_log_probs(scaled)
    probabilities = torch.exp(log_reached(log_nothing).unsqueeze(1) + log_cause_scaled)
    return probabilities, torch.stack([eta * scored, eta * (scored + 1.0)], dim=1)


def expected_scores(network: MCMNetwork, encoded: torch.Tensor, slope: float, clip: float = math.inf) -> torch.Tensor:
    """(n,) each row's expected score at s = 1, clipped to [-``clip``, ``clip``] as sites clip it,
    if its outcome came from the head with slope ``slope``.

    A row that ends in bin b scores ``eta`` times (event in b) minus the head's event probabilities
    (at s = 1) summed over the bins up to b; the expectation runs over every (bin, cause) under
    slope ``slope``, exactly, clipping included."""
    with torch.no_grad():
        probabilities, scores = _outcome_scores(network, encoded, slope)
        return (probabilities * scores.clamp(-clip, clip)).sum(dim=(1, 2))


def score_clip(network: MCMNetwork, encoded: torch.Tensor, quantile: float = 0.99) -> float:
    """The ``quantile`` of |score| over rows like ``encoded``'s with outcomes from the head: the
    clip sent to the sites. Why from the model: a fixed clip cut a fifth of WHAS500's scores (its
    effects spread wider than ACTG320's), and clipping that often depends on the real covariates'
    joint, which the model's rows do not share, so no expectation could undo it."""
    with torch.no_grad():
        probabilities, scores = _outcome_scores(network, encoded, 1.0)
        values, order = scores.abs().flatten().double().sort()
        weights = probabilities.flatten().double()[order].cumsum(0)
        index = int(torch.searchsorted(weights, quantile * weights[-1]))
        return float(values[min(index, len(values) - 1)])


def solve_slope(
    score_sum: float,
    network: MCMNetwork,
    encoded: torch.Tensor,
    releases: list[tuple[int, float]],
    steps: int = 40,
) -> float:
    """The slope at which the released sum is expected: the sum over ``releases`` (each site's
    record count and clip) of that many rows like ``encoded``'s expected clipped score
    (bisection within ``SLOPE_BOUNDS``, where the expected score rises with the slope).

    A moment estimate, not one Newton step from 1: the expected score is exact at every slope and
    clip, so a head whose effects are a third too weak or too strong is put right in one release."""
    low, high = SLOPE_BOUNDS

    def total(slope: float) -> float:
        return sum(
            float(expected_scores(network, encoded, slope, clip).double().mean()) * n_rows for n_rows, clip in releases
        )

    if total(low) >= score_sum:
        return low
    if total(high) <= score_sum:
        return high
    for _ in range(steps):
        middle = (low + high) / 2.0
        if total(middle) < score_sum:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def scale_event_effects(network: MCMNetwork, slope: float) -> None:
    """Multiply the head's event effects (not its level, not censoring's) by ``slope``, in place."""
    head = network.survival_head
    assert isinstance(head, HazardHead)
    with torch.no_grad():
        head.effects.weight[1] *= slope
