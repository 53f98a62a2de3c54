"""Fidelity of a synthetic sample to a site's real rows: marginals, correlations, survival curves.

What a survival analyst looks at before fitting anything:

* each column's marginal: two-sample KS statistic for numeric columns, total-variation distance
  for binary and categorical ones (both 0 for identical distributions, 1 for disjoint ones);
* the dependence between columns: the largest and mean absolute difference of the Pearson
  correlation matrices of the schema's design (numeric as is, categoricals one-hot);
* the survival curves: Kaplan-Meier real vs synthetic, overall and within each level of every
  binary covariate, on a fixed grid, with the largest vertical gap, the mean gap, and a
  log-rank test of equality (lifelines). The gaps matter more than the test: two samples with
  the same times (e.g. time and event shuffled apart) have equal numbers at risk throughout,
  so the log-rank statistic is exactly 0 however different the curves;
* SurvivalGAN's two failure modes (Norcliffe et al., 2023): *optimism* (synthetic survival
  curve above the real one on average, signed) and *short-sightedness* (synthetic follow-up
  ending before the real one: 1 - max synthetic time / max real time).

Every number is an aggregate; the curves are given on a fixed 50-point grid for plotting.
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

from fedsynth.data.schema import ColumnKind, ColumnRole, Schema
from fedsynth.evaluation.utility import design_matrix

CURVE_POINTS = 50
# Small-cell suppression: a Kaplan-Meier curve of a handful of patients shows each one's event
# time (to the grid's resolution); groups with fewer rows on either side are listed, not drawn.
MIN_GROUP_ROWS = 20


def total_variation(real: pd.Series, synthetic: pd.Series) -> float:
    """Half the L1 distance between the two columns' category frequencies."""
    p = real.astype(str).value_counts(normalize=True)
    q = synthetic.astype(str).value_counts(normalize=True)
    return float(0.5 * p.subtract(q, fill_value=0.0).abs().sum())


def marginal_distances(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, dict[str, Any]]:
    """Per column: the statistic's name and value (KS for numeric, TV for the others)."""
    out: dict[str, dict[str, Any]] = {}
    for column in schema.columns:
        if column.is_numeric:
            statistic = ks_2samp(real[column.name].to_numpy(float), synthetic[column.name].to_numpy(float)).statistic
            out[column.name] = {"statistic": "ks", "value": float(statistic)}
        else:
            out[column.name] = {"statistic": "tv", "value": total_variation(real[column.name], synthetic[column.name])}
    return out


def correlation_difference(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """Max and mean |corr_real - corr_synthetic| over the design's column pairs (constant columns skipped)."""
    real_design, synthetic_design = design_matrix(real, schema), design_matrix(synthetic, schema)
    columns = [c for c in real_design.columns if real_design[c].nunique() > 1 and synthetic_design[c].nunique() > 1]
    difference = (real_design[columns].corr() - synthetic_design[columns].corr()).abs().to_numpy()
    upper = difference[np.triu_indices(len(columns), k=1)]
    return {
        "max_abs": float(upper.max()) if len(upper) else 0.0,
        "mean_abs": float(upper.mean()) if len(upper) else 0.0,
    }


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
    real_survival: list[float] = field(repr=False)
    synthetic_survival: list[float] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_survival(
    real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, group: str = "all", horizon: float | None = None
) -> SurvivalCurveComparison:
    """KM curves of ``real`` and ``synthetic`` on a grid from 0 to ``horizon`` (default: the real
    follow-up's 95th percentile, where the real curve still rests on enough patients)."""
    time, event = schema.time_column, schema.event_column
    if horizon is None:
        horizon = float(np.quantile(real[time].to_numpy(float), 0.95))
    grid = np.linspace(0.0, horizon, CURVE_POINTS)
    curves = []
    for frame in (real, synthetic):
        fitter = KaplanMeierFitter().fit(frame[time].to_numpy(float), frame[event].to_numpy(float) > 0)
        curves.append(fitter.survival_function_at_times(grid).to_numpy())
    gap = curves[1] - curves[0]
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
        real_survival=curves[0].tolist(),
        synthetic_survival=curves[1].tolist(),
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
    horizon = float(np.quantile(real[schema.time_column].to_numpy(float), 0.95))
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
    return Fidelity(
        marginals=marginals,
        mean_ks=float(np.mean(ks)) if ks else math.nan,
        mean_tv=float(np.mean(tv)) if tv else math.nan,
        correlation=correlation_difference(real, synthetic, schema),
        survival=survival,
        survival_not_compared=skipped,
        short_sightedness=short_sightedness(real, synthetic, schema),
    )
