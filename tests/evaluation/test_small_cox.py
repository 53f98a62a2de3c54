"""The calibration's small Cox fits agree with lifelines' CoxPHFitter on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from fedsynth.evaluation.small_cox import SmallCoxError, fit_small_cox


@pytest.mark.parametrize("penalizer", [0.0, 1e-6, 0.05])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coefficients_and_survival_match_lifelines_with_tied_times(seed: int, penalizer: float) -> None:
    rng = np.random.default_rng(seed)
    n, p = 150 + 100 * seed, 1 + seed
    x = rng.normal(size=(n, p)) * rng.uniform(0.2, 3.0, p) + rng.normal(size=p)
    hazard = np.exp(x @ rng.normal(0.0, 0.6, p))
    durations = np.ceil(rng.exponential(1.0 / hazard) * 8)  # whole units: many tied times
    events = (rng.random(n) < 0.7).astype(int)
    assert len(np.unique(durations)) < n / 2
    columns = [f"x{i}" for i in range(p)]
    frame = pd.DataFrame(x, columns=columns).assign(t=durations, e=events)
    reference = CoxPHFitter(penalizer=penalizer).fit(frame, "t", "e")
    fitted = fit_small_cox(x, durations, events, penalizer=penalizer)
    np.testing.assert_allclose(fitted.params, reference.params_.to_numpy(), atol=1e-4)
    for horizon in np.quantile(durations, [0.2, 0.5, 0.9]) + 0.5:  # between observed times: interpolated
        expected = reference.predict_survival_function(frame[columns], times=[horizon]).T.to_numpy()[:, 0]
        np.testing.assert_allclose(fitted.survival_at(x, horizon), expected, atol=1e-5)


def test_a_known_effect_is_recovered() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=4000)
    durations = rng.exponential(1.0 / np.exp(0.8 * x))
    fitted = fit_small_cox(x, durations, np.ones(4000))
    assert fitted.params[0] == pytest.approx(0.8, abs=0.05)


def test_a_covariate_far_from_zero_keeps_a_finite_baseline() -> None:
    rng = np.random.default_rng(3)
    x = 1000.0 + rng.normal(0.0, 0.5, 300)  # exp(x . beta) uncentred would overflow or vanish
    durations = np.ceil(rng.exponential(1.0 / np.exp(0.7 * (x - 1000.0))) * 10)
    events = (rng.random(300) < 0.8).astype(int)
    frame = pd.DataFrame({"x": x, "t": durations, "e": events})
    reference = CoxPHFitter().fit(frame, "t", "e")
    fitted = fit_small_cox(x, durations, events)
    horizon = float(np.median(durations))
    expected = reference.predict_survival_function(frame[["x"]], times=[horizon]).T.to_numpy()[:, 0]
    np.testing.assert_allclose(fitted.survival_at(x, horizon), expected, atol=1e-5)


def test_missing_values_and_separation_are_refused() -> None:
    with pytest.raises(SmallCoxError, match="missing or infinite"):
        fit_small_cox(np.array([0.0, np.nan, 1.0]), np.array([1.0, 2.0, 3.0]), np.array([1, 1, 0]))
    # Every death has the highest covariate among those at risk: the likelihood grows without bound.
    x = np.arange(20.0)
    with pytest.raises(SmallCoxError, match="separates the events"):
        fit_small_cox(x, 20.0 - x, np.ones(20))
    # A two-valued covariate with every event in one group (lifelines returns where its steps stopped).
    group = np.repeat([0.0, 1.0], 30)
    events = group.astype(int)
    with pytest.raises(SmallCoxError, match="separates the events"):
        fit_small_cox(group, np.tile(np.arange(1.0, 31.0), 2), events)
