"""Calibrated sampling: weight model-drawn rows to the DP marginal tables, then resample.

The model keeps the conditional structure (what a Cox model reads); the DP tables fix what the
model gets wrong under DP-SGD, the marginals. Two steps:

1. Discrete columns (binary, categorical, event): raking (iterative proportional fitting of the
   rows' weights) to their tables, then n rows by systematic resampling. A missing = "model"
   column's table has a missing cell: a discrete one is raked to it with its levels, a numeric
   one to its (present, missing) split, so the missing share is the DP one too. Numeric columns are
   not raked: a near-flat model puts almost no candidate inside the joint support of six
   concentrated numeric margins (measured: 16 raked margins on 5,000 uniform WHAS500 rows
   stall at mean KS/TVD 0.2), so reweighting whole rows cannot reach them.
2. Numeric columns: quantile mapping over the weighted candidates. Each value goes to the same
   (weighted) quantile of the DP histogram (uniform within a bin of the column's public [0, 1]
   space), ties broken at random, so the model's ranks, and with them its dependence between
   columns, are kept while the marginal becomes the DP one. The time column is mapped within
   each event value, to the consistent (time bin x event) joint, so event and censoring times
   each get their own distribution.

Only the released tables and the model's rows are read: post-processing of DP releases.

Conditions: the caller draws candidates that already satisfy them, so every returned row does.
The unconditional tables say nothing exact about a conditioned population, except a table that
crosses *every* conditioned column: restricted to the cells the conditions allow (a numeric bin
cut by a range keeps the share it overlaps) and renormalised, it is the conditional distribution
of its other columns. Only such tables are used under conditions; without any, rows come back
as the model drew them (resampled uniformly).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from fedsynth.data.conditions import ResolvedCondition
from fedsynth.marginals.consistency import make_consistent
from fedsynth.marginals.quantiles import quantile_map
from fedsynth.marginals.restrict import restricted, source_table
from fedsynth.marginals.tables import MarginalSpec

RAKING_SWEEPS = 200
RAKING_TOLERANCE = 1e-3  # largest total-variation distance between a weighted table and its target
# Weights stay below R times the mean: no candidate stands for more than R average rows, so a few
# rows in a cell the model rarely draws cannot fill the sample with copies of themselves.
WEIGHT_BOUND = 50.0


def calibrate(
    candidates: pd.DataFrame,
    tables: dict[str, np.ndarray],
    spec: MarginalSpec,
    n: int,
    seed: int,
    *,
    conditions: list[ResolvedCondition] | None = None,
    weight_bound: float = WEIGHT_BOUND,
    sweeps: int = RAKING_SWEEPS,
    relations: bool = False,
    redraw_outcome: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """``n`` rows resampled from ``candidates`` (canonical, from the model) weighted to ``tables``.

    ``redraw_outcome``: the model's p(outcome | covariates). Given, the covariates are calibrated
    (the event is not raked), the outcome is drawn again given them, and the time column gets one
    monotone map to its DP margin. A rank-keeping map of a covariate changes its scale, and with it
    the per-unit effect the model learnt (a covariate the model spreads too wide gets a steeper
    hazard ratio); drawing the outcome again keeps that effect.

    Deterministic for a seed. ``tables`` are summed noisy counts; they are made consistent first
    (a no-op on consistent ones). ``relations``: also rake each discrete covariate x event the
    spec releases (the event rate per level; selection "all"). Off by default: on WHAS500 (DP
    federated model, 3 sites, 3 seeds) the noisy rates cost C TSTR 0.73 -> 0.67-0.69 at marginal
    epsilon 0.4-0.8 and HR-in-CI 0.55-0.62 -> 0.36-0.38, for the same marginals
    (docs/research/2026-12-03-marginal-calibration.md).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if len(candidates) == 0:
        if n:
            raise ValueError("no candidate rows to calibrate")
        return candidates.reset_index(drop=True)
    consistent = make_consistent(tables, spec)
    options = {"weight_bound": weight_bound, "sweeps": sweeps, "relations": relations}
    outcome = {spec.event_column} if redraw_outcome is not None else set()
    weights = _rake_consistent(candidates, consistent, spec, conditions=conditions, skip=outcome, **options)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(systematic_resample(weights, n, rng))
    if redraw_outcome is None:
        return quantile_map(candidates, consistent, spec, rng, conditions=conditions, weights=weights, chosen=chosen)
    covariates = {b.name for b in spec.bins if b.numeric and b.name != spec.time_column}
    rows = quantile_map(
        candidates, consistent, spec, rng, conditions=conditions, weights=weights, chosen=chosen, columns=covariates
    )
    rows = redraw_outcome(rows)
    time = {spec.time_column}
    return quantile_map(rows, consistent, spec, rng, conditions=conditions, columns=time, time_within_event=False)


def rake(
    candidates: pd.DataFrame,
    tables: dict[str, np.ndarray],
    spec: MarginalSpec,
    *,
    conditions: list[ResolvedCondition] | None = None,
    weight_bound: float = WEIGHT_BOUND,
    sweeps: int = RAKING_SWEEPS,
    relations: bool = False,
) -> np.ndarray:
    """Raking weights (mean 1) of the candidate rows to the discrete columns' margins; with
    ``relations``, first to each discrete covariate x event as well (the event rate per level).
    All ones when no table applies."""
    consistent = make_consistent(tables, spec)
    options = {"weight_bound": weight_bound, "sweeps": sweeps, "relations": relations}
    return _rake_consistent(candidates, consistent, spec, conditions=conditions, **options)


def _rake_consistent(
    candidates: pd.DataFrame,
    consistent: dict[str, np.ndarray],
    spec: MarginalSpec,
    *,
    conditions: list[ResolvedCondition] | None,
    weight_bound: float,
    sweeps: int,
    relations: bool,
    skip: set[str] | None = None,
) -> np.ndarray:
    """:func:`rake` on tables already made consistent (calibrate makes them so once); ``skip``:
    columns not raked (an outcome drawn again afterwards)."""
    if weight_bound <= 1.0:
        raise ValueError(f"weight_bound must be > 1, got {weight_bound}")
    conditions = conditions or []
    conditioned = {c.column.name for c in conditions}
    discrete = [b for b in spec.bins if not b.numeric and b.name not in (skip or set())]
    cells = {b.name: b.cells(spec.schema.column(b.name), candidates[b.name]) for b in discrete}
    event = spec.event_column
    m = len(candidates)
    joint, margins = [], []
    for name in cells if relations else ():
        table = source_table(spec, (name, event), conditioned) if name != event else None
        if table is not None:
            index = cells[name] * spec.bin(event).n_cells + cells[event]
            joint.append(_target(index, restricted(table, consistent, spec, conditions, (name, event)), m))
    for name, index in cells.items():
        table = source_table(spec, (name,), conditioned)
        if table is not None:
            margins.append(_target(index, restricted(table, consistent, spec, conditions, (name,)), m))
    for b in spec.bins:  # numeric columns with a missing cell: their (present, missing) split
        table = source_table(spec, (b.name,), conditioned) if b.numeric and b.missing else None
        if table is not None:
            target = restricted(table, consistent, spec, conditions, (b.name,))
            split = np.array([target[: b.n_bins].sum(), target[b.n_bins]])
            absent = candidates[b.name].isna().to_numpy().astype(np.int64)
            margins.append(_target(absent, split, m))
    weights = np.ones(m, dtype=np.float64)
    # Covariate x event targets over several covariates need not be reachable together by
    # reweighting a finite set of rows (IPF then cycles); 1-way tables always are. So: rake to
    # all, then to the 1-way tables alone, the nearest weights that match every marginal.
    for phase in (joint + margins, margins):
        _rake_to([t for t in phase if t is not None], weights, weight_bound, sweeps)
    return weights


def _target(index: np.ndarray, target: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(row cells, target weight per cell summing to m), or None for a table with no mass."""
    target = target.reshape(-1)
    # Cells no candidate reached cannot be matched: their share goes to the cells that can.
    target = np.where(np.bincount(index, minlength=target.size) > 0, target, 0.0)
    return (index, target * (m / target.sum())) if target.sum() > 0.0 else None


def _rake_to(targets: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray, bound: float, sweeps: int) -> None:
    """Raking sweeps in place, until every table is within ``RAKING_TOLERANCE`` (TVD) or ``sweeps``."""
    m = len(weights)
    for _ in range(sweeps):
        worst = 0.0
        for index, target in targets:
            current = np.bincount(index, weights, minlength=target.size)
            worst = max(worst, 0.5 * np.abs(current - target).sum() / m)
            factor = np.divide(target, current, out=np.zeros_like(target), where=current > 0.0)
            weights *= factor[index]
            np.minimum(weights, bound, out=weights)
            weights *= m / weights.sum()
        if worst <= RAKING_TOLERANCE:
            return


def systematic_resample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, index i about n * w_i / sum(w) times (low-variance resampling, one uniform)."""
    cdf = np.cumsum(weights)
    positions = (rng.uniform() + np.arange(n)) * (cdf[-1] / n)
    return np.minimum(np.searchsorted(cdf, positions, side="right"), len(weights) - 1)
