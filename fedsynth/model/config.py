"""Typed configuration of the MCM generator and its training, loadable from TOML."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsynth.config_files import read_toml, validate_sections
from fedsynth.errors import UserError

# Off by default, measured not to pay, and removed: their old defaults, which older models and
# runs record (an option at its default trained exactly as this version does).
RETIRED_OPTIONS: dict[str, Any] = {
    "iterate_averaging": 0.0,
    "survival_effect_steps": 0,
    "dp_head_clip_fraction": None,
    "dp_masked_model_gain": 1.0,
}
RETIRED_OPTIONS_NOTE = "docs/research/2026-12-05-model-config-history.md"


def without_retired_options(data: dict[str, Any]) -> dict[str, Any]:
    """A recorded config without the retired options, whatever their values: for sampling from
    a saved model, which none of them ever affected (they were choices of the site's optimiser)."""
    return {k: v for k, v in data.items() if k not in RETIRED_OPTIONS}


class ModelConfigError(UserError, ValueError):
    """A model config file is invalid; the message names the table or key and the known ones."""


class GeneratorConfig(BaseModel):
    """What every generator's config shares: frozen, unknown keys refused, read from TOML.

    The fairness option (issue 24, seed 003; :mod:`fedsynth.model.fairness`), off by default:

    Attributes
    ----------
    fairness_column : str or None, default None
        The declared sensitive column (a binary or categorical feature of the schema): the
        groups whose share of the training loss the fairness weight evens out.
    fairness_weight : float in [0, 1], default 0.0
        The paper's fairness weight: 0 trains exactly as without the option; 1 gives every level
        of ``fairness_column`` the same total weight in the loss (linear in between).
    fairness_shares : tuple of float or None, default None
        Public shares of the column's levels, in label order, that the weights are computed
        from; required for the sites' DP-SGD (a share read off a site's rows would spend
        privacy). None: a plain ``fit`` uses its training rows' shares.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fairness_column: str | None = Field(None, min_length=1)
    fairness_weight: float = Field(0.0, ge=0.0, le=1.0)
    fairness_shares: tuple[float, ...] | None = Field(None, min_length=2)

    @model_validator(mode="after")
    def _check_fairness(self) -> Self:
        """The fairness fields together (the column against a schema: ``fairness.check_fairness``)."""
        if self.fairness_column is None and (self.fairness_weight > 0 or self.fairness_shares is not None):
            named = "fairness_weight > 0" if self.fairness_weight > 0 else "fairness_shares"
            raise ValueError(f"{named} needs fairness_column: name the sensitive column whose levels it weighs")
        shares = self.fairness_shares
        if shares is not None and not (
            all(math.isfinite(s) and s >= 0 for s in shares) and math.isclose(sum(shares), 1.0, abs_tol=1e-3)
        ):
            raise ValueError(f"fairness_shares must be non-negative and sum to 1 (one per level), got {list(shares)}")
        return self

    def fairness_dp_refusal(self) -> str | None:
        """Why the sites cannot run this fairness option under DP-SGD (None: they can)."""
        if self.fairness_weight > 0 and self.fairness_shares is None:
            return (
                "fairness_weight > 0 needs declared fairness_shares under DP-SGD: shares read off a site's rows "
                "would be a statistic of them released without DP; declare the levels' public shares"
            )
        return None

    @classmethod
    def from_toml(cls, path: str | Path, section: str = "model") -> Self:
        """The ``[section]`` table of ``path``; any other table or an unknown key is refused, naming
        the known ones (a misspelt ``[modle]`` would otherwise train with every default)."""
        data = read_toml(path, ModelConfigError, "model config")
        return validate_sections(cls, data, main=section, sections=(), error_type=ModelConfigError, source=str(path))


class MCMConfig(GeneratorConfig):
    """Architecture and training settings of the MCM; defaults follow the MCM papers where they say.

    The measurements behind each default are in ``docs/research/`` (see
    ``2026-12-05-model-config-history.md``); here, one line of why per field.

    Attributes
    ----------
    hidden : int, default 64
        Width of the attention-MLP blocks (seed 000/001 use 64).
    n_bins : int, default 64
        Bins of each numeric column's categorical distribution over [0, 1]; the sampler draws
        uniformly inside a bin, so this is the resolution of model-only samples.
    mask_min, mask_max : float, default 0.10, 0.95
        Range of the per-row masking ratio of the papers' dynamic masking (seed 000).
    order_mask_fraction : float, default 0.5
        Share of training rows masked as the sampler sees them (a random order, a random number
        of visible features): the model-only sampler starts from nothing, the papers never do.
    lr_schedule : {"cosine", "constant"}, default "cosine"
        Cosine decay of the learning rate to zero over the whole run, so the last steps refine
        rather than add noise to the final weights.
    bin_smoothing : float, default 0.75
        Std, in bins, of a Gaussian spread of each numeric target over neighbouring bins: small
        tables otherwise give spiky histograms. 0: one-hot targets.
    outcome_last : bool, default True
        The sampler draws time and event after every covariate, from p(outcome | covariates):
        the factorisation a Cox model reads.
    outcome_last_share : float, default 0.5
        With ``outcome_last``, the share of order-masked training rows that also put the outcome
        last (the rest keep random orders).
    survival_head : bool, default False
        A low-dimensional model of p(outcome | every covariate) trained on every row alongside
        the masked loss; the sampler draws the outcome from it. Under DP-SGD the MCM alone sees
        that conditional in too few training contexts to learn it through the noise.
    survival_form : {"joint", "hazard"}, default "hazard"
        ``"hazard"``: discrete-time competing hazards of event and censoring, a baseline per
        bin plus one linear effect of the covariates per cause (the proportional-hazards shape,
        few weights for DP noise to land on); ``"joint"``: a linear map to the joint logits.
    survival_effect_scale : float, default 8.0
        The hazard effects are this constant times their weights: a public reparametrisation
        that gives the few effect weights a larger share of DP-SGD's clipped gradient.
    survival_centre : {"midpoint", "marginal", "tables"}, default "midpoint"
        Where covariates are centred before the effects, so a skewed covariate's effect does not
        act as an intercept: 0.5; the model's own marginal mean (a function of the weights, no
        privacy cost); or ``"tables"``, fixed means: under DP-SGD each input's mean in the run's
        DP marginal tables, set by the coordinator before round 1 and carried with the weights
        (post-processing), in a plain fit the training rows' means. Under DP the model's own
        marginals stay far from the data (ACTG320's cd4 at 0.47 against 0.22) and move between
        rounds; fixed table means let the head learn cd4's within-stratum effect.
    survival_level : bool, default False
        One intercept per cause at the effects' scale, so the overall event and censoring rates
        move as fast as the effects under DP-SGD.
    survival_head_averaging : float, default 0.0
        Under DP-SGD: the survival head a site sends is the plain mean of its iterates over this
        share of the round's last steps (0: the last iterate). Averaging the noisy iterates of a
        low-dimensional, nearly convex fit cancels much of their noise (post-processing: no
        privacy cost); the rest of the network keeps its last iterate.
    survival_head_averaging_min_steps : int, default 100
        With ``survival_head_averaging``: only a round of at least this many DP-SGD steps
        averages. In a short round the head is still moving and its average lags behind it
        (measured: rounds of 10-25 steps lost hazard-ratio accuracy, rounds of 136 gained).
    survival_effect_rates : {"uniform", "marginals"}, default "uniform"
        Under DP-SGD, in rounds shorter than ``survival_head_averaging_min_steps`` steps (where
        the head's last iterate is sent): ``"marginals"`` scales each effect's step by the
        inverse variance of its covariate in the run's DP marginal tables, normalised by their
        geometric mean and at most 1 for a discrete level (:mod:`fedsynth.model.effect_rates`),
        so a narrow numeric covariate's effect keeps pace with a binary's; ``"uniform"``: Adam's
        steps as they are. Post-processing:
        no privacy cost. In longer rounds the head settles and is averaged instead.
    survival_head_weight : float, default 1.0
        Weight of the survival head's loss next to the masked loss (one per-record loss: DP-SGD
        clips and noises both in one mechanism).
    weight_decay : float, default 0.01
        Adam's L2 penalty in the plain (non-DP) fit, a guard against copying patients; DP-SGD
        runs set 0 (its noise regularises).
    validation_fraction : float, default 0.2
        Plain fit: a seeded share of rows held out to score a validation loss each epoch; the
        best epoch's weights are kept. 0: train on all rows, no early stop.
    early_stopping_patience : int or None, default None
        Plain fit: stop after this many epochs without a lower validation loss; None runs the
        whole schedule (a patience stopped mid-way down the learning rate and cost utility).
    epochs : int or None, default None
        None: ``auto_epochs`` epochs capped at ``max_auto_steps`` optimiser steps (small clinical
        tables need many passes; the cap bounds large ones).
    """

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
    survival_centre: Literal["midpoint", "marginal", "tables"] = "midpoint"
    survival_level: bool = False
    survival_head_averaging: float = Field(0.0, ge=0.0, le=1.0)
    survival_head_averaging_min_steps: int = Field(100, ge=1)
    survival_effect_rates: Literal["uniform", "marginals"] = "uniform"
    survival_head_weight: float = Field(1.0, ge=0.0, le=100.0)
    epochs: int | None = Field(None, ge=1, le=100_000)
    auto_epochs: int = Field(1000, ge=1)
    max_auto_steps: int = Field(10_000, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = Field(0.01, ge=0)
    validation_fraction: float = Field(0.2, ge=0.0, le=0.5)
    early_stopping_patience: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _retired_options(cls, data: Any) -> Any:
        """Drop an option this version no longer has where it holds its old default (older
        models and runs record every field); refuse it with any other value, naming it."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, default in RETIRED_OPTIONS.items():
            if name in data and data.pop(name) != default:
                raise ValueError(
                    f"{name} was a site-optimiser option that is no longer part of fedsynth (measured not to pay: "
                    f"{RETIRED_OPTIONS_NOTE}); remove it from [model], or start a new run for a run trained with it"
                )
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> MCMConfig:
        if self.mask_min > self.mask_max:
            raise ValueError(f"mask_min ({self.mask_min}) must be <= mask_max ({self.mask_max})")
        return self

    def resolved_epochs(self, n_rows: int) -> int:
        """Epochs to run for ``n_rows`` training rows."""
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(1, math.ceil(n_rows / self.batch_size))
        return max(1, min(self.auto_epochs, self.max_auto_steps // steps_per_epoch))
