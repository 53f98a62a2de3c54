"""The sampler's elementary draws: an index by inverse CDF, and (cause, time bin) from
discrete-time competing hazards; and the event-hazard shift that sets a population's event share."""

from __future__ import annotations

import torch

from fedsynth.model.loss import hazard_log_probs


def draw_competing_hazards(logits: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(cause, bin) per row: walk the bins, in each drawing nothing, censoring or the event.

    All bins are drawn at once; a row's outcome is its first bin that drew a cause (the last
    bin always does: there only the two causes compete).
    """
    log_nothing, log_cause = hazard_log_probs(logits)
    probs = torch.exp(torch.cat([log_nothing.unsqueeze(1), log_cause], dim=1))  # (n, 3, bins)
    n, _, n_bins = probs.shape
    flat = probs.permute(0, 2, 1).reshape(n * n_bins, 3)
    drawn = inverse_cdf(flat, torch.rand(n * n_bins, generator=generator)).reshape(n, n_bins)
    ended = drawn > 0
    time_bin = ended.float().argmax(dim=1)  # first True (the last bin always is)
    cause = drawn.gather(1, time_bin.unsqueeze(1)).squeeze(1) - 1
    return cause, time_bin


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index drawn per row from unnormalised probabilities, given uniforms ``u`` in [0, 1)."""
    cdf = probs.cumsum(dim=1)
    index = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    return torch.clamp(index, max=probs.shape[1] - 1)


def log_reached(log_nothing: torch.Tensor) -> torch.Tensor:
    """(n, n_bins) log P(the row reaches each bin): the sum of log P(nothing) over the bins before it."""
    return torch.cat([torch.zeros_like(log_nothing[:, :1]), log_nothing[:, :-1].cumsum(dim=1)], dim=1)


def event_probability(logits: torch.Tensor) -> torch.Tensor:
    """(n,) P(the row ends in the event, not censoring) under discrete-time competing hazards."""
    log_nothing, log_cause = hazard_log_probs(logits)
    return torch.exp(log_reached(log_nothing) + log_cause[:, 1]).sum(dim=1)


def solve_event_offset(logits: torch.Tensor, share: float, bound: float = 8.0, steps: int = 60) -> float:
    """The shift of every event-hazard logit (the second half of ``logits``) that makes the rows'
    mean event probability ``share``: a recalibration in the large that keeps every hazard ratio.
    Bisection (the mean rises with the shift), within +-``bound``."""
    n_bins = logits.shape[1] // 2
    low, high = -bound, bound
    for _ in range(steps):
        middle = (low + high) / 2.0
        shifted = logits.clone()
        shifted[:, n_bins:] += middle
        if float(event_probability(shifted).mean()) < share:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0
