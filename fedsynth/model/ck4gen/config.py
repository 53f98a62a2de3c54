"""Typed settings of the CK4Gen generator (founding paper: seed 002)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedsynth.model.config import GeneratorConfig

Outcome = Literal["model", "copy"]
TeacherKind = Literal["cox", "joint"]


class CK4GenConfig(GeneratorConfig):
    """Architecture, distillation and outcome mode of CK4Gen.

    Attributes
    ----------
    outcome : {"model", "copy"}, default "model"
        Where a row's time and event come from. ``"model"``: drawn from the distilled Cox model
        (its baseline hazard and the sampled covariates' linear predictor) and a censoring
        hazard, so a sample is a function of the model only. ``"copy"``: the paper's variant,
        decoding a stored training row's latent code and copying that row's time and event;
        the model then holds real values and is marked so (``copies_real_values``).
    teacher : {"cox", "joint"}, default "cox"
        ``"cox"``: the paper's teacher, a Cox model fitted on the training rows before
        distillation (lifelines); never DP. ``"joint"``: the same proportional-hazards model
        with piecewise-constant hazards, trained with the network on each record's likelihood;
        the variant the sites train with DP-SGD.
    teacher_averaging : float in [0, 1], default 0.0
        With ``teacher = "joint"`` under DP-SGD: the share of a round's steps over which a site
        averages the teacher's iterates and sends the mean (rounds of at least 100 steps; the
        MCM's survival head does the same, ``MCMConfig.survival_head_averaging``).
    hidden : tuple of int, default (128, 64, 32)
        Encoder layer widths (the paper's encoder has three hidden layers); the decoder mirrors them.
    latent : int, default 16
        Latent dimensions.
    n_bins : int, default 64
        Bins of each numeric output head (the MCM's heads) and of the piecewise-constant
        baseline and censoring hazards on the time column's [0, 1] scale.
    bin_smoothing : float, default 0.75
        Gaussian spread, in bins, of each numeric target (as :class:`~fedsynth.model.config.MCMConfig`).
    distill_weight : float, default 10.0
        Weight of the distillation term: squared error between a linear risk head on the latent
        point and the Cox teacher's standardised linear predictor.
    beta : float, default 1.0
        Weight of the KL term once annealing is over (the prior that ``outcome = "model"`` samples).
    kl_anneal_fraction : float, default 0.5
        Share of the training steps over which the KL weight rises linearly from 0 to ``beta``.
    teacher_penalizer : float, default 0.01
        Ridge penalty of the teacher Cox fit (lifelines), as fedsynth's Cox utility fits use.
    epochs : int, default 100
        Passes over the training rows (chosen from a measurement on the four bundled datasets:
        docs/research/2026-12-05-ck4gen.md).
    learning_rate : float, default 1e-3
        Adam's.
    batch_size : int, default 64
    seed : int, default 0
    """

    outcome: Outcome = "model"
    teacher: TeacherKind = "cox"
    teacher_averaging: float = Field(0.0, ge=0.0, le=1.0)
    hidden: tuple[int, ...] = Field((128, 64, 32), min_length=1)
    latent: int = Field(16, ge=1)
    n_bins: int = Field(64, ge=2, le=1024)
    bin_smoothing: float = Field(0.75, ge=0)
    distill_weight: float = Field(10.0, ge=0)
    beta: float = Field(1.0, ge=0)
    kl_anneal_fraction: float = Field(0.5, ge=0, le=1)
    teacher_penalizer: float = Field(0.01, ge=0)
    epochs: int = Field(100, ge=1, le=100_000)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
