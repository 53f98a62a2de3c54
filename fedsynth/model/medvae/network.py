"""The Med-VAE's encoder and decoder over the MCM's encoding and output heads.

Inputs are :meth:`Layout.encode_codes` (one-hot categoricals: a first linear layer over them is
the paper's learned category embedding, one weight vector per category); outputs are the
MCM's per-column logits (:class:`~fedsynth.model.layout.Layout`), so the loss
(:func:`~fedsynth.model.loss.column_nll`) and the draws decode every column kind as the MCM does.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsynth.model.layout import Layout
from fedsynth.model.loss import column_nll


def _stack(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
        # LayerNorm, not the paper's batch norm: it normalises each row on its own, so Opacus'
        # per-sample gradients exist and DP-SGD's clipping bounds each row's influence.
        layers += [nn.Linear(width_in, width_out), nn.LayerNorm(width_out), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class MedVAENetwork(nn.Module):
    """Encoder (hidden widths, then mean and log variance of the latent) and mirrored decoder."""

    def __init__(self, layout: Layout, hidden: tuple[int, ...], latent: int, bin_smoothing: float = 0.75) -> None:
        super().__init__()
        self.layout = layout
        self.latent = latent
        self.bin_smoothing = bin_smoothing
        self.encoder = _stack([layout.encoded_width, *hidden])
        self.mean = nn.Linear(hidden[-1], latent)
        self.log_var = nn.Linear(hidden[-1], latent)
        self.decoder = _stack([latent, *reversed(hidden)])
        self.output = nn.Linear(hidden[0], layout.output_width)

    def encode(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log variance) of q(z | row) for model codes (n, n_columns)."""
        hidden = self.encoder(self.layout.encode_codes(codes))
        return self.mean(hidden), self.log_var(hidden).clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Every column's logits (n, output_width) for latent points ``z``."""
        return self.output(self.decoder(z))

    def forward(self, codes: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction NLL, KL to the prior) per row, with ``noise`` the reparameterisation's N(0, I)."""
        mean, log_var = self.encode(codes)
        z = mean + torch.exp(0.5 * log_var) * noise
        return self.reconstruction_nll(self.decode(z), codes), kl_to_prior(mean, log_var)

    def reconstruction_nll(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(n,) NLL summed over every present cell (a missing value, missing = "model", is no
        target: its indicator column says it is missing)."""
        present = ~self.layout.missing_mask(codes)
        nll = column_nll(self.layout, logits, codes, self.bin_smoothing)
        return (nll * present.to(nll.dtype)).sum(dim=1)


def kl_to_prior(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """(n,) KL(N(mean, exp(log_var)) || N(0, I)) per row."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=1)
