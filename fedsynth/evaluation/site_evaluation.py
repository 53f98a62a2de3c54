"""Everything a site measures about a synthetic sample's survival utility, as aggregates only.

Given the site's real train and holdout rows and a synthetic sample (drawn from the global
model at the site), this runs every evaluation of the survival-utility issue and returns one
JSON-able dict:

* fidelity of the synthetic sample to the site's training rows (marginals, correlations,
  Kaplan-Meier curves overall and per binary covariate, optimism, short-sightedness);
* hazard ratios: Cox on real train vs on synthetic; share of synthetic log-HRs inside the real
  95% CI, sign agreement, mean |delta log-HR|;
* discrimination on the real holdout of Cox trained on real (TRTR), synthetic (TSTR) and real +
  synthetic (augmentation): Harrell's and Uno's C, integrated Brier score;
* calibration on the real holdout at each horizon, overall and per subgroup, for the same three
  models: ICI, E50, in-the-large, slope, worst-group gap;
* given a conditional sampler (the global model), a fourth model: real rows plus conditional
  synthetic rows of each under-represented subgroup (seed 000's conditional augmentation), so
  its stratified calibration can be set against the real-only model's;
* given sensitive columns, subgroup fairness figures across each one's levels (issue 24):
  per level C-index, calibration-in-the-large and event rates, and their gaps.

A model that cannot be fitted (e.g. a covariate constant in the synthetic sample) is reported
with the reason instead of numbers; nothing silently degrades.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedsynth.data.schema import Schema
from fedsynth.evaluation.augmentation import ConditionalSampler, conditional_augmentation
from fedsynth.evaluation.calibration import CalibrationError, short_reason, stratified_calibration
from fedsynth.evaluation.calibration import calibration as calibrate
from fedsynth.evaluation.discrimination import discrimination
from fedsynth.evaluation.fidelity import fidelity
from fedsynth.evaluation.site_fairness import site_fairness
from fedsynth.evaluation.utility import CoxFitError, design_matrix, estimable_covariates, fit_cox, utility_report

DEFAULT_HORIZON_QUANTILES = (0.5,)  # of the training rows' follow-up times, when none are declared
# What scoring a fitted model on real rows can raise: lifelines (no comparable pairs, a
# non-converging refit), scikit-survival (too few distinct times, times past the reference's
# follow-up), numerical trouble. Each is reported for its model and horizon, not fatal.
SCORING_ERRORS = (ValueError, ZeroDivisionError, ArithmeticError, CoxFitError, CalibrationError, RuntimeError)


def failure(exc: Exception) -> dict[str, str]:
    """A number that could not be computed, as ``{"error": short reason}``."""
    return {"error": short_reason(exc)}


def default_horizons(train: pd.DataFrame, schema: Schema) -> list[float]:
    """Horizons at quantiles of the training follow-up (a declared clinical horizon is better)."""
    times = train[schema.time_column].to_numpy(dtype=float)
    return [float(np.quantile(times, q)) for q in DEFAULT_HORIZON_QUANTILES]


def _model_scores(
    model: Any, train: pd.DataFrame, holdout: pd.DataFrame, schema: Schema, horizons: list[float]
) -> dict[str, Any]:
    try:
        scores: dict[str, Any] = {"discrimination": discrimination(model, train, holdout, schema).to_dict()}
    except SCORING_ERRORS as exc:
        scores = {"discrimination": failure(exc)}
    calibration_at: list[dict[str, Any]] = []
    for horizon in horizons:
        entry: dict[str, Any] = {"horizon": horizon}
        try:
            entry["overall"] = calibrate(model, holdout, schema, horizon).to_dict()
        except SCORING_ERRORS as exc:
            entry["overall"] = None
            entry["not_estimable"] = short_reason(exc)
        try:
            entry["subgroups"] = stratified_calibration(model, holdout, schema, horizon).to_dict()
        except SCORING_ERRORS as exc:
            entry["subgroups"] = failure(exc)
        calibration_at.append(entry)
    scores["calibration"] = calibration_at
    return scores


def evaluate_synthetic(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    schema: Schema,
    horizons: list[float] | None = None,
    conditional_sampler: ConditionalSampler | None = None,
    seed: int = 0,
    fairness_columns: list[str] | None = None,
) -> dict[str, Any]:
    """All survival-utility aggregates of ``synthetic`` against a site's real rows; with
    ``fairness_columns``, each one's subgroup fairness figures under ``fairness``
    (:mod:`fedsynth.evaluation.site_fairness`), calibrated at the first horizon."""
    horizons = default_horizons(train, schema) if horizons is None else [float(h) for h in horizons]
    result: dict[str, Any] = {
        "n_train": len(train),
        "n_holdout": len(holdout),
        "n_synthetic": len(synthetic),
        "horizons": horizons,
        "fidelity": fidelity(train, synthetic, schema).to_dict(),
    }
    covariates, _ = estimable_covariates(design_matrix(train, schema))
    fitted: dict[str, Any] = {}
    try:
        report = utility_report(train, holdout, synthetic, schema)
        result["hazard_ratios"] = {
            "hr_in_ci_fraction": report.hr_in_ci_fraction,
            "hr_sign_agreement": report.hr_sign_agreement,
            "mean_abs_log_hr_diff": report.mean_abs_log_hr_diff,
            "excluded_covariates": report.excluded_covariates,
            "covariates": {
                name: {key: (bool(v) if key == "inside_real_ci" else float(v)) for key, v in row.items()}
                for name, row in report.hazard_ratios.to_dict(orient="index").items()
            },
        }
        # The same fits the models below need (same covariates, same penalizer): not fitted twice.
        fitted["trtr"] = report.real_model
        if report.synthetic_model is not None and list(report.synthetic_model.params_.index) == covariates:
            fitted["tstr"] = report.synthetic_model
    except SCORING_ERRORS as exc:
        result["hazard_ratios"] = failure(exc)
    training_sets = {
        "trtr": lambda: train,
        "tstr": lambda: synthetic,
        "augmented": lambda: pd.concat([train, synthetic], ignore_index=True),
    }
    if conditional_sampler is not None:
        extra, drawn = conditional_augmentation(train, schema, conditional_sampler, seed=seed)
        result["conditional_augmentation"] = {"rows_per_subgroup": drawn, "rows": len(extra)}
        training_sets["conditional"] = lambda: pd.concat([train, extra], ignore_index=True)
    models: dict[str, Any] = {}
    for name, rows in training_sets.items():
        try:
            model = fitted[name] if name in fitted else fit_cox(rows(), schema, covariates=covariates)
        except SCORING_ERRORS as exc:
            models[name] = failure(exc)
            continue
        models[name] = _model_scores(model, train, holdout, schema, horizons)
    result["models"] = models
    if fairness_columns:
        result["fairness"] = site_fairness(train, holdout, synthetic, schema, list(fairness_columns), horizons[0])
    return result
