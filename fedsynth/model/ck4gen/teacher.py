"""The Cox teacher: a CoxPH model fitted on the training rows, and the hazards outcomes are drawn from.

The teacher reads the network's own input encoding (:meth:`Layout.encode_codes`: numeric
columns on their [0, 1] scale, binaries 0/1, categoricals one-hot, missingness indicators), so
its linear predictor can be computed on any decoded row. A Cox model is invariant to a monotone
change of the time axis, so times are used on the time column's [0, 1] scale too, where the
baseline and censoring hazards are piecewise constant over the ``n_bins`` bins of the output
heads: a fixed grid, so the model stores no observed time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from lifelines import CoxPHFitter

from fedsynth.data.schema import ColumnKind, ColumnRole
from fedsynth.errors import UserError
from fedsynth.model.layout import Layout


class TeacherFitError(UserError, ValueError):
    """The teacher Cox model cannot be fitted on the training rows; the message says the fix."""


@dataclass(frozen=True)
class Teacher:
    """A fitted teacher: coefficients over the encoded inputs and the hazards on the time grid."""

    beta: torch.Tensor  # (encoded_width,): 0 at outcome, dropped and constant positions
    eta_mean: float  # mean training linear predictor: hazards are for a centred predictor
    eta_scale: float  # its standard deviation: the distillation target is standardised
    event_rates: torch.Tensor  # (n_bins,) baseline hazard per unit of the [0, 1] time scale
    censor_rates: torch.Tensor  # (n_bins,) censoring hazard, the same for every row
    last_bin: int  # the bin of the longest follow-up: censoring ends there


def feature_positions(layout: Layout) -> list[int]:
    """Encoded input positions the teacher may use: features only, each categorical's first
    level dropped (the reference level, as fedsynth's Cox design does)."""
    positions: list[int] = []
    for head in layout.heads:
        if head.column.role != ColumnRole.FEATURE:
            continue
        first = head.in_start + (1 if head.kind == ColumnKind.CATEGORICAL else 0)
        positions.extend(range(first, head.in_stop))
    return positions


def outcome_indices(layout: Layout) -> tuple[int, int]:
    """(time, event) column indices in model codes."""
    roles = {head.column.role: head.index for head in layout.heads}
    return roles[ColumnRole.TIME], roles[ColumnRole.EVENT]


def fit_teacher(layout: Layout, codes: torch.Tensor, penalizer: float) -> Teacher:
    """Fit the Cox teacher on model codes (n, n_columns) of the training rows."""
    time_index, event_index = outcome_indices(layout)
    encoded = layout.encode_codes(codes).double().numpy()
    unit_time = codes[:, time_index].double().numpy()
    event = codes[:, event_index].double().numpy()
    event_name = layout.heads[event_index].column.name
    if event.sum() == 0:
        raise TeacherFitError(f"no events in '{event_name}': CK4Gen's Cox teacher needs at least one event")
    used = [p for p in feature_positions(layout) if np.ptp(encoded[:, p]) > 0]
    beta = np.zeros(layout.encoded_width)
    if used:
        design = pd.DataFrame(encoded[:, used], columns=[f"x{p}" for p in used])
        design["_time"], design["_event"] = unit_time, event
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lifelines' convergence advice; a failed fit raises below
                fit = CoxPHFitter(penalizer=penalizer).fit(
                    design, duration_col="_time", event_col="_event", fit_options={"step_size": 0.5}
                )
        except Exception as exc:  # lifelines raises several types when Newton-Raphson fails
            raise TeacherFitError(
                f"the Cox teacher could not be fitted ({exc}); raise teacher_penalizer (now {penalizer}) "
                "in the [model] table, or drop a covariate that separates the outcome"
            ) from None
        beta[used] = fit.params_.to_numpy()
    eta = encoded @ beta
    eta_mean, eta_scale = float(eta.mean()), float(eta.std())
    weight = np.exp(eta - eta_mean)
    n_bins = layout.n_bins
    return Teacher(
        beta=torch.tensor(beta, dtype=torch.float32),
        eta_mean=eta_mean,
        eta_scale=eta_scale if eta_scale > 0 else 1.0,
        event_rates=torch.tensor(piecewise_rates(unit_time, event, weight, n_bins), dtype=torch.float32),
        censor_rates=torch.tensor(
            piecewise_rates(unit_time, 1.0 - event, np.ones_like(weight), n_bins), dtype=torch.float32
        ),
        last_bin=int(min(n_bins - 1, np.floor(unit_time.max() * n_bins))),
    )


def piecewise_rates(unit_time: np.ndarray, event: np.ndarray, weight: np.ndarray, n_bins: int) -> np.ndarray:
    """Maximum-likelihood piecewise-constant hazard on ``n_bins`` equal bins of [0, 1]: events in
    a bin over the weighted time at risk in it (the weight is a row's relative hazard; given the
    Cox coefficients this is the piecewise-exponential baseline). A bin nobody reaches has rate 0."""
    edges = np.arange(n_bins) / n_bins
    exposure = np.clip(unit_time[:, None] - edges[None, :], 0.0, 1.0 / n_bins)
    at_risk = (weight[:, None] * exposure).sum(axis=0)
    bins = np.minimum((unit_time * n_bins).astype(np.int64), n_bins - 1)
    events = np.bincount(bins, weights=event, minlength=n_bins)
    return np.divide(events, at_risk, out=np.zeros(n_bins), where=at_risk > 0)
