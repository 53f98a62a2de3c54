"""Subgroup fairness figures: a synthetic copy of the real rows reads the real gaps, a dataset built
with known subgroup gaps reads them, independent computations agree, small levels give reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index

from fedsynth.data.datasets import load_dataset
from fedsynth.data.schema import Column, ColumnKind, ColumnRole, Schema
from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.calibration import predicted_risk
from fedsynth.evaluation.fairness import FIGURES, fit_models, subgroup_fairness
from fedsynth.evaluation.utility import design_matrix

SCHEMA = Schema(
    name="built",
    columns=(
        Column(name="x", kind=ColumnKind.CONTINUOUS, lower=0.0, upper=1.0),
        Column(name="group", kind=ColumnKind.BINARY, categories=("a", "b")),
        Column(name="time", kind=ColumnKind.CONTINUOUS, role=ColumnRole.TIME, lower=0.0, upper=100.0),
        Column(name="event", kind=ColumnKind.BINARY, role=ColumnRole.EVENT),
    ),
)


def built(n: int, seed: int, b_rows: int | None = None) -> pd.DataFrame:
    """Group a: risk rises steeply with x and 80% of rows have an event; group b: x says nothing
    about survival and 30% have an event. Exact event shares, so the event-rate gap is 0.5."""
    rng = np.random.default_rng(seed)
    b_rows = n // 2 if b_rows is None else b_rows
    group = np.array(["a"] * (n - b_rows) + ["b"] * b_rows)
    x = rng.uniform(size=n)
    rate = np.where(group == "a", np.exp(4 * x) / 10, 1.0)
    time = rng.exponential(1 / rate)
    event = np.zeros(n, dtype=int)
    for level, share in (("a", 0.8), ("b", 0.3)):
        rows = np.flatnonzero(group == level)
        event[rng.choice(rows, round(share * len(rows)), replace=False)] = 1
    time = np.where(event == 1, time, time * rng.uniform(size=n))  # censored before the event
    return pd.DataFrame({"x": x, "group": group, "time": np.minimum(time, 100.0), "event": event})


def test_a_synthetic_copy_of_the_real_rows_reads_the_real_gaps() -> None:
    frame, schema = load_dataset("whas500")
    train, holdout = train_holdout_split(frame, 0.5, 0)
    report = subgroup_fairness(train, holdout, train.copy(), schema, "gender")
    assert report.overall["cindex_tstr"] == report.overall["cindex_trtr"]
    for kind in ("cindex", "calibration"):
        assert report.gaps[f"{kind}_tstr"] == report.gaps[f"{kind}_trtr"]
        # Real rows twice: the same model up to the tiny ridge's relative weight.
        assert report.gaps[f"{kind}_augmented"] == pytest.approx(report.gaps[f"{kind}_trtr"], abs=0.005)
    assert report.gaps["event_rate_synthetic"] == report.gaps["event_rate_real"]
    for figures in report.levels.values():
        assert figures["share_synthetic"] == figures["share_real"]
    assert report.not_estimable == {}
    rates = train.groupby("gender")["fstat"].mean()
    assert report.gaps["event_rate_real"] == pytest.approx(abs(rates[1] - rates[0]))
    assert set(report.gaps) == set(FIGURES)


def test_a_dataset_built_with_known_subgroup_gaps_reads_them() -> None:
    train, holdout = built(2000, 0), built(2000, 1)
    report = subgroup_fairness(train, holdout, built(2000, 2), SCHEMA, "group")
    assert report.gaps["event_rate_real"] == pytest.approx(0.5, abs=1e-9)
    assert report.gaps["event_rate_synthetic"] == pytest.approx(0.5, abs=1e-9)
    a, b = report.levels["a"], report.levels["b"]
    assert a["cindex_tstr"] > 0.7 and b["cindex_tstr"] == pytest.approx(0.5, abs=0.05)
    for model in ("trtr", "tstr", "augmented"):
        assert report.gaps[f"cindex_{model}"] == pytest.approx(a[f"cindex_{model}"] - b[f"cindex_{model}"])
        assert report.gaps[f"cindex_{model}"] > 0.2


def test_the_figures_equal_direct_lifelines_computations() -> None:
    train, holdout, synthetic = built(600, 3), built(600, 4), built(600, 5)
    report = subgroup_fairness(train, holdout, synthetic, SCHEMA, "group", horizon=1.0)
    models, _ = fit_models(train, synthetic, SCHEMA, 0.01)
    rows = holdout[holdout["group"] == "b"]
    design = design_matrix(rows, SCHEMA)
    model = models["tstr"]
    risk = model.predict_partial_hazard(design[list(model.params_.index)]).to_numpy()
    assert report.levels["b"]["cindex_tstr"] == pytest.approx(
        concordance_index(design["_time"], -risk, design["_event"])
    )
    km = KaplanMeierFitter().fit(design["_time"], design["_event"])
    observed = 1 - float(km.survival_function_at_times(1.0).iloc[0])
    expected = observed - predicted_risk(model, design, 1.0).mean()
    assert report.levels["b"]["calibration_tstr"] == pytest.approx(expected)
    assert report.levels["b"]["event_rate_synthetic"] == pytest.approx(
        synthetic.loc[synthetic["group"] == "b", "event"].mean()
    )


def test_a_level_with_too_few_rows_gets_reasons_not_numbers() -> None:
    train, holdout = built(400, 6, b_rows=12), built(400, 7, b_rows=12)
    report = subgroup_fairness(train, holdout, built(400, 8, b_rows=12), SCHEMA, "group")
    reasons = report.not_estimable["b"]
    assert set(reasons) == set(FIGURES)
    assert reasons["cindex_tstr"] == "fewer than 20 holdout rows"
    assert reasons["event_rate_real"] == "fewer than 20 real training rows"
    assert not set(FIGURES) & set(report.levels["b"])  # no number where there is a reason
    assert report.gaps == dict.fromkeys(FIGURES)  # one level left: no gap


def test_a_numeric_sensitive_column_is_refused() -> None:
    frame = built(100, 9)
    with pytest.raises(ValueError, match="'x' is continuous"):
        subgroup_fairness(frame, frame, frame, SCHEMA, "x")
