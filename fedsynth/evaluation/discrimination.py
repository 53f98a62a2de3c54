"""Discrimination on the real holdout: Harrell's and Uno's C-index and the integrated Brier score.

The question a survival analyst asks of synthetic data: does a Cox model trained on it (TSTR)
rank and predict the site's real patients as well as one trained on real rows (TRTR), and does
adding synthetic rows to the real ones (augmentation) help? Harrell's C-index is the familiar
number but depends on the censoring pattern; Uno's (inverse-probability-of-censoring weighted,
truncated at a horizon ``tau``) does not, and the integrated Brier score also scores the
predicted survival curves' calibration. Uno's C and the Brier score come from scikit-survival,
whose implementations are the reference ones; the Cox models are lifelines' (``fit_cox``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sksurv.metrics import concordance_index_ipcw, integrated_brier_score
from sksurv.util import Surv

from fedsynth.data.schema import Schema
from fedsynth.evaluation.utility import complete_cases, design_matrix

# Horizons for Uno's C and the Brier score: inside the holdout's follow-up, where the censoring
# distribution (which both weight by) is estimable.
HORIZON_QUANTILES = (0.1, 0.8)
BRIER_POINTS = 20
# The grid's ends are snapped inwards to multiples of (time bound / GRID_STEPS): ``tau`` is
# released with the scores, and an exact quantile of the holdout's times is one patient's time.
GRID_STEPS = 100


@dataclass(frozen=True)
class Discrimination:
    """One Cox model's discrimination and prediction error on a real evaluation set."""

    harrell_c: float
    uno_c: float
    integrated_brier: float
    tau: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _survival_array(frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    return Surv.from_arrays(
        event=frame[schema.event_column].to_numpy(dtype=float) > 0,
        time=frame[schema.time_column].to_numpy(dtype=float),
    )


def _within_follow_up(evaluation: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``evaluation`` with times beyond the reference's last observed time set to that time.

    scikit-survival's Brier score reads the censoring survival G at every evaluation row's time
    and refuses a time past the reference's follow-up, so one holdout patient followed longer
    than any training patient (a small site, by chance: WHAS500 split over 3 sites, seed 4)
    failed the whole site's scores. The score does not change: the grid ends inside the
    reference's follow-up, so such a row is still at risk at every grid time, and G at its
    own time is read only for an event before a grid time, which it cannot have.
    """
    last = float(reference["time"].max())
    clamped = evaluation.copy()
    clamped["time"] = np.minimum(clamped["time"], last)
    return clamped


def evaluation_times(reference: pd.DataFrame, evaluation: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Brier-score grid: quantiles 10%..80% of the evaluation set's observed times, inside both
    sets' follow-up (scikit-survival requires the grid inside the evaluation set's range and
    the censoring distribution, estimated on the reference set, to be positive there), with
    both ends snapped inwards to the public grid of ``GRID_STEPS`` steps of the time bound."""
    times = evaluation[schema.time_column].to_numpy(dtype=float)
    low, high = np.quantile(times, HORIZON_QUANTILES)
    high = min(high, float(reference[schema.time_column].max()) * 0.999)
    step = float(schema.column(schema.time_column).upper) / GRID_STEPS
    low, high = step * math.ceil(low / step), step * math.floor(high / step)
    if high <= low:
        raise ValueError(
            f"the holdout's follow-up (10-80% quantiles) spans less than one grid step ({step:g}): "
            "too few rows to score"
        )
    return np.unique(np.linspace(low, high, BRIER_POINTS))


def discrimination(
    model: CoxPHFitter, reference: pd.DataFrame, evaluation: pd.DataFrame, schema: Schema
) -> Discrimination:
    """Harrell's and Uno's C-index and the integrated Brier score of ``model`` on ``evaluation``.

    ``reference`` (the site's real training rows) estimates the censoring distribution that
    Uno's C and the Brier score weight by; it is the same real data for every model compared,
    so TRTR, TSTR and augmentation are scored on identical terms.
    """
    evaluation = complete_cases(evaluation, schema)  # rows a Cox model can score (see utility)
    design = design_matrix(evaluation, schema)
    covariates = list(model.params_.index)
    risk = model.predict_partial_hazard(design[covariates]).to_numpy()
    harrell = float(concordance_index(design["_time"], -risk, design["_event"]))
    times = evaluation_times(reference, evaluation, schema)
    train_surv, test_surv = _survival_array(reference, schema), _survival_array(evaluation, schema)
    tau = float(times[-1])
    uno = float(concordance_index_ipcw(train_surv, test_surv, risk, tau=tau)[0])
    survival = model.predict_survival_function(design[covariates], times=times).T.to_numpy()
    brier = float(integrated_brier_score(train_surv, _within_follow_up(test_surv, train_surv), survival, times))
    return Discrimination(harrell_c=harrell, uno_c=uno, integrated_brier=brier, tau=tau)
