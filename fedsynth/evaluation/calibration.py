"""Calibration of a Cox model's predicted risk at a horizon, overall and in clinical subgroups.

Seed 000's central claim is calibration: a model trained with MCM-augmented data predicts
risk closer to what is observed, overall and in each subgroup (stratified calibration). At a
horizon t0 the predicted risk is P(T <= t0 | x) = 1 - S(t0 | x). Reported, on real rows:

* ICI and E50 (Austin, Harrell & van Klaveren 2020): mean and median absolute gap between
  predicted and observed risk, "observed" from a Cox model of the outcome on a restricted
  cubic spline of cloglog(predicted risk), as in the paper. (lifelines'
  ``survival_probability_calibration`` does the same with a spline survival model, but in the
  installed lifelines 0.30 its fit silently fails — warnings suppressed — and every "observed"
  risk is 0: ICI equalled the mean predicted risk on WHAS500, so it is not used.)
* calibration-in-the-large: observed risk (1 - Kaplan-Meier at t0) minus mean predicted risk;
* calibration slope: the Cox coefficient of the model's linear predictor refitted on the rows
  (1 is ideal; < 1 means predictions too extreme, the usual sign of overfitting).

Per subgroup (each level of each binary covariate, and declared definitions) the same numbers,
plus the worst-group gap (seed 003's fairness view): the spread of ICI over subgroups.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter

from fedsynth.data.schema import ColumnKind, ColumnRole, Schema
from fedsynth.evaluation.small_cox import SmallCox, SmallCoxError, fit_small_cox
from fedsynth.evaluation.utility import complete_cases, design_matrix
from fedsynth.suppression import MIN_CELL_ROWS, MIN_GROUP_ROWS

REASON_LENGTH = 150  # a failure's reason travels in a site's reply: short, like every label there
MIN_SUBGROUP_EVENTS = 5  # fewer events before the horizon: the subgroup's calibration is not estimable
RISK_GRID = np.round(np.linspace(0.025, 0.975, 39), 3)  # predicted risks a calibration curve is given at
# Each grid point's cell: the predicted risks nearer to it than to its neighbours (0 and 1 at the ends).
RISK_CELL_EDGES = np.concatenate([[0.0], (RISK_GRID[:-1] + RISK_GRID[1:]) / 2, [1.0 + 1e-9]])


def short_reason(exc: Exception) -> str:
    """A short, data-free reason for a number that could not be computed."""
    return f"{type(exc).__name__}: {exc}"[:REASON_LENGTH]


class CalibrationError(ValueError):
    """Calibration cannot be estimated on these rows (the message says why)."""


@dataclass(frozen=True)
class Calibration:
    """Calibration of predicted risk at ``horizon`` on one set of real rows."""

    horizon: float
    n: int
    events_before_horizon: int
    ici: float
    e50: float
    observed_risk: float
    mean_predicted_risk: float
    in_the_large: float
    slope: float
    # Smoothed observed risk at each RISK_GRID point (None outside the predicted range, or withheld): for the figure.
    curve: list[float | None] = field(default_factory=list, repr=False)
    curve_withheld: int = 0  # grid points inside the range withheld: fewer than MIN_CELL_ROWS rows in their cell

    def to_dict(self, curve: bool = True) -> dict[str, Any]:
        out = asdict(self)
        if not curve:
            out.pop("curve")
            out.pop("curve_withheld")
        return out


def predicted_risk(model: CoxPHFitter, design: pd.DataFrame, horizon: float) -> np.ndarray:
    """P(T <= horizon | x) for every row, from the fitted Cox model."""
    survival = model.predict_survival_function(design[list(model.params_.index)], times=[horizon])
    return 1.0 - survival.T.to_numpy()[:, 0]


def _cloglog(risk: np.ndarray) -> np.ndarray:
    clipped = np.clip(risk, 1e-10, 1 - 1e-10)
    return np.log(-np.log(1.0 - clipped))


def restricted_cubic_spline(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Harrell's restricted cubic spline basis: x and (len(knots) - 2) terms linear beyond the ends."""
    k = np.asarray(knots, dtype=float)
    last, before_last = k[-1], k[-2]
    scale = (last - k[0]) ** 2
    columns = [x]
    for knot in k[:-2]:
        columns.append(
            (
                np.maximum(x - knot, 0) ** 3
                - np.maximum(x - before_last, 0) ** 3 * (last - knot) / (last - before_last)
                + np.maximum(x - last, 0) ** 3 * (before_last - knot) / (last - before_last)
            )
            / scale
        )
    return np.column_stack(columns)


@dataclass(frozen=True)
class ObservedRiskSmoother:
    """Austin et al.'s smoother: a Cox model of the outcome on a restricted cubic spline (knots at
    the 10/50/90th percentiles) of cloglog(predicted risk); "observed" risk at any predicted risk."""

    model: SmallCox
    knots: np.ndarray
    horizon: float

    @staticmethod
    def _basis(risk: np.ndarray, knots: np.ndarray) -> np.ndarray:
        x = _cloglog(np.asarray(risk, float))
        return restricted_cubic_spline(x, knots) if len(knots) == 3 else x[:, None]

    def __call__(self, risk: np.ndarray) -> np.ndarray:
        return 1.0 - self.model.survival_at(self._basis(risk, self.knots), self.horizon)

    @classmethod
    def fit(cls, risk: np.ndarray, design: pd.DataFrame, horizon: float) -> ObservedRiskSmoother:
        knots = np.unique(np.percentile(_cloglog(risk), [10, 50, 90]))
        basis = cls._basis(risk, knots)
        model = fit_small_cox(basis, design["_time"].to_numpy(), design["_event"].to_numpy(), penalizer=1e-6)
        return cls(model, knots, horizon)


def observed_risk_curve(risk: np.ndarray, design: pd.DataFrame, horizon: float) -> np.ndarray:
    """Austin et al.'s "observed" risk at ``horizon`` for each row (see :class:`ObservedRiskSmoother`)."""
    return ObservedRiskSmoother.fit(risk, design, horizon)(risk)


def calibration_curve(smoother: ObservedRiskSmoother, risk: np.ndarray) -> tuple[list[float | None], int]:
    """Smoothed observed risk at each point of the public ``RISK_GRID`` inside the predicted range,
    and how many of those points are withheld.

    A fixed grid, not the rows' own predictions: a curve through every row's predicted risk
    would be one number per patient. Grid points outside the predicted range are ``None``
    (the spline is not extrapolated), and so are those whose cell (:data:`RISK_CELL_EDGES`) holds
    fewer than ``MIN_CELL_ROWS`` rows, or every point when there are fewer than ``MIN_GROUP_ROWS``
    rows: there the curve would be drawn by a few patients.
    """
    inside = (risk.min() <= RISK_GRID) & (risk.max() >= RISK_GRID)
    cells = np.histogram(risk, RISK_CELL_EDGES)[0]
    enough = (cells >= MIN_CELL_ROWS) & (len(risk) >= MIN_GROUP_ROWS)
    observed = smoother(RISK_GRID)
    curve = [float(o) if ok and big else None for o, ok, big in zip(observed, inside, enough, strict=True)]
    return curve, int((inside & ~enough).sum())


def calibration(model: CoxPHFitter, rows: pd.DataFrame, schema: Schema, horizon: float, ax: Any = None) -> Calibration:
    """Calibration of ``model`` at ``horizon`` on real ``rows`` (their complete cases, as every Cox
    score reads them); draws the curve on ``ax`` if given."""
    rows = complete_cases(rows, schema)
    design = design_matrix(rows, schema)
    events = int(((design["_event"] > 0) & (design["_time"] <= horizon)).sum())
    if events < MIN_SUBGROUP_EVENTS:
        # No count in the text: a site sends it as a subgroup's reason, and a count this small
        # (or the group's row count beside it) is a small cell of its real rows.
        raise CalibrationError(
            f"fewer than {MIN_SUBGROUP_EVENTS} events before the horizon {horizon:g}; calibration needs at least "
            f"{MIN_SUBGROUP_EVENTS}: choose an earlier horizon or a larger group"
        )
    risk = predicted_risk(model, design, horizon)
    smoother = ObservedRiskSmoother.fit(risk, design, horizon)
    observed_curve = smoother(risk)
    gaps = np.abs(observed_curve - risk)
    if ax is not None:
        order = np.argsort(risk)
        ax.plot(risk[order], observed_curve[order], label="smoothed observed")
        ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=0.8)
        ax.set_xlabel(f"predicted risk by t = {horizon:g}")
        ax.set_ylabel("observed risk")
    curve, withheld = calibration_curve(smoother, risk)
    km = KaplanMeierFitter().fit(design["_time"], design["_event"])
    observed = 1.0 - float(km.survival_function_at_times(horizon).iloc[0])
    return Calibration(
        horizon=float(horizon),
        n=len(rows),
        events_before_horizon=events,
        ici=float(gaps.mean()),
        e50=float(np.median(gaps)),
        observed_risk=observed,
        mean_predicted_risk=float(risk.mean()),
        in_the_large=observed - float(risk.mean()),
        slope=calibration_slope(model, design),
        curve=curve,
        curve_withheld=withheld,
    )


def calibration_slope(model: CoxPHFitter, design: pd.DataFrame) -> float:
    """Coefficient of the model's linear predictor in a Cox fit on ``design`` (1 = calibrated; NaN
    where the refit has no maximum)."""
    linear = np.log(model.predict_partial_hazard(design[list(model.params_.index)]).to_numpy())
    try:
        refit = fit_small_cox(linear - linear.mean(), design["_time"].to_numpy(), design["_event"].to_numpy())
    except SmallCoxError:  # e.g. the predictor separates the events: no slope, the other figures stand
        return math.nan
    return float(refit.params[0])


def binary_subgroups(rows: pd.DataFrame, schema: Schema) -> dict[str, pd.Series]:
    """Each level of each binary feature as a boolean row mask named ``column=level``."""
    groups: dict[str, pd.Series] = {}
    for column in schema.columns:
        if column.role is ColumnRole.FEATURE and column.kind is ColumnKind.BINARY:
            for level in pd.unique(rows[column.name].dropna()):
                groups[f"{column.name}={level}"] = rows[column.name] == level
    return groups


@dataclass(frozen=True)
class StratifiedCalibration:
    """Calibration in each subgroup, the subgroups that could not be assessed, and the spread."""

    groups: dict[str, Calibration]
    not_estimable: dict[str, str]
    mean_ici: float
    worst_group: str | None
    worst_group_gap: float  # max ICI - min ICI over the assessed subgroups

    def to_dict(self) -> dict[str, Any]:
        return {
            # Curves for the overall figure only: per subgroup they would multiply the reply.
            "groups": {name: c.to_dict(curve=False) for name, c in self.groups.items()},
            "not_estimable": self.not_estimable,
            "mean_ici": self.mean_ici,
            "worst_group": self.worst_group,
            "worst_group_gap": self.worst_group_gap,
        }


def stratified_calibration(
    model: CoxPHFitter,
    rows: pd.DataFrame,
    schema: Schema,
    horizon: float,
    subgroups: dict[str, pd.Series] | None = None,
) -> StratifiedCalibration:
    """Calibration per subgroup (default: :func:`binary_subgroups`); too-small groups are listed, not scored."""
    subgroups = binary_subgroups(rows, schema) if subgroups is None else subgroups
    groups, skipped = {}, {}
    for name, mask in subgroups.items():
        try:
            groups[name] = calibration(model, rows[mask.to_numpy()], schema, horizon)
        except (CalibrationError, ValueError, ArithmeticError) as exc:  # too small, or a refit that fails
            skipped[name] = short_reason(exc)
    icis = {name: c.ici for name, c in groups.items()}
    return StratifiedCalibration(
        groups=groups,
        not_estimable=skipped,
        mean_ici=float(np.mean(list(icis.values()))) if icis else math.nan,
        worst_group=max(icis, key=icis.__getitem__) if icis else None,
        worst_group_gap=(max(icis.values()) - min(icis.values())) if icis else math.nan,
    )
