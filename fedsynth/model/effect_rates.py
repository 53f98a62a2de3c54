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
from fedsynth.model.layout import INDICATOR_SUFFIX, Layout

SPREAD_FLOOR = 0.02  # an encoded SD below this (a level in under 0.04% of rows) counts as this
RATE_BOUNDS = (1.0 / 16.0, 16.0)  # no effect steps more than 16 times faster or slower than today


def encoded_spreads(layout: Layout, target: MarginalTarget) -> np.ndarray:
    """The SD of every encoded input position under the target's 1-way tables; NaN for a position
    no 1-way table describes (the outcome's, which the head does not read).

    Numeric: the histogram over the column's [0, 1] bins, uniform within a bin, present values
    only; binary and categorical: each level's indicator; a missingness indicator: the missing
    cell's share."""
    spreads = np.full(layout.encoded_width, np.nan)
    bins = {b.name: b for b in target.spec.bins}
    for head in layout.heads:
        name = head.column.name
        indicator = name.endswith(INDICATOR_SUFFIX)
        source = name[: -len(INDICATOR_SUFFIX)] if indicator else name
        counts = target.tables.get(source)
        if counts is None or counts.ndim != 1 or source not in bins:
            continue
        spec = bins[source]
        counts = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
        total = counts.sum()
        if total <= 0:
            continue
        if indicator:
            missing = counts[spec.n_bins] / total if spec.missing else 0.0
            spreads[head.in_start] = np.sqrt(missing * (1.0 - missing))
            continue
        present = counts[: spec.n_bins]
        if present.sum() <= 0:
            continue
        shares = present / present.sum()
        if head.kind == ColumnKind.CATEGORICAL or head.kind == ColumnKind.BINARY:
            levels = np.sqrt(shares * (1.0 - shares))
            # A binary's one input is its level-1 indicator; a categorical has one input per level.
            spreads[head.in_start : head.in_stop] = levels[1:2] if head.kind == ColumnKind.BINARY else levels
        else:
            edges = spec.unit_edges()
            centres, widths = (edges[:-1] + edges[1:]) / 2.0, np.diff(edges)
            mean = float(shares @ centres)
            variance = float(shares @ (centres**2 + widths**2 / 12.0)) - mean**2
            spreads[head.in_start] = np.sqrt(max(variance, 0.0))
    return spreads


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
