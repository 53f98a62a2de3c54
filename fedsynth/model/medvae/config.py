"""Typed settings of the Med-VAE generator (founding paper: seed 004, Supplementary Text)."""

from __future__ import annotations

from pydantic import Field

from fedsynth.model.config import GeneratorConfig


class MedVAEConfig(GeneratorConfig):
    """Architecture and training of the Med-VAE; defaults follow the paper where it says.

    Attributes
    ----------
    hidden : tuple of int, default (88, 60, 32)
        Encoder layer widths (the paper's); the decoder mirrors them.
    latent : int, default 32
        Latent dimensions (the paper's).
    n_bins : int, default 64
        Bins of each numeric column's output histogram: the MCM's heads, so numeric, time and
        event columns are decoded the same way (the paper's linear outputs would need clipping).
    bin_smoothing : float, default 0.75
        Gaussian spread, in bins, of each numeric target (as :class:`~fedsynth.model.config.MCMConfig`).
    beta : float, default 1.0
        KL scaling (beta-VAE): the weight of the KL term once annealing is over.
    kl_anneal_fraction : float, default 0.5
        Share of the training steps over which the KL weight rises linearly from 0 to ``beta``.
        The paper anneals across all epochs; reaching full weight halfway lets the last epochs
        fit the latent to the prior that sampling draws from.
    epochs : int, default 200
        The paper's 200 passes.
    learning_rate : float, default 1e-3
        Adam's (the paper's).
    batch_size : int, default 64
    seed : int, default 0
    """

    hidden: tuple[int, ...] = Field((88, 60, 32), min_length=1)
    latent: int = Field(32, ge=1)
    n_bins: int = Field(64, ge=2, le=1024)
    bin_smoothing: float = Field(0.75, ge=0)
    beta: float = Field(1.0, ge=0)
    kl_anneal_fraction: float = Field(0.5, ge=0, le=1)
    epochs: int = Field(200, ge=1, le=100_000)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
