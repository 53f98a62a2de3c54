"""The nearest-neighbour KDE behind the density attack equals a full Gaussian KDE where it matters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.neighbors import KernelDensity

from fedsynth.data.datasets import load_dataset
from fedsynth.data.transforms import Transformer
from fedsynth.privacy.kde import NeighbourKDE, nearest_neighbour_bandwidth


def _full_kde(rows: np.ndarray, queries: np.ndarray, bandwidth: float) -> np.ndarray:
    """The textbook Gaussian KDE, every pair in float64 (sklearn's tree KDE floors far tails)."""
    squared = ((queries[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    dims = rows.shape[1]
    return (
        logsumexp(-squared / (2 * bandwidth**2), axis=1)
        - math.log(len(rows))
        - 0.5 * dims * math.log(2 * math.pi * bandwidth**2)
    )


@pytest.mark.parametrize("dataset", ["whas500", "gbsg2", "actg320", "flchain"])
def test_equals_the_full_kernel_sum_at_the_attack_bandwidth(dataset: str) -> None:
    frame, schema = load_dataset(dataset)
    encoded = Transformer(schema).encode(frame).astype(np.float64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(encoded))
    half = len(encoded) // 2
    rows, queries = encoded[order[:half]], encoded[order[half:]][:400]
    queries = np.vstack([queries, rows[:100]])  # fresh records and the density's own rows
    bandwidth = nearest_neighbour_bandwidth(rows, 0.5, rng)
    ours = NeighbourKDE(rows, bandwidth).score_samples(queries)
    np.testing.assert_allclose(ours, _full_kde(rows, queries, bandwidth), rtol=0, atol=1e-3)


def test_a_bandwidth_wider_than_the_neighbours_reach_falls_back_to_a_wide_search() -> None:
    rng = np.random.default_rng(1)
    rows = rng.random((500, 3))
    queries = rng.random((100, 3))
    wide = 0.3  # far above the attack's bandwidth: 4 neighbours all lie within 6 bandwidths
    result = NeighbourKDE(rows, wide, neighbours=4).score_samples(queries)
    full = KernelDensity(bandwidth=wide).fit(rows).score_samples(queries)
    np.testing.assert_allclose(result, full, rtol=0, atol=1e-5)


def test_bandwidth_is_the_scaled_median_nearest_neighbour_distance() -> None:
    rows = np.arange(10, dtype=float).reshape(-1, 1) * 2.0  # every nearest neighbour at distance 2
    assert nearest_neighbour_bandwidth(rows, 0.5, np.random.default_rng(0)) == pytest.approx(1.0)


def test_refuses_empty_rows_and_non_positive_bandwidth() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        NeighbourKDE(np.empty((0, 2)), 1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        NeighbourKDE(np.ones((3, 2)), 0.0)


def test_many_duplicates_do_not_saturate_the_density() -> None:
    # 500 copies of one record: a truncated 64-neighbour sum would cap its density at 64 copies.
    rng = np.random.default_rng(2)
    rows = np.vstack([np.full((500, 3), 0.5), rng.random((1500, 3))])
    bandwidth = 0.05
    query = np.full((1, 3), 0.5)
    ours = NeighbourKDE(rows, bandwidth).score_samples(query)
    np.testing.assert_allclose(ours, _full_kde(rows, query, bandwidth), rtol=0, atol=1e-3)
