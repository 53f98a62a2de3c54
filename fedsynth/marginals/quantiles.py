"""Quantile mapping of numeric columns onto DP histograms, keeping the model's ranks.

A value at rank r of n goes to quantile (r + 1/2) / n of the target histogram (with weights, the
weight below it plus half its own, over the total), uniform within a
bin of the column's public [0, 1] space. Ranks are kept, so the model's dependence between
columns (and the Cox model's risk order, which reads ranks of time) survives; the marginal
becomes the DP one. Ties (resampled duplicates) are broken at random, so copies come apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsynth.data.conditions import ResolvedCondition
from fedsynth.data.transforms import from_unit
from fedsynth.marginals.restrict import restricted, source_table
from fedsynth.marginals.tables import MarginalSpec


def quantile_map(
    rows: pd.DataFrame,
    consistent: dict[str, np.ndarray],
    spec: MarginalSpec,
    rng: np.random.Generator,
    *,
    conditions: list[ResolvedCondition] | None = None,
    weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """``rows`` with every numeric column mapped to its target (the time column within each event
    value); a column with no table crossing every conditioned column keeps the model's values.
    ``weights`` (default 1 each): how many rows each stands for, so that rows resampled by these
    weights have the target's marginal."""
    conditions = conditions or []
    conditioned = {c.column.name for c in conditions}
    out = rows.copy()
    weights = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    time, event = spec.time_column, spec.event_column
    for b in spec.bins:
        if not b.numeric or len(rows) == 0:
            continue
        # The time column within each event value where a table crosses both, else overall.
        keep = (event,) if b.name == time and source_table(spec, (time, event), conditioned) else ()
        table = source_table(spec, (b.name, *keep), conditioned)
        if table is None:
            continue
        target = restricted(table, consistent, spec, conditions, (b.name, *keep))
        edges = _edges(b.unit_edges(), [c for c in conditions if c.column.name == b.name])
        column = spec.schema.column(b.name)
        values = out[b.name].to_numpy(dtype=np.float64)
        unit = np.full(len(values), np.nan)
        if keep:
            event_codes = spec.bin(event).cells(spec.schema.column(event), out[event])
            for e in range(target.shape[1]):
                group = np.flatnonzero(event_codes == e)
                unit[group] = _map(values[group], weights[group], target[:, e], edges, rng)
        else:
            unit = _map(values, weights, target, edges, rng)
        mapped = np.where(np.isnan(unit), values, from_unit(column, np.nan_to_num(unit)))
        for c in conditions:
            if c.column.name == b.name and c.lower_value is not None:
                mapped = np.clip(mapped, c.lower_value, c.upper_value)
        out[b.name] = mapped.astype(rows[b.name].dtype)
    return out


def _edges(edges: np.ndarray, conditions: list[ResolvedCondition]) -> np.ndarray:
    """Bin edges clipped to a numeric condition's interval, so mapped values stay inside it."""
    for c in conditions:
        edges = np.clip(edges, c.unit_lower, c.unit_upper)
    return edges


def _map(
    values: np.ndarray, weights: np.ndarray, target: np.ndarray, edges: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Unit-space values at the weighted ranks' quantiles of the histogram ``target``; NaN when it is empty."""
    n = len(values)
    mass = np.clip(np.asarray(target, dtype=np.float64), 0.0, None)
    if n == 0 or mass.sum() <= 0.0 or weights.sum() <= 0.0:
        return np.full(n, np.nan)
    order = np.lexsort((rng.random(n), values))
    cumulative = np.cumsum(weights[order])
    quantile = np.empty(n)
    quantile[order] = (cumulative - 0.5 * weights[order]) / cumulative[-1]
    keep = mass > 0.0
    lo, hi, mass = edges[:-1][keep], edges[1:][keep], mass[keep]
    cdf = np.cumsum(mass) / mass.sum()
    k = np.minimum(np.searchsorted(cdf, quantile, side="right"), len(cdf) - 1)
    start = np.concatenate(([0.0], cdf[:-1]))[k]
    within = np.clip((quantile - start) / (cdf[k] - start), 0.0, 1.0)
    return lo[k] + within * (hi[k] - lo[k])
