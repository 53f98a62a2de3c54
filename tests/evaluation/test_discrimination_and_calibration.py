"""Discrimination and calibration on real holdouts: known answers and independent computations."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sksurv.metrics import concordance_index_ipcw

from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.calibration import (
    CalibrationError,
    binary_subgroups,
    calibration,
    calibration_slope,
    predicted_risk,
    stratified_calibration,
)
from fedsynth.evaluation.discrimination import discrimination, evaluation_times
from fedsynth.evaluation.utility import design_matrix, fit_cox


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame, object]:
    frame, schema = load_dataset("whas500")
    train, holdout = train_holdout_split(frame, 0.5, 0)
    return train, holdout, schema


def _unpenalised(frame: pd.DataFrame, schema) -> CoxPHFitter:  # type: ignore[no-untyped-def]
    design = design_matrix(frame, schema)
    return CoxPHFitter().fit(design, duration_col="_time", event_col="_event")


@pytest.mark.parametrize("dataset", ["whas500", "gbsg2", "actg320"])
def test_c_indices_equal_direct_lifelines_and_sksurv_computations(dataset: str) -> None:
    frame, schema = load_dataset(dataset)
    train, holdout = train_holdout_split(frame, 0.5, 1)
    model = fit_cox(train, schema)
    result = discrimination(model, train, holdout, schema)
    design = design_matrix(holdout, schema)
    risk = model.predict_partial_hazard(design[list(model.params_.index)]).to_numpy()
    assert result.harrell_c == pytest.approx(concordance_index(design["_time"], -risk, design["_event"]), abs=1e-12)
    to_array = lambda f: np.array(  # noqa: E731
        list(zip(f[schema.event_column] > 0, f[schema.time_column], strict=True)),
        dtype=[("event", bool), ("time", float)],
    )
    tau = evaluation_times(train, holdout, schema)[-1]
    uno = concordance_index_ipcw(to_array(train), to_array(holdout), risk, tau=tau)[0]
    assert result.uno_c == pytest.approx(uno, abs=1e-12)
    assert 0.6 < result.harrell_c < 0.9 and 0.0 < result.integrated_brier < 0.25


def test_a_holdout_patient_followed_past_every_training_patient_is_scored_not_refused(split) -> None:
    # scikit-survival refuses to read the censoring distribution past the reference's last time;
    # one such holdout row used to fail a small site's whole evaluation (WHAS500, 3 sites, seed 4).
    # The grid ends inside the reference's follow-up, so the row is at risk at every grid time
    # and how far past the end it lies cannot change any score.
    train, holdout, schema = split
    model = fit_cox(train, schema)
    last = float(train[schema.time_column].max())
    assert float(holdout[schema.time_column].max()) <= last  # this split has no such row yet: add one
    scores = []
    for beyond in (1.0, 500.0):
        extended = holdout.copy()
        extended.loc[extended.index[0], [schema.time_column, schema.event_column]] = [last + beyond, 1]
        scores.append(discrimination(model, train, extended, schema))
    assert scores[0] == scores[1]
    assert 0.0 < scores[0].integrated_brier < 0.25 and 0.6 < scores[0].uno_c < 0.9


def test_a_model_of_independent_columns_ranks_at_chance(split) -> None:
    # Each column shuffled on its own: the Cox fit is noise, a random direction in covariate
    # space. One such direction can still correlate with age (C far from 0.5 either way); over
    # twelve shuffles the mean is chance.
    train, holdout, schema = split
    rng = np.random.default_rng(0)
    chance = []
    for _ in range(12):
        shuffled = train.apply(lambda column: rng.permutation(column.to_numpy()))
        chance.append(discrimination(fit_cox(shuffled, schema), train, holdout, schema))
    real = discrimination(fit_cox(train, schema), train, holdout, schema)
    assert abs(np.mean([c.harrell_c for c in chance]) - 0.5) < 0.06
    assert abs(np.mean([c.uno_c for c in chance]) - 0.5) < 0.06
    assert real.harrell_c > max(c.harrell_c for c in chance)
    assert real.integrated_brier < min(c.integrated_brier for c in chance)


def test_in_sample_fit_has_slope_one_and_a_doubled_linear_predictor_slope_one_half(split) -> None:
    train, _, schema = split
    model = _unpenalised(train, schema)
    horizon = float(np.median(train[schema.time_column]))
    fitted = calibration(model, train, schema, horizon)
    assert fitted.slope == pytest.approx(1.0, abs=1e-4)  # the MLE's own linear predictor
    assert abs(fitted.in_the_large) < 0.03 and fitted.ici < 0.05
    # Fitted on covariates halved, applied to the real ones: log-HRs doubled, predictions too extreme.
    design = design_matrix(train, schema)
    covariates = [c for c in design.columns if c not in ("_time", "_event")]
    design[covariates] = design[covariates] * 0.5
    doubled = CoxPHFitter().fit(design, duration_col="_time", event_col="_event")
    extreme = calibration(doubled, train, schema, horizon)
    assert extreme.slope == pytest.approx(0.5, abs=1e-3)
    assert extreme.ici > fitted.ici


def test_a_slope_whose_refit_separates_the_events_is_nan_not_an_error() -> None:
    # The model's predictor takes two values and every event on these rows is in the higher one:
    # the refit's likelihood has no maximum, so there is no slope (the other figures still stand).
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, 200).astype(float)
    model = CoxPHFitter().fit(
        pd.DataFrame({"x": x, "_time": rng.exponential(1.0 / np.exp(0.5 * x)), "_event": 1}), "_time", "_event"
    )
    group = np.repeat([0.0, 1.0], 30)
    rows = pd.DataFrame({"x": group, "_time": np.tile(np.arange(1.0, 31.0), 2), "_event": group.astype(int)})
    assert np.isnan(calibration_slope(model, rows))
    rows["_event"] = 1  # events in both groups: a slope again
    assert np.isfinite(calibration_slope(model, rows))


def test_subgroups_too_small_are_listed_with_the_reason_not_scored(split) -> None:
    train, _, schema = split
    model = fit_cox(train, schema)
    horizon = float(np.median(train[schema.time_column]))
    groups = binary_subgroups(train, schema)
    assert "gender=0" in groups and "gender=1" in groups
    tiny = {"first five rows": pd.Series(np.arange(len(train)) < 5, index=train.index), **groups}
    result = stratified_calibration(model, train, schema, horizon, tiny)
    reason = result.not_estimable["first five rows"]
    assert "at least 5" in reason and "fewer than 5 events" in reason
    # A reason a site sends carries no count of its real rows: only the public horizon and minimum.
    numbers = {float(n) for n in re.findall(r"\d+(?:\.\d+)?", reason)}
    assert numbers <= {5.0, round(horizon, 6), float(f"{horizon:g}")}, reason
    assert set(groups) <= set(result.groups) | set(result.not_estimable)
    assert "gender=0" in result.groups and "gender=1" in result.groups
    icis = [c.ici for c in result.groups.values()]
    assert result.worst_group_gap == pytest.approx(max(icis) - min(icis))
    assert result.groups[result.worst_group].ici == max(icis)
    with pytest.raises(CalibrationError, match="events before the horizon"):
        calibration(model, train.head(5), schema, horizon)


def test_tau_is_on_the_public_grid_and_the_calibration_curve_on_the_risk_grid(split) -> None:
    from fedsynth.evaluation.calibration import RISK_CELL_EDGES, RISK_GRID, calibration
    from fedsynth.evaluation.discrimination import GRID_STEPS
    from fedsynth.evaluation.fidelity import MIN_CELL_ROWS

    train, holdout, schema = split
    model = fit_cox(train, schema)
    step = schema.column(schema.time_column).upper / GRID_STEPS
    tau = discrimination(model, train, holdout, schema).tau
    assert tau / step == pytest.approx(round(tau / step))  # not one patient's time
    horizon = float(np.median(train[schema.time_column]))
    result = calibration(model, train, schema, horizon)
    assert len(result.curve) == len(RISK_GRID)
    risk = predicted_risk(model, design_matrix(train, schema), horizon)
    cells = np.histogram(risk, RISK_CELL_EDGES)[0]
    for point, observed, count in zip(RISK_GRID, result.curve, cells, strict=True):
        assert (observed is None) == (not risk.min() <= point <= risk.max() or count < MIN_CELL_ROWS)
    assert result.curve_withheld == sum(1 for p, c in zip(RISK_GRID, cells, strict=True)
                                        if risk.min() <= p <= risk.max() and c < MIN_CELL_ROWS)  # fmt: skip
    inside = [(p, o) for p, o in zip(RISK_GRID, result.curve, strict=True) if o is not None]
    assert len(inside) >= 10
    # In-sample, a Cox model is close to calibrated: its curve stays near the diagonal.
    assert np.mean([abs(o - p) for p, o in inside]) < 0.1
    assert "curve" not in stratified_calibration(model, train, schema, horizon).to_dict()["groups"]["gender=0"]


def test_a_calibration_point_with_3_rows_in_its_cell_is_withheld_and_a_small_holdout_draws_none() -> None:
    from fedsynth.evaluation.calibration import RISK_GRID, calibration_curve

    identity = lambda risk: np.asarray(risk, float)  # noqa: E731 -- a perfectly calibrated smoother
    risk = np.array([0.5] * 25 + [0.2] * 3)
    curve, withheld = calibration_curve(identity, risk)
    at = {round(float(p), 3): o for p, o in zip(RISK_GRID, curve, strict=True)}
    assert at[0.5] == pytest.approx(0.5)  # 25 rows in its cell: released
    assert at[0.2] is None  # 3 rows: withheld
    assert sum(o is not None for o in curve) == 1
    assert withheld == 12  # 0.2 .. 0.475 are in the predicted range, each cell under 5 rows
    curve, withheld = calibration_curve(identity, np.array([0.5] * 19))  # under 20 rows: no curve at all
    assert all(o is None for o in curve) and withheld == 1
