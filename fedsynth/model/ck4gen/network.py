"""CK4Gen's encoder, distilled risk head and decoder over the MCM's encoding and output heads.

The encoder reads a row's covariates (:meth:`Layout.encode_codes`, with the time and event
inputs zeroed: a patient's risk profile is a function of the covariates, as the Cox teacher's
is) and gives a Gaussian latent point; a linear risk head on that point is trained to match the
teacher's linear predictor (the knowledge distillation), so patients of different risk stay
apart in the latent space. The decoder gives every column's logits (:class:`Layout`), and the
loss (:func:`~fedsynth.model.loss.column_nll`) reads the covariates' heads only: the outcome
comes from the teacher or the source row, never from the decoder.

The teacher (coefficients, hazards) and, for ``outcome = "copy"``, the library of training
rows' latent means and outcomes are buffers, so they are saved with the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsynth.data.schema import ColumnRole
from fedsynth.model.ck4gen.teacher import Teacher
from fedsynth.model.layout import Layout
from fedsynth.model.loss import column_nll
from fedsynth.model.medvae.network import MedVAENetwork, kl_to_prior


class CK4GenNetwork(MedVAENetwork):
    """Med-VAE's encoder and mirrored decoder over the covariates, plus a linear risk head on the
    latent point; the teacher is kept as buffers."""

    def __init__(self, layout: Layout, hidden: tuple[int, ...], latent: int, bin_smoothing: float = 0.75) -> None:
        super().__init__(layout, hidden, latent, bin_smoothing)
        self.risk = nn.Linear(latent, 1)
        outcome = [h for h in layout.heads if h.column.role != ColumnRole.FEATURE]
        covariate = torch.ones(layout.n_columns, dtype=torch.bool)
        covariate[[h.index for h in outcome]] = False
        self.register_buffer("covariate_columns", covariate, persistent=False)
        keep = torch.ones(layout.encoded_width)
        for head in outcome:
            keep[head.in_start : head.in_stop] = 0.0
        self.register_buffer("covariate_inputs", keep, persistent=False)
        self.register_buffer("beta", torch.zeros(layout.encoded_width))
        self.register_buffer("eta_mean", torch.zeros(()))
        self.register_buffer("eta_scale", torch.ones(()))
        self.register_buffer("event_rates", torch.zeros(layout.n_bins))
        self.register_buffer("censor_rates", torch.zeros(layout.n_bins))
        self.register_buffer("last_bin", torch.tensor(layout.n_bins - 1))
        self.resize_library(0)

    def set_teacher(self, teacher: Teacher) -> None:
        self.beta.copy_(teacher.beta)
        self.eta_mean.fill_(teacher.eta_mean)
        self.eta_scale.fill_(teacher.eta_scale)
        self.event_rates.copy_(teacher.event_rates)
        self.censor_rates.copy_(teacher.censor_rates)
        self.last_bin.fill_(teacher.last_bin)

    def resize_library(self, n: int) -> None:
        """Empty library buffers of ``n`` rows (0 for ``outcome = "model"``: no real row is kept)."""
        self.register_buffer("library_latent", torch.zeros(n, self.latent))
        self.register_buffer("library_time", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("library_event", torch.zeros(n))

    def teacher_eta(self, codes: torch.Tensor) -> torch.Tensor:
        """(n,) the teacher's centred linear predictor for model codes (n, n_columns)."""
        return self.layout.encode_codes(codes) @ self.beta - self.eta_mean

    def encode(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log variance) of q(z | covariates) for model codes (n, n_columns)."""
        hidden = self.encoder(self.layout.encode_codes(codes) * self.covariate_inputs)
        return self.mean(hidden), self.log_var(hidden).clamp(-10.0, 10.0)

    def forward(
        self, codes: torch.Tensor, noise: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row: (covariate reconstruction NLL, KL to the prior, distillation squared error),
        with ``noise`` the reparameterisation's N(0, I) and ``target`` the standardised teacher
        predictor. The risk head reads the noisy point, so risk must survive the latent noise."""
        mean, log_var = self.encode(codes)
        z = mean + torch.exp(0.5 * log_var) * noise
        distill = (self.risk(z).squeeze(1) - target).pow(2)
        return self.reconstruction_nll(self.decode(z), codes), kl_to_prior(mean, log_var), distill

    def reconstruction_nll(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(n,) NLL summed over every present covariate cell (missing values and the outcome are no target)."""
        present = ~self.layout.missing_mask(codes) & self.covariate_columns
        nll = column_nll(self.layout, logits, codes, self.bin_smoothing)
        return (nll * present.to(nll.dtype)).sum(dim=1)
