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
std ``sigma * C`` (one step at sample rate 1 in its RDP ledger); the coordinator takes one Newton
step, ``s = 1 + (sum of the sites' releases) / I``, with the information ``I`` computed from the
model alone (the expected information of the model's own calibrated rows, scaled to the sites'
row count), bounded to ``SLOPE_BOUNDS``. Post-processing of the DP release on the coordinator's side.
"""

from __future__ import annotations

import torch

from fedsynth.model.loss import hazard_log_probs, survival_hazard_nll
from fedsynth.model.network import HazardHead, MCMNetwork

SLOPE_BOUNDS = (0.5, 2.0)  # one noisy Newton step never more than halves or doubles the effects


def has_hazard_head(network: MCMNetwork) -> bool:
    return isinstance(network.survival_head, HazardHead)


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
    """(n,) each row's expected information about s at s = 1 under the head (no outcome needed).

    In each bin a row reaches, the event indicator is a Bernoulli of the bin's event probability
    p (given the row got there), whose information in a shift of the event logit is p (1 - p);
    the row's is their sum weighted by the probability of reaching each bin, times ``eta`` squared."""
    with torch.no_grad():
        logits = network.survival_logits(encoded)
        eta = event_linear_predictor(network, encoded)
        log_nothing, log_cause = hazard_log_probs(logits)
        reached = torch.cat([torch.zeros_like(log_nothing[:, :1]), log_nothing[:, :-1].cumsum(dim=1)], dim=1)
        event = torch.exp(log_cause[:, 1])
        return eta**2 * (torch.exp(reached) * event * (1.0 - event)).sum(dim=1)


def newton_slope(score_sum: float, information: float) -> float:
    """One Newton step from s = 1, bounded to ``SLOPE_BOUNDS`` (1 without information)."""
    if not information > 0:
        return 1.0
    low, high = SLOPE_BOUNDS
    return float(min(max(1.0 + score_sum / information, low), high))


def scale_event_effects(network: MCMNetwork, slope: float) -> None:
    """Multiply the head's event effects (not its level, not censoring's) by ``slope``, in place."""
    head = network.survival_head
    assert isinstance(head, HazardHead)
    with torch.no_grad():
        head.effects.weight[1] *= slope
