"""Fidelity pooled over sites and its noise floor: known answers, and what a missing site does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from fedsynth.evaluation.pooled_fidelity import Z_CRITICAL, null_moments, pool_fidelity


def _site(name: str, n: int, m: int, marginals: dict, levels: dict | None = None) -> dict:
    histograms = {column: {"kind": "levels", "levels": labels} for column, labels in (levels or {}).items()}
    return {
        "site": name,
        "n_train": n,
        "n_synthetic": m,
        "fidelity": {"marginals": marginals, "histograms": histograms},
    }


def test_single_site_floors_reproduce_the_exact_95_percent_critical_values() -> None:
    s = math.sqrt(2 / 400)
    mean, sd = null_moments("ks", 400, 400)
    assert mean + Z_CRITICAL * sd == pytest.approx(1.358 * s, rel=0.02)  # c(0.05) of the two-sample KS test
    mean, sd = null_moments("tv", 400, 400, levels=2)
    assert mean + Z_CRITICAL * sd == pytest.approx(0.98 * s, rel=0.02)  # 1.96 x the SD of a share at p = 0.5
    assert null_moments("tv", 400, 400, levels=1) == (0.0, 0.0)  # one level: never any difference


def test_pooling_weights_sites_by_their_rows_and_names_the_worst_columns() -> None:
    sites = [
        _site("a", 300, 300, {"x": {"statistic": "ks", "value": 0.1}, "e": {"statistic": "tv", "value": 0.02}},
              {"e": ["0", "1"]}),
        _site("b", 100, 100, {"x": {"statistic": "ks", "value": 0.5}, "e": {"statistic": "tv", "value": 0.10}},
              {"e": ["0", "1"]}),
    ]  # fmt: skip
    pooled = pool_fidelity(sites)
    assert pooled["problem"] is None and pooled["weights"] == {"a": 0.75, "b": 0.25}
    assert pooled["columns"]["x"]["value"] == pytest.approx(0.75 * 0.1 + 0.25 * 0.5)
    assert pooled["mean_tvd"]["value"] == pytest.approx(0.75 * 0.02 + 0.25 * 0.10)
    assert pooled["worst_ks"]["column"] == "x" and pooled["worst_tvd"]["column"] == "e"
    # The floor is the weighted mean of the sites' floors, its spread that of independent sites.
    (mean_a, sd_a), (mean_b, sd_b) = null_moments("ks", 300, 300), null_moments("ks", 100, 100)
    expected = pooled["columns"]["x"]
    assert expected["noise_expected"] == pytest.approx(0.75 * mean_a + 0.25 * mean_b)
    assert expected["noise_critical"] == pytest.approx(
        expected["noise_expected"] + Z_CRITICAL * math.hypot(0.75 * sd_a, 0.25 * sd_b)
    )


def test_two_samples_of_one_distribution_stay_under_the_critical_floor() -> None:
    """Monte Carlo: three sites whose "synthetic" rows are a fresh sample of their real distribution."""
    rng = np.random.default_rng(0)
    sizes = [(120, 120), (200, 150), (80, 300)]
    below, means = 0, []
    draws = 300
    for _ in range(draws):
        sites = []
        for i, (n, m) in enumerate(sizes):
            real, synthetic = rng.normal(size=n), rng.normal(size=m)
            p = 0.3
            share_real, share_synthetic = rng.binomial(n, p) / n, rng.binomial(m, p) / m
            marginals = {
                "x": {"statistic": "ks", "value": float(ks_2samp(real, synthetic).statistic)},
                "e": {"statistic": "tv", "value": abs(share_real - share_synthetic)},
            }
            sites.append(_site(f"site-{i}", n, m, marginals, {"e": ["0", "1"]}))
        pooled = pool_fidelity(sites)
        column = pooled["columns"]["x"]
        below += column["value"] <= column["noise_critical"]
        means.append(column["value"])
    assert below / draws >= 0.93  # a 95% floor
    assert np.mean(means) == pytest.approx(column["noise_expected"], rel=0.1)
    # The TVD floor bounds the shares' worst case (p = 0.5): at p = 0.3 the real figure is lower.
    assert pooled["columns"]["e"]["noise_expected"] > 0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("fidelity"), "site-1 reported no per-column fidelity"),
        (lambda s: s.pop("n_synthetic"), "site-1 reported no n_synthetic"),
        (lambda s: s["fidelity"]["marginals"]["x"].update(value=None), "site-1 reported no finite ks for column x"),
        (lambda s: s["fidelity"]["histograms"].clear(), "site-1 reported no declared levels for column e"),
        (lambda s: s["fidelity"]["marginals"].pop("e"), "the sites reported different columns"),
    ],
)
def test_a_site_without_what_pooling_needs_leaves_no_figure_and_says_why(edit, message: str) -> None:
    sites = [
        _site(f"site-{i}", 100, 100, {"x": {"statistic": "ks", "value": 0.1}, "e": {"statistic": "tv", "value": 0.1}},
              {"e": ["0", "1"]})
        for i in range(2)
    ]  # fmt: skip
    edit(sites[1])
    pooled = pool_fidelity(sites)
    assert message in pooled["problem"]
    assert pooled["mean_ks"] is None and pooled["worst_tvd"] is None and pooled["columns"] is None


def test_missing_shares_are_pooled_with_the_sites_weights_and_withheld_if_any_site_withheld() -> None:
    def marginals(real, synthetic) -> dict:
        return {"bmi": {"statistic": "ks", "value": 0.1, "missing": {"real": real, "synthetic": synthetic}}}

    pooled = pool_fidelity([_site("a", 300, 300, marginals(0.2, 0.25)), _site("b", 100, 300, marginals(0.4, 0.3))])
    missing = pooled["columns"]["bmi"]["missing"]
    assert {k: missing[k] for k in ("real", "synthetic", "gap")} == pytest.approx(
        {"real": 0.25, "synthetic": 0.2625, "gap": 0.0125}
    )
    # the gap's 95% noise floor: 1.96 sqrt(sum w^2 p (1 - p) (n + m) / (n m)), by hand
    by_hand = 1.96 * math.sqrt(0.75**2 * 0.2 * 0.8 * 600 / 90000 + 0.25**2 * 0.4 * 0.6 * 400 / 30000)
    assert missing["noise_critical"] == pytest.approx(by_hand) and missing["withheld_at"] == []
    pooled = pool_fidelity([_site("a", 300, 300, marginals(None, 0.25)), _site("b", 100, 300, marginals(0.4, 0.3))])
    missing = pooled["columns"]["bmi"]["missing"]
    assert missing["real"] is None and missing["gap"] is None and missing["withheld_at"] == ["a"]


def test_the_missing_share_gap_floor_holds_for_samples_of_one_distribution() -> None:
    """Two samples of one missing share, at two sites: the pooled gap stays under its floor in about
    95% of draws (the floor is the 95th percentile of the gap's size)."""
    rng = np.random.default_rng(0)
    sizes, share, inside = [(400, 400), (150, 300)], 0.3, 0
    for _ in range(2000):
        sites = [
            _site(
                str(i),
                n,
                m,
                {
                    "bmi": {
                        "statistic": "ks",
                        "value": 0.1,
                        "missing": {"real": rng.binomial(n, share) / n, "synthetic": rng.binomial(m, share) / m},
                    }
                },
            )
            for i, (n, m) in enumerate(sizes)
        ]
        missing = pool_fidelity(sites)["columns"]["bmi"]["missing"]
        inside += abs(missing["gap"]) <= missing["noise_critical"]
    assert 0.93 <= inside / 2000 <= 0.97
