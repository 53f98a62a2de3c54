"""Known answers for the minimal utility check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.evaluation.utility import CoxFitError, design_matrix, fit_cox, utility_report
from fedsynth.privacy.copies import exact_copy_count


def test_real_data_against_itself_is_perfect(whas500, whas_split) -> None:
    schema = whas500[1]
    train, holdout = whas_split
    report = utility_report(train, holdout, train.copy(), schema)
    assert report.hr_in_ci_fraction == 1.0
    assert report.hr_sign_agreement == 1.0
    assert report.mean_abs_log_hr_diff == 0.0
    assert report.cindex_tstr == report.cindex_trtr
    assert report.mean_ks == 0.0


def test_independent_columns_lose_the_signal(whas500, whas_split) -> None:
    """Shuffling every column independently keeps marginals and destroys every association.

    One shuffle's noise coefficients can line up with a strong predictor by chance, so the
    known answer (C-index 0.5, sign agreement 0.5) holds on average over shuffles.
    """
    schema = whas500[1]
    train, holdout = whas_split
    reports = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        shuffled = pd.DataFrame({c: rng.permutation(train[c].to_numpy()) for c in train.columns})
        reports.append(utility_report(train, holdout, shuffled, schema))
    assert all(r.mean_ks == 0.0 for r in reports)  # same marginals
    assert reports[0].cindex_trtr > 0.7
    assert abs(np.mean([r.cindex_tstr for r in reports]) - 0.5) < 0.07
    assert abs(np.mean([r.hr_sign_agreement for r in reports]) - 0.5) < 0.15
    assert np.mean([r.hr_in_ci_fraction for r in reports]) < 0.8


def test_design_matrix_one_hot_drops_first_category() -> None:
    from fedsynth.data.datasets import load_dataset

    frame, schema = load_dataset("gbsg2")
    design = design_matrix(frame, schema)
    assert "tgrade=II" in design and "tgrade=III" in design and "tgrade=I" not in design
    assert set(design["horTh"]) == {0.0, 1.0}
    assert fit_cox(frame, schema).summary.shape[0] == design.shape[1] - 2


def test_exact_copy_count(whas_split) -> None:
    train = whas_split[0]
    mixed = pd.concat([train.head(7), train.tail(3).assign(age=lambda f: f["age"] + 1)])
    assert exact_copy_count(mixed, train) == 7


def test_non_estimable_covariates_are_excluded_with_reason() -> None:
    from fedsynth.evaluation.utility import estimable_covariates
    from fedsynth.suppression import MIN_CELL_ROWS

    design = pd.DataFrame(
        {
            "age": [50.0, 60, 70, 80, 55, 65, 52, 61, 73, 84, 58, 66],
            "rare": [1.0] * 5 + [0.0] * 7,  # its 5 patients have no event: monotone likelihood
            "small": [0.0] * 5 + [1.0] * 4 + [0.0] * 3,  # 4 patients: under MIN_CELL_ROWS, withheld
            "flat": [1.0] * 12,
            "sex": [0.0, 1] * 6,
            "_time": [5.0, 3, 4, 2, 6, 1, 7, 8, 9, 10, 11, 12],
            "_event": [0.0] * 5 + [1.0, 1, 1, 0, 1, 1, 1],
        }
    )
    keep, excluded = estimable_covariates(design)
    assert MIN_CELL_ROWS == 5
    assert keep == ["age", "sex"]
    assert set(excluded) == {"rare", "small", "flat"}
    assert "not estimable" in excluded["rare"] and "constant" in excluded["flat"]
    assert excluded["small"] == "fewer than 5 real rows in one of its levels (withheld)"


def test_cox_fit_reaches_the_optimum_where_lifelines_default_newton_stops_short(tmp_path) -> None:
    # Known case: FLChain split over 3 sites (partition seed 2, split seed 2), pooled training
    # rows. lifelines' default Newton step (0.95) reports convergence at log-likelihood ~-14,697
    # with four log-HR signs flipped; the optimum (a concave problem) is ~-11,961.
    import pytest
    from lifelines import CoxPHFitter

    from fedsynth.server.config import FederationConfig
    from fedsynth.server.simulation import prepare_sites
    from fedsynth.server.simulation_score import site_tables

    config = FederationConfig.from_dict(
        {
            "federation": {"run_dir": str(tmp_path / "run")},
            "simulation": {"dataset": "flchain", "sites": 3, "seed": 2},
            "site": {"training": {"split_seed": 2}},
        }
    )
    schema, _ = prepare_sites(config)
    pooled = pd.concat([train for _, train, _ in site_tables(config.run_dir)], ignore_index=True)
    design = design_matrix(pooled, schema)
    default = CoxPHFitter(penalizer=0.01).fit(design, duration_col="_time", event_col="_event")
    careful = CoxPHFitter(penalizer=0.01).fit(
        design, duration_col="_time", event_col="_event", fit_options={"step_size": 0.1}
    )
    ours = fit_cox(pooled, schema)
    assert default.log_likelihood_ < careful.log_likelihood_ - 1000  # the trap is there
    assert ours.log_likelihood_ == pytest.approx(careful.log_likelihood_, abs=1e-3)
    assert ours.params_["age"] > 0 and ours.params_["lambda"] > 0  # older age, higher FLC: higher hazard


def test_a_fit_lifelines_only_warns_about_produces_no_numbers(whas500) -> None:
    frame, schema = whas500
    rows = frame.copy()
    # 'sho' = 1 exactly for 30 deaths moved before every other time: its partial likelihood rises
    # for ever, and unpenalised lifelines "completes" at a log-HR near 21 with only a warning.
    earliest = rows[rows["fstat"] == 1].nsmallest(30, "lenfol").index
    rows["sho"] = rows.index.isin(earliest).astype(int)
    rows.loc[earliest, "lenfol"] = 0
    with pytest.raises(CoxFitError, match="did not converge"):
        fit_cox(rows, schema, penalizer=0.0)
    assert fit_cox(frame, schema).params_.abs().max() < 5  # the real data fit as usual
