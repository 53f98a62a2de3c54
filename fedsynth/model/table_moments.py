"""Each encoded input's mean and SD under a run's consistent DP 1-way marginal tables.

What the survival head reads off the tables: its covariates' centres (``survival_centre =
"tables"``) and the spreads behind its effect rates (:mod:`fedsynth.model.effect_rates`). Both
are post-processing of DP releases: no privacy cost.
"""

from __future__ import annotations

import numpy as np

from fedsynth.data.schema import ColumnKind
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.layout import INDICATOR_SUFFIX, Layout


def encoded_moments(layout: Layout, target: MarginalTarget) -> tuple[np.ndarray, np.ndarray]:
    """(means, spreads), each (encoded_width,), NaN where no 1-way table describes a position (the
    outcome's, which the head does not read).

    ``means`` are the inputs as the network reads them: a missing value's input is 0, so a
    numeric column's mean is its present share times the present values' mean. ``spreads`` are
    SDs: numeric, over present values only, from the histogram over the column's [0, 1] bins
    (uniform within a bin); binary and categorical, each level's indicator; a missingness
    indicator, the missing cell's share.
    """
    means = np.full(layout.encoded_width, np.nan)
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
        missing = counts[spec.n_bins] / total if spec.missing else 0.0
        if indicator:
            means[head.in_start] = missing
            spreads[head.in_start] = np.sqrt(missing * (1.0 - missing))
            continue
        present = counts[: spec.n_bins]
        if present.sum() <= 0:
            continue
        shares = present / present.sum()
        if head.kind == ColumnKind.CATEGORICAL or head.kind == ColumnKind.BINARY:
            levels = np.sqrt(shares * (1.0 - shares))
            # A binary's one input is its level-1 indicator; a categorical has one input per level.
            chosen = slice(1, 2) if head.kind == ColumnKind.BINARY else slice(None)
            means[head.in_start : head.in_stop] = (1.0 - missing) * shares[chosen]
            spreads[head.in_start : head.in_stop] = levels[chosen]
        else:
            edges = spec.unit_edges()
            centres, widths = (edges[:-1] + edges[1:]) / 2.0, np.diff(edges)
            mean = float(shares @ centres)
            variance = float(shares @ (centres**2 + widths**2 / 12.0)) - mean**2
            means[head.in_start] = (1.0 - missing) * mean
            spreads[head.in_start] = np.sqrt(max(variance, 0.0))
    return means, spreads


def table_centres(layout: Layout, target: MarginalTarget) -> np.ndarray:
    """(encoded_width,) the survival head's fixed covariate centres: each input's mean under the
    tables, the midpoint 0.5 where no table describes it (positions the head does not read)."""
    means, _ = encoded_moments(layout, target)
    return np.where(np.isfinite(means), means, 0.5)


def check_centres(values: object, width: int) -> np.ndarray:
    """Centres as a site receives them: ``width`` finite numbers in [0, 1] (the encoding's range),
    else ValueError."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (width,):
        raise ValueError(f"the survival head's centres must hold {width} numbers, got shape {array.shape}")
    if not (np.isfinite(array).all() and (array >= 0.0).all() and (array <= 1.0).all()):
        raise ValueError("the survival head's centres must be finite numbers within [0, 1]")
    return array
