"""CK4Gen's teacher trained with the network (``teacher = "joint"``): the DP variant.

The paper fits its Cox teacher on the training rows (lifelines) before distilling it; at a DP
site those coefficients and hazards would leave the site unprotected in the weights. Here the
teacher is the same model, a proportional-hazards model with piecewise-constant baseline and
censoring hazards on the time column's [0, 1] grid, but its parameters are layers of the network,
fitted by each record's piecewise-exponential likelihood in the same steps as the autoencoder, so
DP-SGD's per-record clipping and noise cover them. The distillation target is the teacher's
current linear predictor, held fixed within a step.

Every parameter lives in a layer with a per-record gradient (Opacus' ``nn.Linear``): the
hazards are a bias-free linear map of a constant input of ones, one output per bin.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsynth.model.ck4gen.network import CK4GenNetwork
from fedsynth.model.ck4gen.teacher import feature_positions, outcome_indices
from fedsynth.model.layout import Layout

# The coefficients are this times their weights, as the MCM's survival head's effects
# (MCMConfig.survival_effect_scale): Adam moves each weight by about the learning rate per step,
# and a covariate on its [0, 1] scale can carry a log hazard ratio of several units.
EFFECT_SCALE = 8.0


class JointTeacherNetwork(CK4GenNetwork):
    """CK4Gen's network whose teacher (coefficients, log hazards) is trained, not fitted before."""

    def __init__(self, layout: Layout, hidden: tuple[int, ...], latent: int, bin_smoothing: float = 0.75) -> None:
        super().__init__(layout, hidden, latent, bin_smoothing)
        for name in ("beta", "event_rates", "censor_rates"):  # parameters below instead
            del self._buffers[name]
        self.eta_scale.fill_(1.0)  # the target is the predictor itself: no data-derived scale
        # Follow-up may run to the schema's public bound: a constant, not a weight the sites send
        # (the federation exchanges floating-point weights only).
        del self._buffers["last_bin"]
        self.register_buffer("last_bin", torch.tensor(layout.n_bins - 1), persistent=False)
        mask = torch.zeros(layout.encoded_width)
        mask[feature_positions(layout)] = 1.0
        self.register_buffer("feature_mask", mask, persistent=False)
        self.coefficients = nn.Linear(layout.encoded_width, 1, bias=False)
        nn.init.zeros_(self.coefficients.weight)
        self.log_event_rates = nn.Linear(1, layout.n_bins, bias=False)
        self.log_censor_rates = nn.Linear(1, layout.n_bins, bias=False)
        nn.init.zeros_(self.log_event_rates.weight)
        nn.init.zeros_(self.log_censor_rates.weight)

    @property
    def beta(self) -> torch.Tensor:  # type: ignore[override]
        return EFFECT_SCALE * self.coefficients.weight[0] * self.feature_mask

    @property
    def event_rates(self) -> torch.Tensor:  # type: ignore[override]
        return self.log_event_rates.weight[:, 0].exp()

    @property
    def censor_rates(self) -> torch.Tensor:  # type: ignore[override]
        return self.log_censor_rates.weight[:, 0].exp()

    def teacher_nll(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the piecewise-exponential negative log-likelihood of its (time, event) under
        the teacher, and the teacher's linear predictor (n,)."""
        layout = self.layout
        time_index, event_index = outcome_indices(layout)
        unit_time, event = codes[:, time_index], codes[:, event_index]
        eta = EFFECT_SCALE * self.coefficients(layout.encode_codes(codes) * self.feature_mask).squeeze(1)
        ones = codes.new_ones(len(codes), 1)
        log_event, log_censor = self.log_event_rates(ones), self.log_censor_rates(ones)  # (n, n_bins) each
        n_bins = layout.n_bins
        edges = torch.arange(n_bins, dtype=codes.dtype) / n_bins
        exposure = (unit_time[:, None] - edges[None, :]).clamp(0.0, 1.0 / n_bins)
        last = (unit_time * n_bins).long().clamp(0, n_bins - 1)[:, None]
        event_ll = event * (log_event.gather(1, last).squeeze(1) + eta) - eta.exp() * (log_event.exp() * exposure).sum(
            1
        )
        censor_ll = (1.0 - event) * log_censor.gather(1, last).squeeze(1) - (log_censor.exp() * exposure).sum(1)
        return -(event_ll + censor_ll), eta
