"""Quantile mapping of numeric columns onto DP histograms, keeping the model's ranks.

A value at rank r of n goes to a uniform point of [r, r + 1) / n of the target histogram's CDF
(rows are ranked by a point of their weight's slot), uniform within a bin of the column's public
[0, 1] space. Ranks are kept, so the model's dependence between columns (and the Cox model's risk
order, which reads ranks of time) survives; the marginal becomes the DP one. Ties are broken at
random, and resampled copies of a row get points of its slot of their own, so copies come apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsynth.data.conditions import ResolvedCondition
from fedsynth.data.transforms import from_unit, to_unit
from fedsynth.marginals.restrict import restricted, source_table
from fedsynth.marginals.tables import MarginalSpec

# Fewer model values than this in a bin: too few to stand for a shape; uniform within the bin.
MIN_BIN_VALUES = 20


def quantile_map(
    rows: pd.DataFrame,
    consistent: dict[str, np.ndarray],
    spec: MarginalSpec,
    rng: np.random.Generator,
    *,
    conditions: list[ResolvedCondition] | None = None,
    weights: np.ndarray | None = None,
    chosen: np.ndarray | None = None,
    columns: set[str] | None = None,
    time_within_event: bool = True,
) -> pd.DataFrame:
    """``rows.iloc[chosen]`` (default: every row) with every numeric column mapped to its target
    (the time column within each event value); a column with no table crossing every conditioned
    column keeps the model's values.

    ``weights`` (default 1 each): how many rows each of ``rows`` stands for. Each row owns a slot
    of the target's CDF as wide as its weight, in the order of its value; each chosen copy of it
    gets a uniform point of its slot. So rows resampled by these weights have the target's
    marginal, a one-row sample is still a random draw, and copies of a row come apart.

    ``columns``: map only these (default: every numeric column). ``time_within_event=False``: the
    time column by one monotone map to its overall margin, the same for every row, which keeps
    the order of every event and censoring time (a Cox model's risk sets).
    """
    conditions = conditions or []
    conditioned = {c.column.name for c in conditions}
    weights = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    chosen = np.arange(len(rows)) if chosen is None else np.asarray(chosen)
    out = rows.iloc[chosen].reset_index(drop=True)
    time, event = spec.time_column, spec.event_column
    for b in spec.bins:
        if not b.numeric or len(out) == 0 or (columns is not None and b.name not in columns):
            continue
        # The time column within each event value where a table crosses both, else overall.
        within = time_within_event and b.name == time and source_table(spec, (time, event), conditioned)
        keep = (event,) if within else ()
        table = source_table(spec, (b.name, *keep), conditioned)
        if table is None:
            continue
        target = restricted(table, consistent, spec, conditions, (b.name, *keep))
        edges = _edges(b.unit_edges(), [c for c in conditions if c.column.name == b.name])
        column = spec.schema.column(b.name)
        values = rows[b.name].to_numpy(dtype=np.float64)
        units = to_unit(column, values)
        unit = np.full(len(chosen), np.nan)
        if keep:
            event_codes = spec.bin(event).cells(spec.schema.column(event), rows[event])
            groups = [(event_codes == e, target[:, e]) for e in range(target.shape[1])]
        else:
            # Present values only, to the bins' part of the table: a missing value stays missing
            # (raking matched the missing share), the missing cell is no bin.
            groups = [(~np.isnan(values), target[: b.n_bins])]
        for members_mask, group_target in groups:
            members = np.flatnonzero(members_mask)
            picked = np.flatnonzero(members_mask[chosen])
            local = np.searchsorted(members, chosen[picked])
            unit[picked] = _map(units[members], weights[members], local, group_target, edges, rng)
        mapped = np.where(np.isnan(unit), values[chosen], from_unit(column, np.nan_to_num(unit)))
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
    values: np.ndarray,
    weights: np.ndarray,
    chosen: np.ndarray,
    target: np.ndarray,
    edges: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Unit-space values of the ``chosen`` rows at points of their weight slots in the histogram
    ``target``'s CDF; NaN when it or the weights are empty. ``values``: the rows' unit values.

    Within a bin the point goes to the same weighted quantile of the model's own values in that
    bin, so the model's finer shape (its bins are finer than the tables') is kept where it has
    drawn enough values there; uniform within the bin otherwise.
    """
    n = len(values)
    mass = np.clip(np.asarray(target, dtype=np.float64), 0.0, None)
    if len(chosen) == 0 or mass.sum() <= 0.0 or weights.sum() <= 0.0:
        return np.full(len(chosen), np.nan)
    shuffled = rng.permutation(n)  # a stable sort of shuffled rows breaks ties at random
    order = shuffled[np.argsort(values[shuffled], kind="stable")]
    cumulative = np.cumsum(weights[order])
    start = np.empty(n)
    start[order] = cumulative - weights[order]
    quantile = (start[chosen] + rng.random(len(chosen)) * weights[chosen]) / cumulative[-1]
    # The chosen rows keep that order but fill the CDF evenly, one 1/N stratum each: the sample's
    # marginal is then the target's up to 1/N, not up to the noise of which rows were chosen.
    rank = np.empty(len(chosen))
    rank[np.argsort(quantile, kind="stable")] = np.arange(len(chosen))
    quantile = (rank + rng.random(len(chosen))) / len(chosen)
    keep = mass > 0.0
    lo, hi, mass = edges[:-1][keep], edges[1:][keep], mass[keep]
    cdf = np.cumsum(mass) / mass.sum()
    k = np.minimum(np.searchsorted(cdf, quantile, side="right"), len(cdf) - 1)
    start_k = np.concatenate(([0.0], cdf[:-1]))[k]
    within = np.clip((quantile - start_k) / (cdf[k] - start_k), 0.0, 1.0)
    out = lo[k] + within * (hi[k] - lo[k])
    kept = np.flatnonzero(keep)
    # ``order`` sorts by value, so each bin's rows (with weight) are one run of it, in value order.
    ranked = order[weights[order] > 0.0]
    source = np.clip(np.searchsorted(edges, values[ranked], side="right") - 1, 0, len(edges) - 2)
    by_bin = np.argsort(k, kind="stable")
    bin_starts = np.searchsorted(k[by_bin], np.arange(len(kept) + 1))
    for j in np.unique(k):
        first, last = np.searchsorted(source, kept[j], side="left"), np.searchsorted(source, kept[j], side="right")
        if last - first < MIN_BIN_VALUES:
            continue
        members = ranked[first:last]
        w = weights[members]
        positions = (np.cumsum(w) - 0.5 * w) / w.sum()
        rows = by_bin[bin_starts[j] : bin_starts[j + 1]]
        out[rows] = np.interp(within[rows], positions, values[members])
    return out
