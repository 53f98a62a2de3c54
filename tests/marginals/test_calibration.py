from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from fedsynth.data.conditions import parse_conditions, resolve_conditions, satisfies
from fedsynth.data.datasets import load_dataset
from fedsynth.evaluation.fidelity import marginal_distances
from fedsynth.marginals.calibration import calibrate
from fedsynth.marginals.tables import MarginalSpec, count_tables
from tests.marginals.conftest import uniform_rows


def _distances(real: pd.DataFrame, synthetic: pd.DataFrame, schema) -> np.ndarray:
    return np.array([d["value"] for d in marginal_distances(real, synthetic, schema).values()])


@pytest.mark.parametrize("selection", ["all", "compact"])
def test_uniform_candidates_get_the_true_marginals_and_event_rates(selection: str) -> None:
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema, selection=selection)
    candidates = uniform_rows(schema, 10_000, seed=0)
    before = _distances(frame, candidates, schema)
    out = calibrate(candidates, count_tables(frame, spec), spec, n=2000, seed=0, relations=True)
    after = _distances(frame, out, schema)
    assert before.mean() > 0.2 and after.mean() < 0.04
    assert after.max() < 0.15  # the time column: uniform within its 8 bins
    flat = candidates.groupby("chf")["fstat"].mean()
    rates = out.groupby("chf")["fstat"].mean()
    if selection == "all":
        # A released 2-way relation: death rate by congestive heart failure (real 0.30 vs 0.71).
        real = frame.groupby("chf")["fstat"].mean()
        assert abs(rates[0] - real[0]) < 0.05 and abs(rates[1] - real[1]) < 0.05
    else:  # compact releases no covariate x event table: the model's (absent) relation stays
        assert abs(rates[1] - rates[0]) < 0.1
    assert abs(flat[1] - flat[0]) < 0.05  # there was no relation before
    # Without ``relations`` the margins still match and the model's (absent) relation is kept.
    plain = calibrate(candidates, count_tables(frame, spec), spec, n=2000, seed=0)
    assert _distances(frame, plain, schema).mean() < 0.04
    rates = plain.groupby("chf")["fstat"].mean()
    assert abs(rates[1] - rates[0]) < 0.1


def test_deterministic_for_a_seed() -> None:
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema)
    tables = count_tables(frame, spec)
    candidates = uniform_rows(schema, 3000, seed=1)
    a = calibrate(candidates, tables, spec, n=500, seed=7)
    pd.testing.assert_frame_equal(a, calibrate(candidates, tables, spec, n=500, seed=7))
    assert not a.equals(calibrate(candidates, tables, spec, n=500, seed=8))


def test_conditions_are_honoured_and_calibrated_within(small_schema) -> None:
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.binomial(1, 0.2, n)
    real = pd.DataFrame(
        {
            "x": x,
            "age": np.clip(rng.normal(40 + 30 * x, 8), 0, 100).round().astype(np.int64),
            "grp": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
            "time": rng.uniform(0, 10, n),
            "event": rng.binomial(1, 0.3 + 0.4 * x),
        }
    )
    spec = MarginalSpec.from_schema(small_schema, selection="all")  # it crosses x with the outcome
    tables = count_tables(real, spec)
    conditions = resolve_conditions(parse_conditions(["x=1", "age>=50"]), small_schema)
    candidates = uniform_rows(small_schema, 20_000, seed=2)
    keep = np.logical_and.reduce([satisfies(candidates, c).to_numpy() for c in conditions])
    out = calibrate(candidates[keep].reset_index(drop=True), tables, spec, n=1000, seed=0, conditions=conditions)
    assert len(out) == 1000
    assert all(satisfies(out, c).all() for c in conditions)
    # Two conditioned columns: no table crosses both, so rows stay as the model drew them.
    one = resolve_conditions(parse_conditions(["x=1"]), small_schema)
    keep = satisfies(candidates, one[0]).to_numpy()
    out = calibrate(candidates[keep].reset_index(drop=True), tables, spec, n=2000, seed=0, conditions=one)
    assert (out["x"] == 1).all()
    # Within x = 1, the x x time x event table gives the event rate; x's table gives nothing on age.
    assert abs(out["event"].mean() - real.loc[real.x == 1, "event"].mean()) < 0.05


def test_a_numeric_range_is_honoured_and_mapped_within_it() -> None:
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema)
    tables = count_tables(frame, spec)
    condition = resolve_conditions(parse_conditions(["bmi>=20"]), schema)
    candidates = uniform_rows(schema, 20_000, seed=3)
    keep = satisfies(candidates, condition[0]).to_numpy()
    out = calibrate(candidates[keep].reset_index(drop=True), tables, spec, n=3000, seed=0, conditions=condition)
    assert satisfies(out, condition[0]).all()
    # Mapped to the real BMIs within the range (the bin cut at 20 keeps its overlap's share).
    real = frame.loc[frame.bmi >= 20, "bmi"]
    assert ks_2samp(out["bmi"], real).statistic < 0.08
    assert ks_2samp(candidates.loc[keep, "bmi"], real).statistic > 0.3


def test_within_a_bin_values_follow_the_models_shape_not_a_uniform(small_schema) -> None:
    """Ages the model draws at 33 or 36 only (both inside the table bin [31.25, 37.5)): the
    tables move mass between bins, and inside this bin the rows keep the model's two values."""
    candidates = uniform_rows(small_schema, 4000, seed=1)
    rng = np.random.default_rng(2)
    candidates["age"] = rng.choice([33, 36], size=len(candidates))
    real = uniform_rows(small_schema, 3000, seed=3)
    real["age"] = rng.choice([33, 36, 80], size=len(real), p=[0.4, 0.4, 0.2])
    spec = MarginalSpec.from_schema(small_schema)
    out = calibrate(candidates, count_tables(real, spec), spec, n=2000, seed=0)
    inside = out["age"][(out["age"] >= 31.25) & (out["age"] < 37.5)]
    # Interpolation between neighbouring model values reaches the few points between 33 and 36.
    assert len(inside) > 1400 and np.isin(inside, [33, 36]).mean() > 0.99
    # Bin [75, 81.25), where the model drew nothing: uniform within it, as the table says.
    high = out["age"][out["age"] >= 75]
    assert 300 < len(high) < 500 and high.nunique() > 3


def test_with_an_outcome_model_the_outcome_is_drawn_again_given_the_calibrated_covariates() -> None:
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema)
    candidates = uniform_rows(schema, 4000, seed=4)
    seen: list[pd.DataFrame] = []

    def redraw(rows: pd.DataFrame) -> pd.DataFrame:
        seen.append(rows.copy())
        out = rows.copy()
        out["lenfol"] = 3000.0 - 20.0 * rows["age"]  # an outcome that depends on a covariate only
        out["fstat"] = (rows["age"] > 70).astype(rows["fstat"].dtype)
        return out

    out = calibrate(candidates, count_tables(frame, spec), spec, n=2000, seed=0, redraw_outcome=redraw)
    (given,) = seen
    # The outcome model sees covariates already on their DP margins ...
    assert ks_2samp(given["age"], frame["age"]).statistic < 0.06
    assert ks_2samp(candidates["age"], frame["age"]).statistic > 0.2
    # ... its event is kept, and its time gets one monotone map to the time margin, the same for
    # every row, so the order of all times (the Cox risk sets) is the outcome model's.
    np.testing.assert_array_equal(out["fstat"].to_numpy(), (given["age"] > 70).to_numpy().astype(np.int64))
    drawn = 3000.0 - 20.0 * given["age"].to_numpy()
    final = out["lenfol"].to_numpy()
    strictly = drawn[:, None] < drawn[None, :]
    assert not np.any(strictly & (final[:, None] > final[None, :]))
    assert ks_2samp(out["lenfol"], frame["lenfol"]).statistic < 0.15  # uniform within 8 time bins


def test_the_missing_share_and_the_present_values_are_calibrated_to_the_tables() -> None:
    # Candidates miss bmi and cvd in half of the rows, the tables say about 20% and 10%.
    from tests.missing import blank

    frame, schema = load_dataset("whas500")
    real, modelled = blank(frame, schema, {"bmi": 0.2, "cvd": 0.1}, seed=0)
    spec = MarginalSpec.from_schema(modelled)
    candidates, _ = blank(uniform_rows(schema, 8000, seed=2), schema, {"bmi": 0.5, "cvd": 0.5}, seed=1)
    out = calibrate(candidates, count_tables(real, spec), spec, n=3000, seed=0)
    for name in ("bmi", "cvd"):
        assert out[name].isna().mean() == pytest.approx(real[name].isna().mean(), abs=0.01)
    # Present values to the DP histogram (16 bins: uniform within each, hence not closer than this).
    assert ks_2samp(candidates["bmi"].dropna(), real["bmi"].dropna()).statistic > 0.2
    assert ks_2samp(out["bmi"].dropna(), real["bmi"].dropna()).statistic < 0.08
    assert out["cvd"].dropna().mean() == pytest.approx(real["cvd"].dropna().mean(), abs=0.02)
    # Under a condition on bmi no row is missing it, and the others are still calibrated.
    conditions = resolve_conditions(parse_conditions(["bmi>=25"]), modelled)
    within = candidates[satisfies(candidates, conditions[0])].reset_index(drop=True)
    conditioned = calibrate(within, count_tables(real, spec), spec, n=1000, seed=0, conditions=conditions)
    assert conditioned["bmi"].notna().all() and (conditioned["bmi"] >= 25).all()
