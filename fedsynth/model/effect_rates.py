"""Per-covariate step sizes for the survival head's effects, from the run's DP marginal tables.

Why: under DP-SGD the Gaussian noise dominates Adam's second moment, so every effect moves by
about the same amount per step whatever its covariate's spread. An effect on a narrow covariate
(WHAS500's age spreads an SD of 0.16 over its [0, 1] encoding, a binary up to 0.5) then needs
several times the steps of one on a binary, and a correlated binary takes its effect meanwhile.
Scaling each effect's step by the inverse of its covariate's variance, a diagonal Fisher
preconditioner (an effect's information grows with its covariate's variance), moves every effect
at about the same pace in units of its covariate's SD. Measurements:
docs/research/2026-12-05-effect-rates.md.

The variances come from the coordinator's consistent DP tables and the rates scale steps taken
on noisy gradients: both post-processing of DP releases, no privacy cost.

A level of a binary or categorical covariate never steps faster than Adam's own pace: its small
variance means few records carry it (not a wide encoding, as for a numeric column), and a faster
step multiplies the DP noise on an effect those few records inform.
"""

from __future__ import annotations

import numpy as np

from fedsynth.data.schema import ColumnKind
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.layout import Layout
from fedsynth.model.table_moments import encoded_moments

SPREAD_FLOOR = 0.02  # an encoded SD below this (a level in under 0.04% of rows) counts as this
RATE_BOUNDS = (1.0 / 16.0, 16.0)  # no effect steps more than 16 times faster or slower than today


def encoded_spreads(layout: Layout, target: MarginalTarget) -> np.ndarray:
    """The SD of every encoded input position under the target's 1-way tables; NaN for a position
    no 1-way table describes (:func:`fedsynth.model.table_moments.encoded_moments`)."""
    return encoded_moments(layout, target)[1]


def inverse_variance_rates(layout: Layout, target: MarginalTarget, covariate_input: np.ndarray) -> np.ndarray:
    """(encoded_width,) step multipliers: (g / s_j)^2 for each covariate input j, with s_j its
    encoded SD (floored) and g the geometric mean of those SDs, bounded by ``RATE_BOUNDS`` and by
    1 for a discrete level; 1 where the head reads no covariate or no table gives the spread."""
    spreads = encoded_spreads(layout, target)
    live = (np.asarray(covariate_input) > 0) & np.isfinite(spreads)
    rates = np.ones(layout.encoded_width)
    if not live.any():
        return rates
    floored = np.maximum(spreads[live], SPREAD_FLOOR)
    centre = float(np.exp(np.log(floored).mean()))
    rates[live] = np.clip((centre / floored) ** 2, *RATE_BOUNDS)
    discrete = live & ~_numeric_inputs(layout)
    rates[discrete] = np.minimum(rates[discrete], 1.0)
    return rates


def _numeric_inputs(layout: Layout) -> np.ndarray:
    numeric = np.zeros(layout.encoded_width, dtype=bool)
    for head in layout.numeric:
        numeric[head.in_start : head.in_stop] = True
    return numeric


def check_rates(rates: object, width: int) -> np.ndarray:
    """``rates`` as sent to a site: ``width`` finite numbers within ``RATE_BOUNDS``, else ValueError."""
    try:
        values = np.asarray(rates, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("effect-rates must be a list of numbers") from None
    if values.shape != (width,):
        raise ValueError(f"effect-rates must hold {width} numbers (the model's inputs), got shape {values.shape}")
    low, high = RATE_BOUNDS
    if not (np.isfinite(values).all() and (values >= low).all() and (values <= high).all()):
        raise ValueError(f"effect-rates must be finite numbers within [{low:g}, {high:g}]")
    return values


def input_names(layout: Layout) -> list[str]:
    """A name for every encoded input position: the column, or ``column=level`` for a categorical."""
    names: list[str] = []
    for head in layout.heads:
        if head.kind == ColumnKind.CATEGORICAL:
            names.extend(f"{head.column.name}={label}" for label in head.column.labels)
        else:
            names.append(head.column.name)
    return names
