"""Typed configuration of the MCM generator and its training, loadable from TOML."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsynth.config_files import read_toml, validate_sections
from fedsynth.errors import UserError


class ModelConfigError(UserError, ValueError):
    """A model config file is invalid; the message names the table or key and the known ones."""


class MCMConfig(BaseModel):
    """Architecture and training settings; defaults follow the MCM papers where they say.

    Attributes
    ----------
    hidden : int, default 64
        Width of the attention-MLP blocks (seed 000/001 use 64).
    n_bins : int, default 64
        Bins of the categorical distribution over [0, 1] for each numeric column; the sampler
        draws uniformly inside a bin, so this is the resolution of model-only samples.
    mask_min, mask_max : float, default 0.10, 0.95
        Range of the per-row masking ratio of the papers' dynamic masking (seed 000).
    order_mask_fraction : float, default 0.5
        Share of training rows masked as the sampler sees them: a random order with a random
        number (0 .. d-1) of visible features. The papers never sample from nothing; our
        model-only sampler does, so it must be trained on those contexts too.
    iterate_averaging : float, default 0.0
        DP-SGD training only: the weights a site sends are an exponential moving average of
        its DP-SGD iterates spanning this fraction of the round's steps (decay
        ``1 - 1 / (fraction x steps per round)``), not the last iterate (0: off). Why: every
        step adds Gaussian noise and the last iterate carries the latest of it; averaging
        iterates averages the noise out, while a span fixed in steps would lag a model still
        moving at sites with few steps per round (decay 0.9 cost ACTG320, 25 steps per round,
        0.013 in TSTR C-index while it raised FLChain's HR-in-CI, 136 steps, 57.5% -> 64%).
        Off in the federated defaults: a span of 0.1 gained FLChain 3.8 points in a 10-seed
        sweep, but the Flower benchmark read FLChain 57.5% and ACTG320 -0.086, worse than the
        -0.049 recorded without it (``federated_sweep.json``, "span0.1").
        No privacy cost: DP-SGD's guarantee covers every iterate, and the average is
        post-processing of them.
    lr_schedule : {"cosine", "constant"}, default "cosine"
        Cosine decay of the learning rate to zero over training: the last steps refine
        instead of adding noise to the final weights, which the sampler then amplifies.
    bin_smoothing : float, default 0.75
        Standard deviation, in bins, of a Gaussian spread of each numeric target over
        neighbouring bins (histogram-loss smoothing): small data otherwise gives spiky
        histograms (WHAS500 ages 77/78 drawn 9 vs 1115 times). 0 means the one-hot target.
    outcome_last : bool, default True
        The sampler draws survival time and event after every covariate, from the model's
        p(outcome | all covariates): the factorisation a Cox model reads. Random orders draw
        the outcome before some covariates and then need p(covariate | outcome) to be as
        good; on ACTG320 (rare events) TSTR C-index trailed TRTR by 0.044 that way, 0.017
        outcome-last (3 seeds, ``benchmarks/quality.py``).
    outcome_last_share : float, default 0.5
        With ``outcome_last``, the share of order-masked training rows whose order also puts
        the outcome last (the rest keep random orders). All of them: ACTG320 gap 0.014 but
        WHAS500 0.027 (from 0.010); half: 0.017 and 0.007.
    survival_head : bool, default False
        A second, low-dimensional output: the distribution of (event, time) given every
        covariate (see ``survival_form``), trained on every row of every step alongside the
        masked loss, and used by
        the sampler to draw the outcome after all covariates (outcome conditions still use the
        MCM's own heads). Why: under DP-SGD the MCM learns p(outcome | all covariates) only
        from the few training contexts that show it, and drowns that signal in noise; a
        low-dimensional head sees it in every row (federated ACTG320/FLChain at epsilon 4:
        see ``benchmarks/results/federated_quality.json``).
    survival_form : {"joint", "hazard"}, default "hazard"
        The survival head's shape. ``"joint"``: a linear map from the covariates to the joint
        (event, time bin) logits, 2 x n_bins x d weights. ``"hazard"``: discrete-time competing
        hazards of the event and of censoring, a baseline per time bin plus one linear effect
        of the covariates per cause (2 x (n_bins + d) weights): the proportional-hazards
        shape a Cox model reads, and far fewer weights for DP-SGD's noise to land on. Hazard
        vs joint at epsilon 4 (federated sweep, 5 seeds): see ``survival_effect_scale``; the
        joint form trailed by 0.107 (ACTG320) and 0.103 (FLChain) in TSTR C-index.
    survival_effect_scale : float, default 8.0
        With ``survival_form = "hazard"``: the covariate effects are this constant times their
        weights. Why: DP-SGD clips each record's whole gradient to one norm, and the few
        effect weights (what a Cox model reads) got a small share of it next to the network and
        the baseline, so their signal drowned in the noise. Scaling them up gives them a larger
        share of the clipped gradient (and larger Adam steps) at no privacy cost: a public
        reparametrisation. Federated ACTG320 at epsilon 4, 5 seeds: TSTR C-index gap -0.217 at
        1, -0.072 at 4, -0.039 at 8, -0.065 at 16 (``benchmarks/results/federated_sweep.json``).
    survival_centre : {"midpoint", "marginal"}, default "midpoint"
        With ``survival_form = "hazard"``: where the covariates are centred before the linear
        effects. ``"midpoint"``: 0.5, the middle of the [0, 1] encoding. ``"marginal"``: the
        model's own marginal mean of each encoding (MCMNetwork.marginal_encoding), a function
        of the weights alone, so no privacy cost. Why: around the midpoint a skewed covariate
        is nearly constant, so its effect doubles as an intercept and absorbs the baseline's
        error under DP-SGD (FLChain's mgus: log-HR -1.2 to -1.6, real 95% CI about [-0.5, 0.7]).
    survival_level : bool, default False
        With ``survival_form = "hazard"``: one intercept per cause at the effects' scale (the
        effects' bias). Why: the per-bin baseline moves one learning rate per step, the effects
        ``survival_effect_scale`` times that; without a level as fast as they are, the overall
        event and censoring rates are learned slowly and centred effects lag behind them.
    survival_effect_steps : int, default 0
        With ``survival_form = "hazard"`` under DP-SGD at a site: the planned step count that
        ``survival_effect_scale`` suits. A site that plans fewer steps (a small site, or few
        rounds) gives the effects a learning rate sqrt(survival_effect_steps / planned steps)
        times its own, at least 1x and at most 2x; 0: always 1x. Why: Adam moves every
        weight about one learning rate per step, so in few steps the effects stop short of
        what the data say (ACTG320's CD4 count, 100 steps per site), while a faster rate over
        many steps only adds noise (FLChain, 675 steps). Measured, it does not pay: federated
        ACTG320 at epsilon 4 with the DP noise held the same for both settings (20 paired
        seeds), 2x trails 1x by 0.007 +- 0.004 in TSTR C-index gap ("paired-effects-lr-1x" in
        ``benchmarks/results/federated_sweep.json``), and the head fitted alone agrees (2x
        trails by 0.015 +- 0.009, ``head_dp_limit.json``), so the federated default is 0; kept
        as an option for sites with far fewer steps.
        A choice of the site's optimiser, not of the model: sampling never reads it.
    dp_head_clip_fraction : float or None, default None
        With ``survival_head`` under DP-SGD at a site: group-wise clipping. Each record's
        gradient of the survival head is clipped to this fraction f of the site's
        ``privacy.max_grad_norm`` C, and its gradient of the rest of the network (the masked
        model: trunk and per-column heads), times ``dp_masked_model_gain``, to sqrt(1 - f^2) C;
        None: one clip of the whole gradient to C. Either way a record's clipped gradient has
        norm <= C, which the noise is calibrated to: no privacy cost. Why: under one clip the
        head's per-record gradients (its effects are scaled up, see survival_effect_scale;
        median norm about 6 on ACTG320) fill the clip norm of 10 while the masked model's are
        about 1.5, and the noise (2.1 x 10 on every weight) drowned the model of the
        covariates: ACTG320's synthetic covariates read a mean KS of 0.28 against the real.
    dp_masked_model_gain : float, default 1.0
        With ``dp_head_clip_fraction``: the masked model's per-record gradients are multiplied
        by this before their clip, which is the same as clipping them at 1/gain of their norm
        and adding 1/gain of the noise to them (Adam does not see a common factor): the gain
        gives the masked model's small gradients a share of the noise budget that fits them.
        Measured (federated ACTG320 at epsilon 4, 20 seeds, the DP noise held the same for
        both settings): f 0.95 with gain 4 against one clip: mean KS 0.280 -> 0.195
        (-0.086 +- 0.002), the head's own C-index -0.000 +- 0.002, HR-in-CI -0.004 +- 0.017;
        gain 2: KS 0.219; f 0.9 with gain 4: KS 0.168 but HR-in-CI -0.030 +- 0.017. The price:
        Cox on the samples ranks real patients worse, TSTR C-index -0.0066 +- 0.0017 (mean of
        10 synthetic draws per model; one draw: -0.002 +- 0.006), as the covariates lose the
        spread that made the Cox fit on them easier than on the real rows; the Flower
        benchmark read -0.055 over 60 seeds against -0.047 (``"group-clipping"`` in
        ``benchmarks/results/federated_sweep.json``, ``federated_quality.json``). So off in
        the federated defaults, whose target is that C-index: a choice for a federation that
        values the covariates' distribution more.
        Both are choices of the site's optimiser, not of the model: sampling never reads them.
    survival_head_weight : float, default 1.0
        Weight of the survival head's loss next to the masked loss (one per-record loss, so
        DP-SGD clips and noises both in one mechanism: no extra privacy cost).
    weight_decay : float, default 0.01
        Adam's L2 penalty in the plain (non-DP) fit. Why: unpenalised, 1000 epochs on a few
        hundred rows copy patients (WHAS500: DCR share 0.64, distance-MIA AUC 0.60); with
        0.01 and the validation split below, mean DCR share 0.53-0.55 and MIA AUC <= 0.52 on
        WHAS500, GBSG2 and ACTG320 (3 seeds). The price is survival utility: the penalty shrinks
        the outcome's weak dependence on the covariates (ACTG320 TSTR C-index gap 0.017 -> 0.074;
        ``benchmarks/results/quality_fit_defaults.json``,
        ``docs/research/2026-12-03-fit-memorisation.md``). DP-SGD ignores it (the federated
        defaults set 0): its noise is the regulariser there.
    validation_fraction : float, default 0.2
        Plain fit only: this share of the rows (seeded) is held out of training to score a
        validation loss after every epoch (masked NLL under fixed masks); 0 trains on all rows
        with no early stop.
    early_stopping_patience : int or None, default None
        Plain fit with a validation split: the weights of the epoch with the lowest validation
        loss are kept (the validation loss rising is the sign that the model has started to
        learn the training rows, not the population); with a patience, training also stops
        after that many epochs without a lower one. None by default: a patience of 100 stopped
        WHAS500 and GBSG2 at epochs 190-390 of the 1000-epoch cosine schedule, mid-way down
        the learning rate, and cost survival utility (C-index gap 0.017 / 0.040 against 0.008 /
        0.011 with no patience, at the same DCR share).
    epochs : int or None, default None
        None means ``auto_epochs`` epochs, capped at ``max_auto_steps`` optimiser steps. Small
        clinical tables need many passes (quality runs: ~1000 epochs was best on WHAS500,
        GBSG2 and ACTG320; fewer under-fit ACTG320, more over-fit WHAS500); the step cap keeps
        large tables (FLChain) to about half a minute.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden: int = Field(64, ge=4, le=4096)
    n_bins: int = Field(64, ge=2, le=1024)
    mask_min: float = Field(0.10, ge=0.0, le=1.0)
    mask_max: float = Field(0.95, ge=0.0, le=1.0)
    order_mask_fraction: float = Field(0.5, ge=0.0, le=1.0)
    bin_smoothing: float = Field(0.75, ge=0.0, le=16.0)
    outcome_last: bool = True
    outcome_last_share: float = Field(0.5, ge=0.0, le=1.0)
    survival_head: bool = False
    survival_form: Literal["joint", "hazard"] = "hazard"
    survival_effect_scale: float = Field(8.0, gt=0.0, le=1000.0)
    survival_centre: Literal["midpoint", "marginal"] = "midpoint"
    survival_level: bool = False
    survival_effect_steps: int = Field(0, ge=0, le=10_000_000)
    survival_head_weight: float = Field(1.0, ge=0.0, le=100.0)
    dp_head_clip_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    dp_masked_model_gain: float = Field(1.0, gt=0.0, le=1000.0)
    epochs: int | None = Field(None, ge=1, le=100_000)
    auto_epochs: int = Field(1000, ge=1)
    max_auto_steps: int = Field(10_000, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = Field(0.01, ge=0)
    iterate_averaging: float = Field(0.0, ge=0, le=1)
    validation_fraction: float = Field(0.2, ge=0.0, le=0.5)
    early_stopping_patience: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check_combinations(self) -> MCMConfig:
        if self.mask_min > self.mask_max:
            raise ValueError(f"mask_min ({self.mask_min}) must be <= mask_max ({self.mask_max})")
        if self.dp_head_clip_fraction is not None and not self.survival_head:
            raise ValueError(
                "dp_head_clip_fraction clips the survival head apart from the rest: set survival_head = true, "
                "or leave dp_head_clip_fraction unset (one clip for the whole gradient)"
            )
        if self.dp_masked_model_gain != 1.0 and self.dp_head_clip_fraction is None:
            raise ValueError(
                f"dp_masked_model_gain ({self.dp_masked_model_gain:g}) needs the masked model's own clip: "
                "set dp_head_clip_fraction (e.g. 0.95), or leave dp_masked_model_gain at 1"
            )
        return self

    def resolved_epochs(self, n_rows: int) -> int:
        """Epochs to run for ``n_rows`` training rows."""
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(1, math.ceil(n_rows / self.batch_size))
        return max(1, min(self.auto_epochs, self.max_auto_steps // steps_per_epoch))

    @classmethod
    def from_toml(cls, path: str | Path, section: str = "model") -> MCMConfig:
        """The ``[section]`` table of ``path``; any other table or an unknown key is refused, naming
        the known ones (a misspelt ``[modle]`` would otherwise train with every default)."""
        data = read_toml(path, ModelConfigError, "model config")
        return validate_sections(cls, data, main=section, sections=(), error_type=ModelConfigError, source=str(path))
