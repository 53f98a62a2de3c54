"""Fidelity aggregates: known answers for identical, shuffled, longer-lived and shorter-followed samples."""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.fidelity import (
    MIN_GROUP_ROWS,
    compare_survival,
    fidelity,
    short_sightedness,
    total_variation,
)
from fedsynth.evaluation.utility import design_matrix


def test_real_rows_against_themselves_are_identical_everywhere(whas500) -> None:
    frame, schema = whas500
    result = fidelity(frame, frame.copy(), schema)
    assert all(m["value"] == 0.0 for m in result.marginals.values())
    assert result.correlation == {"max_abs": 0.0, "mean_abs": 0.0}
    assert result.short_sightedness == 0.0
    for curve in result.survival:
        assert curve.max_gap == 0.0 and curve.optimism == 0.0 and curve.logrank_p == pytest.approx(1.0)
    assert [c.group for c in result.survival][:3] == ["all", "afb=0", "afb=1"]
    assert all(len(c.grid) == len(c.real_survival) == 50 for c in result.survival)


def test_independent_columns_keep_marginals_and_lose_dependence(whas500) -> None:
    frame, schema = whas500
    rng = np.random.default_rng(0)
    shuffled = frame.apply(lambda column: rng.permutation(column.to_numpy()))
    result = fidelity(frame, shuffled, schema)
    assert all(m["value"] == pytest.approx(0.0, abs=1e-12) for m in result.marginals.values())  # a permutation
    assert result.correlation["max_abs"] > 0.3  # e.g. age with survival, sysbp with diasbp
    overall = result.survival[0]
    assert overall.max_gap > 0.05  # the event is no longer tied to its time
    # ...but the log-rank test cannot see it: both samples hold the same times, so the numbers at
    # risk are equal at every time, each group expects half the events and has half: statistic 0.
    assert overall.logrank_p == pytest.approx(1.0)


def test_longer_lives_read_as_optimism_and_shorter_follow_up_as_short_sightedness(whas500) -> None:
    frame, schema = whas500
    train, holdout = train_holdout_split(frame, 0.5, 0)
    longer = holdout.assign(lenfol=holdout["lenfol"] * 2)
    assert compare_survival(train, longer, schema).optimism > 0.05
    assert compare_survival(train, longer, schema).logrank_p < 1e-3
    halved = train.assign(lenfol=train["lenfol"] / 2)
    assert short_sightedness(train, halved, schema) == pytest.approx(0.5)
    assert compare_survival(train, holdout, schema).logrank_p > 0.01  # two halves of one population


def test_total_variation_known_values_and_small_groups_listed(whas500) -> None:
    import pandas as pd

    assert total_variation(pd.Series(["a", "a", "b", "b"]), pd.Series(["a", "b", "b", "b"])) == pytest.approx(0.25)
    assert total_variation(pd.Series(["a"]), pd.Series(["b"])) == 1.0
    frame, schema = whas500
    few = frame.head(60)
    result = fidelity(few, few, schema)
    assert result.survival_not_compared  # some level of some binary covariate has < 20 rows
    assert all(f"(< {MIN_GROUP_ROWS})" in reason for reason in result.survival_not_compared.values())


def test_histograms_sit_on_public_bins_and_withhold_small_real_cells(whas500) -> None:
    from fedsynth.data.datasets import load_dataset
    from fedsynth.evaluation.fidelity import HISTOGRAM_BINS, MIN_CELL_ROWS, histogram_edges, marginal_histograms

    frame, schema = whas500
    same = marginal_histograms(frame, frame.sample(frac=1.0, random_state=0), schema)
    age = same["age"]
    assert age["kind"] == "bins" and len(age["real"]) == len(age["synthetic"]) == HISTOGRAM_BINS
    column = schema.column("age")
    edges = histogram_edges(column)
    assert edges[0] == column.lower and edges[-1] == column.upper  # from the schema, not the data
    counts = np.histogram(frame["age"].to_numpy(float), edges)[0]
    for share, count, synthetic in zip(age["real"], counts, age["synthetic"], strict=True):
        if count < MIN_CELL_ROWS:
            assert share is None  # a cell of fewer than 5 patients is not released
        else:
            assert share == pytest.approx(count / len(frame)) and synthetic == pytest.approx(share)
    assert age["withheld_cells"] == int((counts < MIN_CELL_ROWS).sum()) > 0
    assert same["gender"]["levels"] == ["0", "1"] and sum(same["gender"]["real"]) == pytest.approx(1.0)
    actg, actg_schema = load_dataset("actg320")
    ivdrug = marginal_histograms(actg, actg, actg_schema)["ivdrug"]
    assert ivdrug["levels"] == ["1", "2", "3"] and ivdrug["real"][1] is None  # 3 patients with ivdrug=2
    # One withheld share alone would be one minus the others: the next smallest level goes too.
    assert ivdrug["withheld_cells"] == 2 and [v is None for v in ivdrug["real"]].count(True) == 2
    rare = frame.assign(sho=(np.arange(len(frame)) < 3).astype(int))  # 3 patients in shock
    assert marginal_histograms(rare, rare, schema)["sho"]["real"] == [None, None]


def test_correlation_matrices_and_the_curve_grid_end_are_public_shaped(whas500) -> None:
    from fedsynth.evaluation.fidelity import GRID_STEPS, correlation_matrices, survival_grid_end

    frame, schema = whas500
    matrices = correlation_matrices(frame, frame.copy(), schema)
    assert matrices["real"] == matrices["synthetic"]
    width = len(matrices["columns"])
    assert all(len(row) == width for row in matrices["real"]) and matrices["real"][0][0] == pytest.approx(1.0)
    constant = correlation_matrices(frame, frame.assign(gender=0), schema)
    g = matrices["columns"].index("gender")
    assert constant["synthetic"][g][0] is None and constant["real"][g][0] is not None
    end, bound = survival_grid_end(frame, schema), schema.column(schema.time_column).upper
    step = bound / GRID_STEPS
    assert end / step == pytest.approx(round(end / step))  # a multiple of the public step
    assert np.quantile(frame[schema.time_column], 0.95) <= end < np.quantile(frame[schema.time_column], 0.95) + step


def test_a_km_curve_on_30_rows_is_cut_where_fewer_than_20_remain_at_risk(whas500) -> None:
    """Times 1..30, every one an event: at t in (k-1, k] 31-k rows are at risk, under 20 once t > 11."""
    frame, schema = whas500
    rows = frame.head(30).assign(**{schema.time_column: np.arange(1.0, 31.0), schema.event_column: 1})
    curve = compare_survival(rows, rows.copy(), schema, horizon=29.4)
    grid = np.array(curve.grid)
    shown = np.array([v is not None for v in curve.real_survival])
    assert MIN_GROUP_ROWS == 20
    assert (shown == (grid <= 11.0)).all()  # released exactly where >= 20 are at risk
    assert curve.real_cut_at == pytest.approx(grid[grid > 11.0][0])
    released = np.array([v for v in curve.real_survival if v is not None])
    assert released == pytest.approx(1.0 - np.floor(grid[shown]) / 30)  # the KM values, untouched
    assert len(curve.synthetic_survival) == 50 and None not in curve.synthetic_survival  # synthetic: not real rows
    # WHAS500: the grid's end is the 95th percentile rounded up, where 25 rows or fewer remain; the
    # last points fall under 20 at risk and are cut there, at the first such point.
    whole = compare_survival(frame, frame.copy(), schema)
    times, points = frame[schema.time_column].to_numpy(float), np.array(whole.grid)
    at_risk = np.array([(times >= t).sum() for t in points])
    assert whole.real_cut_at == points[at_risk < MIN_GROUP_ROWS][0]
    assert [v is None for v in whole.real_survival] == list(at_risk < MIN_GROUP_ROWS)


def test_real_correlations_are_withheld_on_a_small_site_and_for_a_rare_indicator(whas500) -> None:
    from fedsynth.evaluation.fidelity import correlation_matrices, small_indicator_columns

    frame, schema = whas500
    rows = frame.head(100).assign(gender=[1] * 4 + [0] * 96)  # 4 rows with gender=1: under MIN_CELL_ROWS
    matrices = correlation_matrices(rows, rows.copy(), schema)
    g = matrices["columns"].index("gender")
    assert list(matrices["real_withheld"]) == ["gender"] == small_indicator_columns(design_matrix(rows, schema))
    assert matrices["real_withheld"]["gender"] == "fewer than 5 real rows in a level"
    assert all(v is None for v in matrices["real"][g]) and all(row[g] is None for row in matrices["real"])
    assert matrices["synthetic"][g][0] is not None  # synthetic rows are not real ones
    other = [i for i in range(len(matrices["columns"])) if i != g]
    assert all(matrices["real"][i][j] == matrices["synthetic"][i][j] for i in other for j in other)
    small = correlation_matrices(frame.head(19), frame.head(19), schema)  # under MIN_GROUP_ROWS
    assert list(small["real_withheld"]) == small["columns"]
    assert set(small["real_withheld"].values()) == {"fewer than 20 real rows"}
    assert all(v is None for row in small["real"] for v in row)
    from fedsynth.client.audit import check_audit_result
    from fedsynth.client.evaluation import evaluation_list_lengths

    for withheld in ({}, matrices["real_withheld"]):  # a reply with nothing withheld passes the aggregate check
        check_audit_result(
            {**matrices, "real_withheld": withheld}, len(rows), allowed_lengths=evaluation_list_lengths(schema)
        )
    twenty = correlation_matrices(frame.head(20), frame.head(20), schema)  # 20 rows: only rare indicators withheld
    kept = [i for i, name in enumerate(twenty["columns"]) if name not in twenty["real_withheld"]]
    assert kept and all(twenty["real"][i][i] == pytest.approx(1.0) for i in kept)


def test_missing_values_are_compared_as_shares_and_present_values_by_their_distribution(whas500) -> None:
    from tests.missing import blank

    frame, schema = whas500
    real, modelled = blank(frame, schema, {"bmi": 0.3, "cvd": 0.3}, seed=0)
    # The same present values, far fewer missing: distributions identical, missing shares not.
    synthetic = real.copy()
    synthetic["bmi"] = frame["bmi"].where(real["bmi"].notna() | (np.arange(len(frame)) % 3 > 0))
    result = fidelity(real, real.copy(), modelled)
    assert all(m["value"] == 0.0 for m in result.marginals.values())
    assert result.marginals["bmi"]["missing"]["real"] == result.marginals["bmi"]["missing"]["synthetic"]
    assert "missing" not in result.marginals["age"]
    shifted = fidelity(real, synthetic, modelled)
    share = shifted.marginals["bmi"]["missing"]
    assert share["real"] == pytest.approx(real["bmi"].isna().mean())
    assert share["synthetic"] == pytest.approx(synthetic["bmi"].isna().mean()) and share["synthetic"] < 0.15
    assert shifted.marginals["bmi"]["value"] < 0.06  # KS of present values: a subsample of the same values
    histogram = shifted.histograms["bmi"]
    assert histogram["missing"]["real"] == share["real"]
    assert sum(v for v in histogram["synthetic"]) == pytest.approx(1.0)  # shares of the present values
    # A binary column without labels, with missing values (floats 0.0/1.0): its levels are counted.
    cvd = shifted.histograms["cvd"]
    present = real["cvd"].dropna()
    assert cvd["real"] == pytest.approx([float((present == 0).mean()), float((present == 1).mean())])
    # Three missing values are a small cell: the real share is withheld, and the bins (shares of
    # the present values) are those of the same rows without them, so they cannot give it away.
    few, modelled_few = blank(frame, schema, {"bmi": 0.006}, seed=0)
    assert 0 < few["bmi"].isna().sum() < 10
    result = fidelity(few, few.copy(), modelled_few)
    assert result.marginals["bmi"]["missing"]["real"] is None
    without = few[few["bmi"].notna()]
    assert result.histograms["bmi"]["real"] == fidelity(without, without.copy(), modelled_few).histograms["bmi"]["real"]


def test_missingness_that_depends_on_the_outcome_shows_in_the_correlations(whas500) -> None:
    from tests.missing import blank

    frame, schema = whas500
    real, modelled = blank(frame, schema, {"hr": 0.6}, seed=0, when=frame["fstat"] == 1)
    at_random, _ = blank(frame, schema, {"hr": real["hr"].isna().mean()}, seed=1)
    result = fidelity(real, at_random, modelled)
    matrices = result.correlation_matrices
    i, j = matrices["columns"].index("hr:missing"), matrices["columns"].index("_event")
    assert matrices["real"][i][j] > 0.5 and abs(matrices["synthetic"][i][j]) < 0.1
    assert result.correlation["max_abs"] > 0.5
