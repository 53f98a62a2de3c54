"""Drawing (time, event) from the distilled Cox model: ``outcome = "model"``.

Event time T has cumulative hazard exp(eta - eta_mean) * H0(u), censoring time C has Hc(u),
both piecewise linear in u, the time column's [0, 1] scale; the row's time is min(T, C) and
its event is T <= C. Each is drawn by inverting its cumulative hazard at an Exp(1) draw.
Censoring past the longest follow-up's bin is not observed, so a censoring time that would fall
beyond it is put uniformly inside that bin: follow-up ends there, as it did in the data.
"""

from __future__ import annotations

import torch


def cumulative(rates: torch.Tensor) -> torch.Tensor:
    """(n_bins + 1,) cumulative hazard at the bin edges 0, 1/n_bins, ..., 1."""
    n_bins = rates.shape[0]
    return torch.cat([rates.new_zeros(1), torch.cumsum(rates / n_bins, dim=0)])


def invert(cum: torch.Tensor, rates: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The u in [0, 1] where the cumulative hazard reaches ``target`` (n,); +inf past u = 1."""
    n_bins = rates.shape[0]
    k = torch.searchsorted(cum, target.contiguous(), right=True) - 1
    inside = k < n_bins
    k = k.clamp(0, n_bins - 1)
    rate = rates[k].clamp_min(1e-30)  # a target inside bin k means rates[k] > 0
    u = k.to(target.dtype) / n_bins + (target - cum[k]) / rate
    return torch.where(inside, u.clamp(0.0, 1.0), torch.full_like(u, torch.inf))


def draw_outcome(
    eta: torch.Tensor,
    event_rates: torch.Tensor,
    censor_rates: torch.Tensor,
    last_bin: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit time, event) for rows whose centred linear predictor is ``eta`` (n,)."""
    n, n_bins = eta.shape[0], event_rates.shape[0]
    event_draw = -torch.log1p(-torch.rand(n, generator=generator))  # Exp(1)
    censor_draw = -torch.log1p(-torch.rand(n, generator=generator))
    inside_last = torch.rand(n, generator=generator)
    event_time = invert(cumulative(event_rates), event_rates, event_draw * torch.exp(-eta))
    censor_time = invert(cumulative(censor_rates), censor_rates, censor_draw)
    end_of_follow_up = (last_bin + inside_last) / n_bins
    censor_time = torch.minimum(censor_time, end_of_follow_up)
    event = (event_time <= censor_time).to(eta.dtype)
    return torch.minimum(event_time, censor_time), event
