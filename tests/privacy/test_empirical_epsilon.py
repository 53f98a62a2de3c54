"""Empirical epsilon: sound against a mechanism whose epsilon is known exactly, tight enough to matter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedsynth.privacy.empirical_epsilon import clopper_pearson_upper, empirical_epsilon


def gaussian_dp_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of mu-GDP at delta (Dong, Roth & Su 2019): the test's reference."""

    def delta_of(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return brentq(delta_of, 0.0, 100.0)


@pytest.mark.parametrize("mu", [1.0, 2.0, 3.0])
def test_bound_never_exceeds_the_true_epsilon_of_a_gaussian_mechanism(mu: float) -> None:
    # Scores of an optimal attack on mu-GDP: N(mu, 1) for members, N(0, 1) for non-members.
    rng = np.random.default_rng(int(mu * 10))
    delta = 1e-5
    result = empirical_epsilon(rng.normal(mu, 1.0, 20_000), rng.normal(0.0, 1.0, 20_000), delta)
    true_epsilon = gaussian_dp_epsilon(mu, delta)
    assert 0.0 < result.epsilon_lower_bound < true_epsilon
    assert not result.exceeds(true_epsilon)
    if mu == 3.0:
        assert result.epsilon_lower_bound > 2.0  # informative, not just sound


def test_no_signal_gives_no_bound_and_perfect_separation_a_large_one() -> None:
    rng = np.random.default_rng(0)
    same = empirical_epsilon(rng.normal(size=5000), rng.normal(size=5000), 1e-5)
    assert same.epsilon_lower_bound < 0.15
    separated = empirical_epsilon(np.full(1500, 1.0), np.zeros(1500), 1e-5)
    assert separated.epsilon_lower_bound > 4.0 and separated.exceeds(4.0)


def test_clopper_pearson_upper_bound_known_values() -> None:
    # Zero failures in n trials: the upper bound solves (1 - p)^n = alpha.
    assert clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)
    assert clopper_pearson_upper(100, 100, 0.05) == 1.0
    assert 0.5 < clopper_pearson_upper(50, 100, 0.05) < 0.6
