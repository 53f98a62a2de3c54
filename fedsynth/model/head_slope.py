"""The survival head's calibration slope: one factor on its event effects, fitted to the sites' data.

Why: DP-SGD's few noisy steps leave the hazard head's event effects too weak on some tables
(ACTG320: the slope that maximises the head's likelihood on the real rows is 1.35-1.65 on eleven
of twelve models) and too spread on others (noise inflating every effect). A Cox model fitted on
the samples then reads effects that are too small or too large, and on a sample of the real size
a weak effect also leaves the fit's ranking noisier. Scaling every event effect by one factor
``s`` keeps the head's ranking and its covariate structure; ``s`` is the classic calibration
slope of a prognostic model, and one number is cheap to measure with DP.

The measurement (``docs/research/2026-12-05-head-slope.md``): each site releases the sum of its
records' scores d log-likelihood / ds at s = 1, each clipped to [-C, C], plus Gaussian noise of
std ``sigma * C`` (one step at sample rate 1 in its RDP ledger); the coordinator finds the slope
at which the expected score of rows like the model's own (calibrated) rows, scaled to the sites'
record count, equals the released sum (:func:`solve_slope`, within ``SLOPE_BOUNDS``): computed from
the model alone, post-processing of the DP release. The information (:func:`slope_information`)
gives the slope's noise: about sqrt(sites) * sigma * C / information.
"""

from __future__ import annotations

import torch

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


def event_logits(network: MCMNetwork, encoded: torch.Tensor, event_offset: float = 0.0) -> torch.Tensor:
    """The head's (censoring, event) logits with every event logit shifted by ``event_offset``:
    the head as calibrated samples draw from it (its event share set to the DP tables')."""
    logits = network.survival_logits(encoded)
    if event_offset:
        logits = torch.cat([logits[:, : network.layout.n_bins], logits[:, network.layout.n_bins :] + event_offset], 1)
    return logits


def slope_scores(network: MCMNetwork, codes: torch.Tensor, event_offset: float = 0.0) -> torch.Tensor:
    """(n,) each record's score d log-likelihood / ds at s = 1 under the hazard head, its event
    logits shifted by ``event_offset`` (so that a lagging level is not read as a slope).

    The slope adds ``(s - 1) * eta`` to every event logit of a row, so the score is ``eta`` times
    the derivative of the row's log-likelihood in a shift of its event logits."""
    layout = network.layout
    with torch.no_grad():
        encoded = layout.encode_codes(codes)
        logits = event_logits(network, encoded, event_offset)
        eta = event_linear_predictor(network, encoded)
    n_bins = layout.n_bins
    shift = torch.zeros(len(codes), dtype=logits.dtype, requires_grad=True)
    shifted = torch.cat([logits[:, :n_bins], logits[:, n_bins:] + shift.unsqueeze(1)], dim=1)
    log_likelihood = -survival_hazard_nll(layout, shifted, codes).sum()
    (gradient,) = torch.autograd.grad(log_likelihood, shift)
    return eta * gradient.detach()


def slope_information(network: MCMNetwork, encoded: torch.Tensor, event_offset: float = 0.0) -> torch.Tensor:
    """(n,) each row's expected information about s at s = 1 under the head (no outcome needed).

    In each bin a row reaches, the event indicator is a Bernoulli of the bin's event probability
    p (given the row got there), whose information in a shift of the event logit is p (1 - p);
    the row's is their sum weighted by the probability of reaching each bin, times ``eta`` squared."""
    with torch.no_grad():
        logits = event_logits(network, encoded, event_offset)
        eta = event_linear_predictor(network, encoded)
        log_nothing, log_cause = hazard_log_probs(logits)
        reached = torch.cat([torch.zeros_like(log_nothing[:, :1]), log_nothing[:, :-1].cumsum(dim=1)], dim=1)
        event = torch.exp(log_cause[:, 1])
        return eta**2 * (torch.exp(reached) * event * (1.0 - event)).sum(dim=1)


def expected_scores(
    network: MCMNetwork, encoded: torch.Tensor, slope: float, event_offset: float = 0.0
) -> torch.Tensor:
    """(n,) each row's expected score at s = 1 if its outcome came from the head with slope ``slope``.

    A row's score is ``eta`` times the sum, over the bins it reaches, of (event in the bin) minus
    the head's event probability there; its expectation under slope ``slope`` is ``eta`` times
    the sum of P_slope(reach the bin) (p_slope - p_1) over the bins: 0 at slope 1."""
    with torch.no_grad():
        logits = event_logits(network, encoded, event_offset)
        eta = event_linear_predictor(network, encoded)
        n_bins = logits.shape[1] // 2
        scaled = logits.clone()
        scaled[:, n_bins:] += (slope - 1.0) * eta.unsqueeze(1)
        _, log_cause = hazard_log_probs(logits)
        log_nothing, log_cause_scaled = hazard_log_probs(scaled)
        reached = torch.cat([torch.zeros_like(log_nothing[:, :1]), log_nothing[:, :-1].cumsum(dim=1)], dim=1)
        difference = torch.exp(log_cause_scaled[:, 1]) - torch.exp(log_cause[:, 1])
        return eta * (torch.exp(reached) * difference).sum(dim=1)


def solve_slope(
    score_sum: float,
    network: MCMNetwork,
    encoded: torch.Tensor,
    n_rows: int,
    event_offset: float = 0.0,
    steps: int = 40,
) -> float:
    """The slope whose expected score over ``n_rows`` records like ``encoded``'s rows is
    ``score_sum`` (bisection within ``SLOPE_BOUNDS``, where the expected score rises with the slope).

    A moment estimate, not one Newton step from 1: the expected score is exact at every slope,
    so a head whose effects are a third too weak or too strong is put right in one release."""
    low, high = SLOPE_BOUNDS

    def total(slope: float) -> float:
        return float(expected_scores(network, encoded, slope, event_offset).double().mean()) * n_rows

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
