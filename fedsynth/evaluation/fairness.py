"""Subgroup fairness figures of a synthetic sample across the levels of a sensitive column (issue 24).

Seed 003 (arXiv 2406.02510) judges fairness-optimised synthetic data by what a downstream model
trained on it does for each sensitive group. Here the downstream model is the Cox model of
:mod:`fedsynth.evaluation.utility`, and for each level of the sensitive column, on the real rows
of that level:

* ``cindex_trtr``, ``cindex_tstr``, ``cindex_augmented``: Harrell's C-index on the real holdout of
  a Cox model trained on the real training rows, on the synthetic rows (TSTR), and on both (the
  paper's setting: real data augmented with synthetic data);
* ``calibration_*``: calibration-in-the-large of the same three models at a horizon: observed
  risk (1 - Kaplan-Meier) minus mean predicted risk on the level's holdout rows (signed:
  one group's risk under- and another's over-predicted is the unfairness);
* ``event_rate_real``, ``event_rate_synthetic``: the share of rows with an event among the
  level's real training rows and among its synthetic rows (the paper's disparate impact compares
  such outcome rates between groups); ``share_real``, ``share_synthetic``: the level's share of
  the rows.

The gap of a figure is its max - min over the levels that have it (None with fewer than two).
A level with too few rows for a figure (``MIN_GROUP_ROWS`` rows, ``MIN_SUBGROUP_EVENTS`` events)
gets the reason under ``not_estimable`` instead of a number, as does every figure of a Cox model
that cannot be fitted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter

from fedsynth.data.schema import Schema
from fedsynth.data.transforms import encode_labels
from fedsynth.evaluation.calibration import MIN_SUBGROUP_EVENTS, predicted_risk, short_reason
from fedsynth.evaluation.utility import (
    DEFAULT_PENALIZER,
    CoxFitError,
    cindex_on,
    complete_cases,
    design_matrix,
    estimable_covariates,
    fit_cox,
    varying_covariates,
)
from fedsynth.suppression import MIN_GROUP_ROWS

MODELS = ("trtr", "tstr", "augmented")  # Cox trained on real, synthetic, real + synthetic rows
FIGURES = (
    *(f"cindex_{m}" for m in MODELS),
    *(f"calibration_{m}" for m in MODELS),
    "event_rate_real",
    "event_rate_synthetic",
)
DEFAULT_HORIZON_QUANTILE = 0.5  # of the real training rows' follow-up, when no horizon is given


@dataclass(frozen=True)
class SubgroupFairness:
    """Each level's figures, the reasons for those it lacks, and each figure's gap over the levels."""

    column: str
    horizon: float
    overall: dict[str, float | None]  # each model's C-index on the whole real holdout
    levels: dict[str, dict[str, float | int]]  # level -> figure -> number (and its row counts)
    not_estimable: dict[str, dict[str, str]]  # level -> figure -> why it has no number
    gaps: dict[str, float | None]  # figure -> max - min over the levels that have it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def level_labels(frame: pd.DataFrame, schema: Schema, column: str) -> pd.Series:
    """Each row's level label of the discrete ``column`` (missing values: NaN)."""
    spec = schema.column(column)
    values = frame[column]
    present = values.notna().to_numpy()
    out = pd.Series(np.full(len(frame), np.nan, dtype=object), index=frame.index)
    out[present] = np.asarray(spec.labels, dtype=object)[encode_labels(spec, values[present])]
    return out


def in_the_large(model: CoxPHFitter, rows: pd.DataFrame, schema: Schema, horizon: float) -> float:
    """Observed risk by ``horizon`` (1 - Kaplan-Meier) minus the mean predicted risk, on ``rows``."""
    design = design_matrix(rows, schema)
    risk = predicted_risk(model, design, horizon)
    km = KaplanMeierFitter().fit(design["_time"], design["_event"])
    return 1.0 - float(km.survival_function_at_times(horizon).iloc[0]) - float(risk.mean())


def fit_models(
    train: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, penalizer: float
) -> tuple[dict[str, CoxPHFitter], dict[str, str]]:
    """The three Cox models on the covariates estimable in the real rows (those of them that vary
    in the synthetic ones for TSTR, as :func:`~fedsynth.evaluation.utility.utility_report`), and
    why any of them could not be fitted."""
    covariates, _ = estimable_covariates(design_matrix(train, schema))
    synthetic_covariates = [c for c in covariates if c in varying_covariates(design_matrix(synthetic, schema))]
    inputs = {
        "trtr": (train, covariates),
        "tstr": (synthetic, synthetic_covariates),
        "augmented": (pd.concat([train, synthetic], ignore_index=True), covariates),
    }
    models, failures = {}, {}
    for name, (rows, wanted) in inputs.items():
        try:
            models[name] = fit_cox(rows, schema, penalizer, wanted)
        except (CoxFitError, ValueError, ArithmeticError) as exc:
            failures[name] = short_reason(exc)
    return models, failures


def _event_rate(rows: pd.DataFrame, schema: Schema, what: str) -> float | str:
    if len(rows) < MIN_GROUP_ROWS:
        return f"fewer than {MIN_GROUP_ROWS} {what} rows"
    return float((rows[schema.event_column].to_numpy(dtype=float) > 0).mean())


def _model_figures(
    models: dict[str, CoxPHFitter], failures: dict[str, str], rows: pd.DataFrame, schema: Schema, horizon: float
) -> dict[str, float | str]:
    """Each model's C-index and calibration-in-the-large on one level's holdout ``rows`` (a reason
    where the level is too small or the model failed)."""
    design = design_matrix(rows, schema)
    events = int((design["_event"] > 0).sum())
    early = int(((design["_event"] > 0) & (design["_time"] <= horizon)).sum())
    few_rows = f"fewer than {MIN_GROUP_ROWS} holdout rows" if len(design) < MIN_GROUP_ROWS else None
    few_events = few_rows or (
        f"fewer than {MIN_SUBGROUP_EVENTS} holdout events" if events < MIN_SUBGROUP_EVENTS else None
    )
    few_early = few_rows or (
        f"fewer than {MIN_SUBGROUP_EVENTS} holdout events before the horizon" if early < MIN_SUBGROUP_EVENTS else None
    )
    out: dict[str, float | str] = {}
    for name in MODELS:
        model = models.get(name)
        if model is None:
            out[f"cindex_{name}"] = out[f"calibration_{name}"] = f"Cox fit failed: {failures[name]}"
            continue
        out[f"cindex_{name}"] = few_events or cindex_on(model, rows, schema)
        out[f"calibration_{name}"] = few_early or in_the_large(model, rows, schema, horizon)
    return out


def figure_gap(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(max(finite) - min(finite)) if len(finite) >= 2 else None


def subgroup_fairness(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    schema: Schema,
    column: str,
    horizon: float | None = None,
    penalizer: float = DEFAULT_PENALIZER,
    fitted: tuple[dict[str, CoxPHFitter], dict[str, str]] | None = None,
) -> SubgroupFairness:
    """Subgroup fairness figures of ``synthetic`` across the levels of the discrete ``column``
    (see the module), scored on the real ``holdout``; ``horizon`` defaults to the median follow-up
    of the real training rows. ``fitted``: the three models and their failures as
    :func:`fit_models` returns them for these rows' complete cases (several columns of one
    sample need them once); fitted here when None."""
    spec = schema.column(column)
    if spec.is_numeric:
        raise ValueError(f"the sensitive column {column!r} is {spec.kind}; it must be binary or categorical")
    frames = {"train": train, "holdout": holdout, "synthetic": synthetic}
    frames = {name: complete_cases(frame, schema) for name, frame in frames.items()}
    if horizon is None:
        times = frames["train"][schema.time_column].to_numpy(dtype=float)
        horizon = float(np.quantile(times, DEFAULT_HORIZON_QUANTILE))
    models, failures = (
        fitted if fitted is not None else fit_models(frames["train"], frames["synthetic"], schema, penalizer)
    )
    overall = {f"cindex_{m}": cindex_on(models[m], frames["holdout"], schema) if m in models else None for m in MODELS}
    labels = {name: level_labels(frame, schema, column) for name, frame in frames.items()}
    levels: dict[str, dict[str, float | int]] = {}
    not_estimable: dict[str, dict[str, str]] = {}
    for level in spec.labels:
        part = {name: frame[(labels[name] == level).to_numpy()] for name, frame in frames.items()}
        figures: dict[str, float | str] = {
            **_model_figures(models, failures, part["holdout"], schema, horizon),
            "event_rate_real": _event_rate(part["train"], schema, "real training"),
            "event_rate_synthetic": _event_rate(part["synthetic"], schema, "synthetic"),
        }
        levels[level] = {
            **{f"n_{name}": len(rows) for name, rows in part.items()},
            "share_real": len(part["train"]) / max(1, len(frames["train"])),
            "share_synthetic": len(part["synthetic"]) / max(1, len(frames["synthetic"])),
            **{k: v for k, v in figures.items() if not isinstance(v, str)},
        }
        reasons = {k: v for k, v in figures.items() if isinstance(v, str)}
        if reasons:
            not_estimable[level] = reasons
    gaps = {figure: figure_gap([float(f[figure]) for f in levels.values() if figure in f]) for figure in FIGURES}
    return SubgroupFairness(column, float(horizon), overall, levels, not_estimable, gaps)
