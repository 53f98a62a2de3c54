"""Minimal survival-utility check: does a Cox model tell the same story on synthetic data?

Two questions a survival analyst asks first: are the hazard ratios the same (synthetic
log-HR inside the real 95% CI), and does a model trained on synthetic data rank real
patients as well as one trained on real data (C-index on a real holdout, TSTR vs TRTR)?
Both use lifelines' CoxPHFitter on the same design matrix built from the public schema.

Missing covariates (missing = "model"): every Cox fit and score uses complete cases, the rows
with no missing covariate, real and synthetic alike (:func:`complete_cases`). A complete-case
Cox model is unbiased when missingness does not depend on the outcome given the covariates; a
synthetic sample that keeps the real missingness keeps the same selection, so the comparison is
like for like either way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceWarning
from lifelines.utils import concordance_index
from scipy.stats import ks_2samp

from fedsynth.data.schema import ColumnKind, ColumnRole, Schema
from fedsynth.suppression import MIN_CELL_ROWS, is_small_indicator

# A tiny ridge keeps Cox fits finite when a rare category has no events (ACTG320's raceth),
# and is applied identically to real and synthetic data so comparisons stay fair.
DEFAULT_PENALIZER = 0.01


class CoxFitError(RuntimeError):
    """A Cox model could not be fitted (e.g. a covariate is constant in the sample)."""


def complete_cases(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The rows of ``frame`` with every covariate present (all of them without missing = "model")."""
    modelled = [c.name for c in schema.modelled_missing]
    return frame[frame[modelled].notna().all(axis=1)] if modelled else frame


def design_matrix(frame: pd.DataFrame, schema: Schema, complete: bool = True) -> pd.DataFrame:
    """Numeric covariates as they are, binaries as 0/1, categoricals one-hot (first dropped).

    ``complete``: complete cases only (what Cox fits read); otherwise a missing value is NaN in
    its columns (pairwise correlations)."""
    if complete:
        frame = complete_cases(frame, schema)
    out: dict[str, np.ndarray] = {}
    for column in schema.columns:
        values = frame[column.name]
        if column.role != ColumnRole.FEATURE:
            continue
        if column.is_numeric:
            out[column.name] = values.to_numpy(dtype=float)
        elif column.kind == ColumnKind.BINARY:
            labels = column.labels
            codes = values if column.categories is None else values.map({labels[0]: 0, labels[1]: 1})
            out[column.name] = np.asarray(codes, dtype=float)
        else:
            absent = values.isna().to_numpy()
            for label in column.labels[1:]:
                out[f"{column.name}={label}"] = np.where(absent, np.nan, (values.astype(str) == label).to_numpy(float))
    design = pd.DataFrame(out, index=frame.index)
    design["_time"] = frame[schema.time_column].to_numpy(dtype=float)
    design["_event"] = frame[schema.event_column].to_numpy(dtype=float)
    return design


def varying_covariates(design: pd.DataFrame) -> list[str]:
    """Covariates of a design matrix that take more than one value (Cox can estimate only those)."""
    return [c for c in design.columns if c not in ("_time", "_event") and design[c].nunique() > 1]


SMALL_LEVEL = f"fewer than {MIN_CELL_ROWS} real rows in one of its levels (withheld)"  # an exclusion's reason


def estimable_covariates(design: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Covariates whose Cox coefficient has a finite estimate, and why the others have none.

    A constant covariate carries no information; an indicator with fewer than ``MIN_CELL_ROWS``
    real rows in one of its levels is withheld (its log-HR would describe those few patients); an
    indicator with no event in one of its
    levels makes the partial likelihood monotone, so its maximum-likelihood log-HR is
    infinite (a penalised fit reports an arbitrary large value with a meaningless CI).
    """
    keep, excluded = [], {}
    events = design["_event"] > 0
    for name in (c for c in design.columns if c not in ("_time", "_event")):
        values = design[name]
        if values.nunique() < 2:
            excluded[name] = "constant in the real data"
        elif is_small_indicator(values.to_numpy(float)):
            excluded[name] = SMALL_LEVEL
        elif (
            set(values.unique()) <= {0.0, 1.0} and (events & (values == 1)).sum() * (events & (values == 0)).sum() == 0
        ):
            excluded[name] = "no events in one of its levels in the real data (log-HR not estimable)"
        else:
            keep.append(name)
    return keep, excluded


# lifelines' Newton-Raphson (step size 0.95) can report convergence at a far worse point: on
# FLChain (5,219 rows, seed-2 split) it stopped at log-likelihood -14,697 with the signs of four
# log-HRs flipped, where step size 0.5 reaches the optimum, -11,961. Both are fitted; the better
# one is kept.
NEWTON_STEP_SIZES = (0.95, 0.5)
# Newton stops when the step's norm is below this; lifelines' 1e-7 leaves log-HRs ~3e-5 from the
# optimum (ACTG320), enough to differ between two correct fits in the 5th decimal.
NEWTON_PRECISION = 1e-10
NOT_CONVERGED = ("failed to converge", "norm(delta) is still high")


def fit_cox(
    frame: pd.DataFrame, schema: Schema, penalizer: float = DEFAULT_PENALIZER, covariates: list[str] | None = None
) -> CoxPHFitter:
    """Fit lifelines' CoxPHFitter on the schema's covariates; raise CoxFitError on failure.

    ``covariates`` restricts the design (e.g. to those that vary in the real data); every one
    of them must vary in ``frame``.
    """
    design = design_matrix(frame, schema)
    wanted = covariates if covariates is not None else [c for c in design.columns if c not in ("_time", "_event")]
    constant = [c for c in wanted if design[c].nunique() < 2]
    if constant:
        raise CoxFitError(f"cannot fit Cox: covariates constant in this sample: {constant}")
    fits, failures = [], []
    for step_size in NEWTON_STEP_SIZES:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                fit = CoxPHFitter(penalizer=penalizer).fit(
                    design[[*wanted, "_time", "_event"]],
                    duration_col="_time",
                    event_col="_event",
                    fit_options={"step_size": step_size, "precision": NEWTON_PRECISION},
                )
        except Exception as exc:  # lifelines raises several types for non-convergence
            failures.append(f"step size {step_size}: {exc}")
            continue
        # lifelines only *warns* when Newton-Raphson stops short ("failed to converge", or
        # "completed" with the step norm still high, e.g. a log-HR of 21 under separation):
        # such a fit must not produce numbers.
        unconverged = [str(w.message) for w in caught if any(s in str(w.message) for s in NOT_CONVERGED)]
        if unconverged:
            failures.append(f"step size {step_size}: did not converge ({unconverged[0][:120]})")
        else:
            fits.append(fit)
    if not fits:
        raise CoxFitError(
            f"Cox fit failed: {'; '.join(failures)}. A covariate may separate the outcome (no events in one "
            "of its levels) or be nearly constant: drop or merge it, or raise the penalizer"
        )
    # The penalised partial likelihood is concave: the fit with the highest value is the right one.
    return max(fits, key=lambda fit: fit.log_likelihood_)


@dataclass(frozen=True)
class UtilityReport:
    """Minimal utility of a synthetic sample (numbers the README table reports)."""

    hr_in_ci_fraction: float
    hr_sign_agreement: float
    mean_abs_log_hr_diff: float
    cindex_trtr: float
    cindex_tstr: float
    mean_ks: float
    ks: dict[str, float]
    hazard_ratios: pd.DataFrame
    excluded_covariates: dict[str, str]
    # The fitted models, so that callers scoring them further do not fit them again.
    real_model: CoxPHFitter | None = field(default=None, repr=False, compare=False)
    synthetic_model: CoxPHFitter | None = field(default=None, repr=False, compare=False)

    @property
    def cindex_gap(self) -> float:
        return self.cindex_trtr - self.cindex_tstr


def cindex_on(model: CoxPHFitter, frame: pd.DataFrame, schema: Schema) -> float:
    """Harrell's C-index of ``model`` on ``frame`` (higher partial hazard = shorter survival)."""
    design = design_matrix(frame, schema)
    risk = model.predict_partial_hazard(design[list(model.params_.index)]).to_numpy()
    return float(concordance_index(design["_time"], -risk, design["_event"]))


def marginal_ks(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """Two-sample KS statistic for every numeric column (continuous and integer), on present values."""
    return {
        c.name: float(
            ks_2samp(real[c.name].dropna().to_numpy(float), synthetic[c.name].dropna().to_numpy(float)).statistic
        )
        for c in schema.columns
        if c.is_numeric
    }


def utility_report(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    schema: Schema,
    penalizer: float = DEFAULT_PENALIZER,
) -> UtilityReport:
    """Compare Cox models on real train and synthetic data; C-index on the real holdout."""
    # Only covariates with a finite real log-HR can be compared; one constant in the synthetic
    # data still counts, as a miss (its synthetic HR is missing).
    covariates, excluded = estimable_covariates(design_matrix(train, schema))
    synthetic_covariates = [c for c in covariates if c in varying_covariates(design_matrix(synthetic, schema))]
    real_model = fit_cox(train, schema, penalizer, covariates)
    synthetic_model = fit_cox(synthetic, schema, penalizer, synthetic_covariates)
    real = real_model.summary
    synth = synthetic_model.summary.reindex(real.index)
    inside = (synth["coef"] >= real["coef lower 95%"]) & (synth["coef"] <= real["coef upper 95%"])
    table = pd.DataFrame(
        {
            "real_log_hr": real["coef"],
            "real_lower": real["coef lower 95%"],
            "real_upper": real["coef upper 95%"],
            "synthetic_log_hr": synth["coef"],
            "inside_real_ci": inside,
        }
    )
    ks = marginal_ks(train, synthetic, schema)
    return UtilityReport(
        hr_in_ci_fraction=float(inside.mean()),
        excluded_covariates=excluded,
        hr_sign_agreement=float((np.sign(real["coef"]) == np.sign(synth["coef"])).mean()),
        mean_abs_log_hr_diff=float((real["coef"] - synth["coef"]).abs().mean()),
        cindex_trtr=cindex_on(real_model, holdout, schema),
        cindex_tstr=cindex_on(synthetic_model, holdout, schema),
        mean_ks=float(np.mean(list(ks.values()))) if ks else float("nan"),
        ks=ks,
        hazard_ratios=table,
        real_model=real_model,
        synthetic_model=synthetic_model,
    )
