"""Fidelity of a synthetic sample to a site's real rows: marginals, correlations, survival curves.

What a survival analyst looks at before fitting anything:

* each column's marginal: two-sample KS statistic for numeric columns, total-variation distance
  for binary and categorical ones (both 0 for identical distributions, 1 for disjoint ones), on
  present values; for a missing = "model" column also its missing share, real and synthetic;
* the dependence between columns: the largest and mean absolute difference of the Pearson
  correlation matrices of the schema's design (numeric as is, categoricals one-hot, pairwise
  complete), with a 0/1 ``name:missing`` column per missing = "model" column, so that whether a
  value is missing is compared in its relation to the outcome and the other columns too;
* the survival curves: Kaplan-Meier real vs synthetic, overall and within each level of every
  binary covariate, on a fixed grid, with the largest vertical gap, the mean gap, and a
  log-rank test of equality (lifelines). The gaps matter more than the test: two samples with
  the same times (e.g. time and event shuffled apart) have equal numbers at risk throughout,
  so the log-rank statistic is exactly 0 however different the curves;
* SurvivalGAN's two failure modes (Norcliffe et al., 2023): *optimism* (synthetic survival
  curve above the real one on average, signed) and *short-sightedness* (synthetic follow-up
  ending before the real one: 1 - max synthetic time / max real time).

For the figures: each column's histogram, real vs synthetic, on bins fixed by the public schema
(numeric: ``HISTOGRAM_BINS`` equal bins between the declared bounds; others: the declared
levels), and both correlation matrices.

Every number is an aggregate, and no grid is placed by the data: the curves' grid ends at the
real follow-up's 95th percentile *rounded up to a twentieth of the time column's public bound*
(an exact quantile is one patient's time), and a histogram cell holding fewer than
``MIN_CELL_ROWS`` real rows is withheld (``None``), as statistical offices suppress small cells.
A real Kaplan-Meier curve is cut (``None``) from the first grid point where fewer than
``MIN_GROUP_ROWS`` real rows remain at risk: its tail would show a handful of patients' times.
A real correlation is withheld for a site under ``MIN_GROUP_ROWS`` rows, and for a 0/1 design
column with fewer than ``MIN_CELL_ROWS`` real rows on either side (a rare level's indicator).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from scipy.stats import ks_2samp

from fedsynth.data.schema import Column, ColumnKind, ColumnRole, Schema
from fedsynth.data.transforms import encode_labels
from fedsynth.evaluation.utility import design_matrix
from fedsynth.suppression import MIN_CELL_ROWS, MIN_GROUP_ROWS, is_small_indicator

CURVE_POINTS = 50
# Small-cell suppression (the minimums live in fedsynth.suppression): a Kaplan-Meier curve of a
# handful of patients shows each one's event time (to the grid's resolution); groups with fewer
# than MIN_GROUP_ROWS rows on either side are listed, not drawn; a histogram cell needs
# MIN_CELL_ROWS real rows before its share is released.
HISTOGRAM_BINS = 20
GRID_STEPS = 20  # the KM grid ends on a multiple of (time bound / GRID_STEPS)


def total_variation(real: pd.Series, synthetic: pd.Series) -> float:
    """Half the L1 distance between the two columns' category frequencies."""
    p = real.astype(str).value_counts(normalize=True)
    q = synthetic.astype(str).value_counts(normalize=True)
    return float(0.5 * p.subtract(q, fill_value=0.0).abs().sum())


def missing_share(real: pd.Series, synthetic: pd.Series) -> dict[str, float | None]:
    """Share of missing values, real and synthetic; the real one is withheld (None) when fewer than
    ``MIN_CELL_ROWS`` real values are missing, or present (it would count those few rows)."""
    absent = int(real.isna().sum())
    small = min(absent, len(real) - absent) < MIN_CELL_ROWS
    return {
        "real": None if small or len(real) == 0 else absent / len(real),
        "synthetic": float(synthetic.isna().mean()) if len(synthetic) else 0.0,
    }


def marginal_distances(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, dict[str, Any]]:
    """Per column: the statistic's name and value (KS for numeric, TV for the others) on present
    values, and for a missing = "model" column its ``missing`` shares (:func:`missing_share`)."""
    out: dict[str, dict[str, Any]] = {}
    for column in schema.columns:
        present = real[column.name].dropna(), synthetic[column.name].dropna()
        if column.is_numeric:
            statistic = ks_2samp(present[0].to_numpy(float), present[1].to_numpy(float)).statistic
            out[column.name] = {"statistic": "ks", "value": float(statistic)}
        else:
            out[column.name] = {"statistic": "tv", "value": total_variation(*present)}
        if column.models_missing:
            out[column.name]["missing"] = missing_share(real[column.name], synthetic[column.name])
    return out


def histogram_edges(column: Column) -> np.ndarray:
    """``HISTOGRAM_BINS`` + 1 equal-width edges between the column's public bounds."""
    return np.linspace(float(column.lower), float(column.upper), HISTOGRAM_BINS + 1)


def _shares(counts: np.ndarray, total: int) -> np.ndarray:
    return counts / total if total else np.zeros_like(counts, dtype=float)


def marginal_histograms(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, dict[str, Any]]:
    """Per column, real and synthetic shares per public bin or level; small real cells withheld.

    Numeric columns: ``edges`` are :func:`histogram_edges` (public, recomputable from the schema);
    discrete columns: ``levels`` are the declared ones, in order. Shares are of the present values;
    a missing = "model" column's ``missing`` share (:func:`missing_share`) stands apart, so that a
    withheld small missing count cannot be read back as one minus the bins' total.
    """
    out: dict[str, dict[str, Any]] = {}
    for column in schema.columns:
        if column.is_numeric:
            edges = histogram_edges(column)
            counts = [np.histogram(np.clip(f[column.name].dropna().to_numpy(float), edges[0], edges[-1]), edges)[0]
                      for f in (real, synthetic)]  # fmt: skip
            entry: dict[str, Any] = {"kind": "bins"}
        else:
            levels = list(column.labels)
            counts = [np.bincount(encode_labels(column, f[column.name].dropna()), minlength=len(levels))
                      for f in (real, synthetic)]  # fmt: skip
            entry = {"kind": "levels", "levels": levels}
        real_share, synthetic_share = _shares(counts[0], int(counts[0].sum())), _shares(counts[1], int(counts[1].sum()))
        small = withheld_cells(counts[0])
        entry["real"] = [None if hide else float(v) for v, hide in zip(real_share, small, strict=True)]
        entry["synthetic"] = [float(v) for v in synthetic_share]
        entry["withheld_cells"] = int(small.sum())
        if column.models_missing:
            entry["missing"] = missing_share(real[column.name], synthetic[column.name])
        out[column.name] = entry
    return out


def withheld_cells(counts: np.ndarray) -> np.ndarray:
    """Which cells of a real histogram to withhold: those under ``MIN_CELL_ROWS`` rows, and where
    that is a single cell, the next smallest too; shares sum to one, so one withheld share alone
    would be one minus the others."""
    small = counts < MIN_CELL_ROWS
    if small.sum() == 1 and len(counts) > 1:
        shown = np.flatnonzero(~small)
        small[shown[np.argmin(counts[shown])]] = True
    return small


def small_indicator_columns(design: pd.DataFrame) -> list[str]:
    """The 0/1 columns of a design with fewer than ``MIN_CELL_ROWS`` rows on one side: a correlation
    with such a column describes those few rows."""
    return [name for name in design.columns if is_small_indicator(design[name].to_numpy(float))]


def correlation_matrices(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Pearson correlations of the design's columns, real and synthetic (``None`` for a constant column).

    The real matrix is withheld whole (every entry ``None``) under ``MIN_GROUP_ROWS`` real rows, and
    in the row and column of each :func:`small_indicator_columns` column; ``real_withheld`` names them,
    with the reason (a mapping: an empty list would read as a list of numbers of no allowed length).
    """
    real_design, synthetic_design = (_with_indicators(f, schema) for f in (real, synthetic))
    columns = list(real_design.columns)
    if len(real) < MIN_GROUP_ROWS:
        withheld = dict.fromkeys(columns, f"fewer than {MIN_GROUP_ROWS} real rows")
    else:
        reason = f"fewer than {MIN_CELL_ROWS} real rows in a level"
        withheld = dict.fromkeys(small_indicator_columns(real_design), reason)
    hidden = list(withheld)

    def matrix(design: pd.DataFrame, withheld: list[str]) -> list[list[float | None]]:
        values = design[columns].corr().to_numpy()
        mask = np.isin(columns, withheld)
        return [[float(v) if math.isfinite(v) and not (mask[i] or mask[j]) else None for j, v in enumerate(row)]
                for i, row in enumerate(values)]  # fmt: skip

    return {"columns": columns, "real": matrix(real_design, hidden), "synthetic": matrix(synthetic_design, []),
            "real_withheld": withheld}  # fmt: skip


def _with_indicators(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The design with missing values as NaN (correlations pairwise complete) and a 0/1
    ``name:missing`` column per missing = "model" column, before time and event."""
    design = design_matrix(frame, schema, complete=False)
    for column in schema.modelled_missing:
        design.insert(len(design.columns) - 2, f"{column.name}:missing", frame[column.name].isna().to_numpy(float))
    return design


def survival_grid_end(real: pd.DataFrame, schema: Schema) -> float:
    """The real follow-up's 95th percentile, rounded up to a multiple of (public time bound / GRID_STEPS)."""
    bound = float(schema.column(schema.time_column).upper)
    step = bound / GRID_STEPS
    quantile = float(np.quantile(real[schema.time_column].to_numpy(float), 0.95))
    return min(bound, step * max(1, math.ceil(quantile / step)))


def correlation_gaps(matrices: dict[str, Any]) -> list[tuple[float, int, int]]:
    """(|corr_real - corr_synthetic|, i, j) for each column pair of :func:`correlation_matrices`
    that both sides have (a pair with a column constant or withheld on either side, ``None``
    there, is skipped); ``i`` and ``j`` index ``matrices["columns"]``."""
    real, synthetic = matrices["real"], matrices["synthetic"]
    return [
        (abs(real[i][j] - synthetic[i][j]), i, j)
        for i in range(len(real))
        for j in range(i + 1, len(real))
        if real[i][j] is not None and synthetic[i][j] is not None
    ]


def correlation_difference(matrices: dict[str, Any]) -> dict[str, float]:
    """Max and mean |corr_real - corr_synthetic| over the column pairs of :func:`correlation_gaps`."""
    gaps = [gap for gap, _, _ in correlation_gaps(matrices)]
    return {"max_abs": max(gaps) if gaps else 0.0, "mean_abs": float(np.mean(gaps)) if gaps else 0.0}


@dataclass(frozen=True)
class SurvivalCurveComparison:
    """Kaplan-Meier curves of one group, real vs synthetic, on a shared grid."""

    group: str
    n_real: int
    n_synthetic: int
    max_gap: float
    mean_gap: float
    optimism: float  # mean (S_synthetic - S_real) over the grid: > 0 means synthetic patients live longer
    logrank_p: float
    grid: list[float] = field(repr=False)
    real_survival: list[float | None] = field(repr=False)  # None from where < MIN_GROUP_ROWS are at risk
    synthetic_survival: list[float] = field(repr=False)
    real_cut_at: float | None = None  # the first grid time withheld, None when the whole curve is shown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def at_risk_cut(times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Grid points whose number at risk (rows with time >= t) is under ``MIN_GROUP_ROWS``; the
    count only falls, so once cut a curve stays cut."""
    at_risk = len(times) - np.searchsorted(np.sort(times), grid, side="left")
    return at_risk < MIN_GROUP_ROWS


def compare_survival(
    real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, group: str = "all", horizon: float | None = None
) -> SurvivalCurveComparison:
    """KM curves of ``real`` and ``synthetic`` on a grid from 0 to ``horizon`` (default:
    :func:`survival_grid_end`, where the real curve still rests on enough patients)."""
    time, event = schema.time_column, schema.event_column
    if horizon is None:
        horizon = survival_grid_end(real, schema)
    grid = np.linspace(0.0, horizon, CURVE_POINTS)
    curves = []
    for frame in (real, synthetic):
        fitter = KaplanMeierFitter().fit(frame[time].to_numpy(float), frame[event].to_numpy(float) > 0)
        curves.append(fitter.survival_function_at_times(grid).to_numpy())
    cut = at_risk_cut(real[time].to_numpy(float), grid)
    shown = ~cut
    # The gaps are read where the real curve is released: beyond it they would carry its tail.
    gap = (curves[1] - curves[0])[shown] if shown.any() else np.zeros(1)
    test = logrank_test(
        real[time].to_numpy(float),
        synthetic[time].to_numpy(float),
        real[event].to_numpy(float) > 0,
        synthetic[event].to_numpy(float) > 0,
    )
    return SurvivalCurveComparison(
        group=group,
        n_real=len(real),
        n_synthetic=len(synthetic),
        max_gap=float(np.abs(gap).max()),
        mean_gap=float(np.abs(gap).mean()),
        optimism=float(gap.mean()),
        logrank_p=float(test.p_value),
        grid=grid.tolist(),
        real_survival=[None if hide else float(v) for v, hide in zip(curves[0], cut, strict=True)],
        synthetic_survival=curves[1].tolist(),
        real_cut_at=float(grid[cut.argmax()]) if cut.any() else None,
    )


def short_sightedness(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> float:
    """1 - (longest synthetic follow-up / longest real one), floored at 0 (SurvivalGAN's metric).

    Rounded to 0.01: whoever holds the model can redraw the synthetic sample, so the exact
    ratio would give away the longest real follow-up, one patient's time.
    """
    time = schema.time_column
    longest = float(real[time].max())
    ratio = max(0.0, 1.0 - float(synthetic[time].max()) / longest) if longest > 0 else 0.0
    return round(ratio, 2)


def survival_by_group(
    real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema
) -> tuple[list[SurvivalCurveComparison], dict[str, str]]:
    """Curves overall and within each level of each binary feature; groups too small are listed."""
    horizon = survival_grid_end(real, schema)
    comparisons = [compare_survival(real, synthetic, schema, "all", horizon)]
    skipped: dict[str, str] = {}
    for column in schema.columns:
        if column.role is not ColumnRole.FEATURE or column.kind is not ColumnKind.BINARY:
            continue
        for level in sorted(pd.unique(real[column.name].dropna()), key=str):
            name = f"{column.name}={level}"
            real_group = real[real[column.name] == level]
            synthetic_group = synthetic[synthetic[column.name] == level]
            if min(len(real_group), len(synthetic_group)) < MIN_GROUP_ROWS:
                skipped[name] = f"{len(real_group)} real and {len(synthetic_group)} synthetic rows (< {MIN_GROUP_ROWS})"
                continue
            comparisons.append(compare_survival(real_group, synthetic_group, schema, name, horizon))
    return comparisons, skipped


@dataclass(frozen=True)
class Fidelity:
    """All fidelity aggregates of one synthetic sample against one set of real rows."""

    marginals: dict[str, dict[str, Any]]
    mean_ks: float
    mean_tv: float
    correlation: dict[str, float]
    histograms: dict[str, dict[str, Any]]
    correlation_matrices: dict[str, Any]
    survival: list[SurvivalCurveComparison]
    survival_not_compared: dict[str, str]
    short_sightedness: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["survival"] = [s.to_dict() for s in self.survival]
        return out


def fidelity(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> Fidelity:
    """Marginals, correlations and survival curves of ``synthetic`` against ``real``."""
    marginals = marginal_distances(real, synthetic, schema)
    ks = [m["value"] for m in marginals.values() if m["statistic"] == "ks"]
    tv = [m["value"] for m in marginals.values() if m["statistic"] == "tv"]
    survival, skipped = survival_by_group(real, synthetic, schema)
    matrices = correlation_matrices(real, synthetic, schema)
    return Fidelity(
        marginals=marginals,
        mean_ks=float(np.mean(ks)) if ks else math.nan,
        mean_tv=float(np.mean(tv)) if tv else math.nan,
        correlation=correlation_difference(matrices),
        histograms=marginal_histograms(real, synthetic, schema),
        correlation_matrices=matrices,
        survival=survival,
        survival_not_compared=skipped,
        short_sightedness=short_sightedness(real, synthetic, schema),
    )
