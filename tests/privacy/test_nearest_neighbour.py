"""Nearest-neighbour audit against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.privacy.nearest_neighbour import (
    HISTOGRAM_BINS,
    Z_95,
    AuditInputError,
    nearest_neighbour_audit,
    pooled_dcr_share,
)
from fedsynth.suppression import MIN_CELL_ROWS


@pytest.fixture(scope="module")
def flchain_thirds():
    frame, schema = load_dataset("flchain")
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    n = 1500
    return shuffled[:n], shuffled[n : 2 * n], shuffled[2 * n : 3 * n], schema


def test_a_copy_of_the_training_rows_fails(flchain_thirds) -> None:
    train, holdout, _, schema = flchain_thirds
    audit = nearest_neighbour_audit(train.copy(), train, holdout, schema)
    assert audit.dcr_share == pytest.approx(1.0, abs=0.01)
    assert audit.dcr_share_ci[0] > 0.95
    assert audit.exact_matches == len(train)
    assert audit.exact_matches_holdout == 0  # FLChain's continuous columns: unseen patients never match
    assert audit.dcr_synthetic_p5 == 0.0 < audit.dcr_holdout_p5
    assert audit.nndr_synthetic_p5 == 0.0


def test_fresh_rows_from_the_same_population_pass(flchain_thirds) -> None:
    train, holdout, fresh, schema = flchain_thirds
    audit = nearest_neighbour_audit(fresh, train, holdout, schema)
    low, high = audit.dcr_share_ci
    assert low <= 0.5 <= high and high - low < 0.08  # 1,500 rows per set; bootstrap over all three
    assert audit.exact_matches == 0
    assert audit.dcr_synthetic_p5 == pytest.approx(audit.dcr_holdout_p5, rel=0.2)


def test_on_coarse_columns_unseen_patients_match_training_rows_too() -> None:
    """Only four binary columns vary (16 possible records): whole records repeat between real
    patients, so holdout rows match training rows as often as fresh ones do."""
    frame, schema = load_dataset("whas500")
    varying = ("gender", "cvd", "afb", "fstat")
    coarse = frame.assign(**{c: frame[c].iloc[0] for c in frame.columns if c not in varying})
    train, holdout, fresh = coarse[:150], coarse[150:300], coarse[300:450]
    audit = nearest_neighbour_audit(fresh, train, holdout, schema)
    assert audit.exact_matches_holdout == len(holdout) and audit.exact_matches == len(fresh)
    assert audit.nndr_synthetic_p5 == pytest.approx(audit.nndr_holdout_p5, rel=0.2)


def test_only_aggregates_come_back(flchain_thirds) -> None:
    train, holdout, fresh, schema = flchain_thirds
    result = nearest_neighbour_audit(fresh, train, holdout, schema).to_dict()
    for key, value in result.items():
        if isinstance(value, list):  # fixed-size histograms, never one value per record
            assert len(value) in (HISTOGRAM_BINS, HISTOGRAM_BINS + 1), key
        else:
            assert isinstance(value, (int, float, tuple)), key
    assert sum(result["dcr_synthetic_histogram"]) == len(fresh)
    holdout_cells = result["dcr_holdout_histogram"]  # real rows: no cell under MIN_CELL_ROWS released
    assert all(c is None or c >= MIN_CELL_ROWS for c in holdout_cells) and None in holdout_cells
    assert sum(c for c in holdout_cells if c is not None) <= len(holdout)


def test_a_holdout_dcr_cell_under_5_rows_is_withheld() -> None:
    from fedsynth.privacy.nearest_neighbour import withhold_small

    assert MIN_CELL_ROWS == 5
    assert withhold_small(np.array([0, 3, 4, 5, 12])) == [None, None, None, 5, 12]


def test_too_few_rows_are_refused_with_the_fix(flchain_thirds) -> None:
    train, holdout, fresh, schema = flchain_thirds
    with pytest.raises(AuditInputError, match="holdout_fraction"):
        nearest_neighbour_audit(fresh, train[:10], holdout, schema)
    with pytest.raises(AuditInputError, match="empty"):
        nearest_neighbour_audit(fresh[:0], train, holdout, schema)


def test_pooled_dcr_share_is_the_weighted_mean_with_its_standard_error() -> None:
    sites = [
        {"n_synthetic": 100, "dcr_share": 0.5, "dcr_share_se": 0.1},
        {"n_synthetic": 300, "dcr_share": 0.7, "dcr_share_se": 0.04},
    ]
    share, (low, high) = pooled_dcr_share(sites)
    assert share == pytest.approx(0.25 * 0.5 + 0.75 * 0.7)
    se = ((0.25 * 0.1) ** 2 + (0.75 * 0.04) ** 2) ** 0.5
    assert (low, high) == pytest.approx((share - Z_95 * se, share + Z_95 * se))
    with pytest.raises(ValueError, match="dcr_share_se"):
        pooled_dcr_share([{"n_synthetic": 10, "dcr_share": 0.5}])


def test_pooling_three_sites_narrows_the_interval(flchain_thirds) -> None:
    # The same fresh-rows audit at three sites: the pooled CI is about 1/sqrt(3) as wide.
    train, holdout, fresh, schema = flchain_thirds
    audits = [
        nearest_neighbour_audit(fresh.sample(200, random_state=s), train.sample(400, random_state=s),
                                holdout.sample(100, random_state=s), schema, seed=s).to_dict()
        for s in range(3)
    ]  # fmt: skip
    share, (low, high) = pooled_dcr_share(audits)
    widths = [a["dcr_share_ci"][1] - a["dcr_share_ci"][0] for a in audits]
    assert high - low == pytest.approx(sum(widths) / 3 / 3**0.5, rel=0.25)
    assert low < 0.5 < high  # fresh rows from the population: no closer to train than to holdout


def test_missing_values_encode_as_indicators_and_a_copy_is_still_caught(whas500) -> None:
    from fedsynth.privacy.membership import density_attack, distance_attack
    from tests.missing import blank

    frame, schema = blank(*whas500, {"bmi": 0.3, "cvd": 0.3}, seed=0)
    train, holdout = frame.iloc[:250], frame.iloc[250:]
    audit = nearest_neighbour_audit(train.copy(), train, holdout, schema, seed=0)
    assert audit.exact_matches == len(train) and audit.dcr_share > 0.9
    assert distance_attack(train.copy(), train, holdout, schema).auc > 0.9
    assert np.isfinite(density_attack(train.copy(), train, holdout, schema).auc)
