"""Subgroup fairness pooled over sites, on known inputs: row-weighted means, withheld weights left
out, shares over the sites that released every count, gaps of the pooled figures."""

from __future__ import annotations

import pytest

from fedsynth.evaluation.pooled_fairness import MIXED_HORIZONS, pool_fairness


def _entry(levels: dict, horizon: float = 365.0, overall: float = 0.7) -> dict:
    return {"horizon": horizon, "overall": {"cindex_tstr": overall}, "levels": levels, "not_estimable": {}, "gaps": {}}


def _site(name: str, n_holdout: int, **columns: dict) -> dict:
    return {"site": name, "n_holdout": n_holdout, "fairness": columns}


A1 = {"n_train": 100, "n_holdout": 50, "n_synthetic": 200, "event_rate_real": 0.4, "event_rate_synthetic": 0.5,
      "cindex_tstr": 0.8, "calibration_tstr": 0.02}  # fmt: skip
B1 = {"n_train": 20, "n_holdout": 25, "n_synthetic": 40, "event_rate_real": 0.3, "event_rate_synthetic": 0.2,
      "cindex_tstr": 0.6, "calibration_tstr": -0.04}  # fmt: skip
A2 = {"n_train": 300, "n_holdout": 150, "n_synthetic": 600, "event_rate_real": 0.2, "event_rate_synthetic": 0.3,
      "cindex_tstr": 0.7, "calibration_tstr": 0.0}  # fmt: skip
B2 = {"n_train": None, "n_holdout": None, "n_synthetic": 2}  # a small level: counts withheld, no figure


def test_figures_are_means_weighted_by_the_rows_they_were_measured_on() -> None:
    sites = [
        _site("s1", 100, sex=_entry({"a": A1, "b": B1})),
        _site("s2", 300, sex=_entry({"a": A2, "b": B2}, 365.0, 0.8)),
    ]
    pooled = pool_fairness(sites)["sex"]
    assert pooled["sites"] == 2 and pooled["horizon"] == 365.0 and pooled["sites_without"] == []
    a, b = pooled["levels"]["a"], pooled["levels"]["b"]
    assert a["event_rate_real"] == pytest.approx((0.4 * 100 + 0.2 * 300) / 400)
    assert a["event_rate_synthetic"] == pytest.approx((0.5 * 200 + 0.3 * 600) / 800)
    assert a["cindex_tstr"] == pytest.approx((0.8 * 50 + 0.7 * 150) / 200)
    assert a["calibration_tstr"] == pytest.approx(0.02 * 50 / 200)
    assert a["sites_pooled"]["cindex_tstr"] == 2 and b["sites_pooled"]["cindex_tstr"] == 1
    assert b["event_rate_real"] == 0.3 and b["cindex_tstr"] == 0.6  # s2's small level adds nothing
    # Counts: summed where released; s2's withheld ones are counted as withheld, not as zero.
    assert (a["n_train"], b["n_train"], b["n_synthetic"]) == (400, 20, 42)
    assert b["counts_withheld"] == {"n_train": 1, "n_holdout": 1} and "counts_withheld" not in a
    # Shares: of the sites that released every level's count (s1 only for the real rows).
    assert (a["share_real"], b["share_real"]) == pytest.approx((100 / 120, 20 / 120))
    assert b["share_synthetic"] == pytest.approx(42 / 842)
    assert pooled["gaps"]["cindex_tstr"] == pytest.approx(a["cindex_tstr"] - 0.6)
    assert pooled["gaps"]["event_rate_real"] == pytest.approx(0.3 - a["event_rate_real"])
    assert pooled["gaps"]["cindex_trtr"] is None  # no level has it
    assert pooled["overall"]["cindex_tstr"] == pytest.approx((0.7 * 100 + 0.8 * 300) / 400)


def test_calibration_at_different_horizons_is_not_averaged() -> None:
    sites = [_site("s1", 100, sex=_entry({"a": A1, "b": B1}, 365.0)), _site("s2", 300, sex=_entry({"a": A2}, 730.0))]
    pooled = pool_fairness(sites)["sex"]
    assert pooled["horizon"] is None and pooled["note"] == MIXED_HORIZONS
    assert "calibration_tstr" not in pooled["levels"]["a"] and "cindex_tstr" in pooled["levels"]["a"]


def test_a_site_without_figures_for_a_column_is_named() -> None:
    sites = [
        _site("s1", 100, sex=_entry({"a": A1, "b": B1})),
        _site("s2", 300, sex={"error": "ValueError: no comparable pairs"}),
        {"site": "s3", "n_holdout": 50},  # an older fedsynth: no fairness part at all
    ]
    pooled = pool_fairness(sites)
    assert list(pooled) == ["sex"] and pooled["sex"]["sites"] == 1 and pooled["sex"]["sites_without"] == ["s2", "s3"]
    assert pooled["sex"]["levels"]["a"]["cindex_tstr"] == 0.8
    assert pool_fairness([{"site": "s3"}]) == {}
