"""Make noisy marginal tables consistent, by post-processing only.

Summed noisy tables disagree: cells are negative, totals differ, and a covariate's 1-way
histogram is not the margin of its 2-way table. Calibration needs one distribution, so:

1. one total N: the inverse-variance weighted mean of the tables' totals (a table of k cells
   released at weight w has total variance k s^2 / w^2, each cell s^2 / w^2);
2. one margin per column: the inverse-variance weighted mean of that column's margin in every
   table holding it (a margin summing k cells per entry has variance k s^2 / w^2), projected
   onto the non-negative tables of total N (:func:`nonnegative`);
3. one (time bin x event) joint: the weighted mean of it in every table holding it, projected
   and fitted (IPF) to the time and event margins of step 2;
4. each covariate x time x event table clipped at 0 and fitted (IPF) to its covariate's margin
   and that joint; each other 2-way table to its two columns' margins.

Inputs that are already consistent and non-negative come back unchanged (every estimate agrees,
and IPF of a table already on its margins does nothing). Only the released tables are read.
"""

from __future__ import annotations

import math

import numpy as np

from fedsynth.marginals.tables import MarginalSpec

IPF_SWEEPS = 200
IPF_TOLERANCE = 1e-10  # relative to the total; IPF on two margins converges fast


def make_consistent(noisy: dict[str, np.ndarray], spec: MarginalSpec) -> dict[str, np.ndarray]:
    """Non-negative tables with one total and 2-way margins equal to the 1-way tables."""
    tables = {t.name: np.asarray(noisy[t.name], dtype=np.float64).reshape(t.shape) for t in spec.tables}
    total = _weighted(
        [tables[t.name].sum() for t in spec.tables], [t.weight**2 / math.prod(t.shape) for t in spec.tables]
    )
    total = max(float(total), 0.0)
    margins = {b.name: _column_margin(b.name, tables, spec, total) for b in spec.bins if _holds(spec, b.name)}
    time, event = spec.time_column, spec.event_column
    with_outcome = [t for t in spec.tables if t.columns[-2:] == (time, event)]
    joint = None
    if with_outcome:
        # (time bin x event) from every table holding it, weighted by the cells each entry sums.
        estimates = [tables[t.name].reshape(-1, *t.shape[-2:]).sum(axis=0) for t in with_outcome]
        weights = [t.weight**2 / (math.prod(t.shape) // math.prod(t.shape[-2:])) for t in with_outcome]
        joint = ipf_2d(nonnegative(_weighted(estimates, weights), total), margins[time], margins[event])
    out: dict[str, np.ndarray] = {}
    for t in spec.tables:
        # Clipped, not projected: a projection zeroes whole regions of a large table, and a zero
        # pattern can leave no fit to the margins; the margins themselves were projected above.
        clipped = np.clip(tables[t.name], 0.0, None)
        if len(t.columns) == 1:
            out[t.name] = margins[t.columns[0]].copy()
        elif t.columns == (time, event):
            out[t.name] = joint
        elif len(t.columns) == 3 and joint is not None and t.columns[1:] == (time, event):
            out[t.name] = ipf_2d(clipped.reshape(t.shape[0], -1), margins[t.columns[0]], joint.reshape(-1)).reshape(
                t.shape
            )
        elif len(t.columns) == 2:
            out[t.name] = ipf_2d(clipped, margins[t.columns[0]], margins[t.columns[1]])
        else:
            raise ValueError(f"table '{t.name}': only 1-way, 2-way and covariate x time x event tables are supported")
    return {t.name: out[t.name] for t in spec.tables}


def _holds(spec: MarginalSpec, name: str) -> bool:
    return any(name in t.columns for t in spec.tables)


def _column_margin(name: str, tables: dict[str, np.ndarray], spec: MarginalSpec, total: float) -> np.ndarray:
    estimates, weights = [], []
    for t in spec.tables:
        if name in t.columns:
            axis = t.columns.index(name)
            others = tuple(i for i in range(len(t.shape)) if i != axis)
            estimates.append(tables[t.name].sum(axis=others) if others else tables[t.name])
            weights.append(t.weight**2 / (math.prod(t.shape) // t.shape[axis]))
    return nonnegative(_weighted(estimates, weights), total)


def nonnegative(values: np.ndarray, total: float) -> np.ndarray:
    """The non-negative table summing to ``total`` nearest to ``values`` (least squares).

    Clipping negative cells and rescaling keeps every empty cell's positive noise, so a column
    whose public bounds are wide gains mass in its empty tails; the projection subtracts one
    constant from every cell and clips, which zeroes such cells (Norm-Sub, Wang et al. 2020).
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if total <= 0.0:
        return np.zeros_like(values, dtype=np.float64)
    ordered = np.sort(flat)[::-1]
    cumulative = np.cumsum(ordered) - total
    k = np.arange(1, flat.size + 1)
    fits = ordered - cumulative / k > 0
    rho = int(np.nonzero(fits)[0][-1]) if fits.any() else flat.size - 1
    shift = cumulative[rho] / (rho + 1)
    return np.clip(flat - shift, 0.0, None).reshape(np.shape(values))


def _weighted(values: list, weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return sum(wi * np.asarray(v, dtype=np.float64) for wi, v in zip(w / w.sum(), values, strict=True))


def ipf_2d(table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Iterative proportional fitting of a non-negative matrix to row and column sums (same total).

    A row (column) with no mass but a positive target is first filled as the product of the
    margins' shares, the independence guess, since scaling cannot move mass into zeros.
    """
    rows, cols = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
    total = rows.sum()
    if total <= 0.0:
        return np.zeros_like(table, dtype=np.float64)
    fitted = np.array(table, dtype=np.float64)
    independence = np.outer(rows, cols) / total
    empty_rows = (fitted.sum(axis=1) <= 0.0) & (rows > 0.0)
    fitted[empty_rows] = independence[empty_rows]
    empty_cols = (fitted.sum(axis=0) <= 0.0) & (cols > 0.0)
    fitted[:, empty_cols] = independence[:, empty_cols]
    for _ in range(IPF_SWEEPS):
        fitted *= _ratio(rows, fitted.sum(axis=1))[:, None]
        fitted *= _ratio(cols, fitted.sum(axis=0))[None, :]
        if np.abs(fitted.sum(axis=1) - rows).max() <= IPF_TOLERANCE * total:
            break
    return fitted


def _ratio(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    return np.divide(target, current, out=np.zeros_like(target), where=current > 0.0)
