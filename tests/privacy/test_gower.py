"""faiss search of Anonymeter's distance finds records exactly as near as Anonymeter's own search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anonymeter.evaluators import linkability_evaluator
from anonymeter.neighbors.mixed_types_kneighbors import MixedTypeKNeighbors, gower_distance
from anonymeter.preprocessing.transformations import mixed_types_transform

from fedsynth.privacy.gower import FaissInferencePredictor, FaissMixedTypeKNeighbors, faiss_linkability_neighbours


def _mixed(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(60, 12, n).round(1),
            "cd4": rng.gamma(2.0, 50.0, n),
            "sex": rng.choice(["f", "m"], n),
            "stage": rng.choice(["I", "II", "III", "IV"], n),
        }
    )


def test_nearest_records_are_as_near_as_anonymeters_own_search() -> None:
    candidates, queries = _mixed(3000, 0), _mixed(200, 1)
    ours_d, ours_i = FaissMixedTypeKNeighbors(n_neighbors=3).fit(candidates).kneighbors(queries, return_distance=True)
    theirs_d, theirs_i = (
        MixedTypeKNeighbors(n_neighbors=3, n_jobs=1).fit(candidates).kneighbors(queries, return_distance=True)
    )
    # Same distances (ties may pick a different, equally near record), to float32 precision.
    np.testing.assert_allclose(ours_d, theirs_d, rtol=0, atol=1e-5)
    assert np.mean(ours_i[:, 0] == theirs_i[:, 0]) > 0.95
    # And each reported distance is Anonymeter's distance between the two records it names.
    scaled_candidates, scaled_queries = mixed_types_transform(candidates, queries, ["age", "cd4"], ["sex", "stage"])
    for q in range(0, 200, 20):
        record = scaled_queries.iloc[q].to_numpy(dtype=float)
        nearest = scaled_candidates.iloc[ours_i[q, 0]].to_numpy(dtype=float)
        assert abs(gower_distance(record, nearest, 2) - ours_d[q, 0]) < 1e-5


def test_inference_guess_is_the_nearest_synthetic_records_secret() -> None:
    synthetic = _mixed(500, 2)
    synthetic["event"] = np.arange(500) % 2
    guesses = FaissInferencePredictor(synthetic, ["age", "cd4", "sex", "stage"], "event").predict(synthetic.head(50))
    assert (guesses.to_numpy() == synthetic["event"].head(50).to_numpy()).all()  # each row is its own nearest


def test_linkability_search_is_swapped_only_inside_the_block() -> None:
    with faiss_linkability_neighbours():
        assert linkability_evaluator.MixedTypeKNeighbors is FaissMixedTypeKNeighbors
    assert linkability_evaluator.MixedTypeKNeighbors is MixedTypeKNeighbors


def test_a_missing_value_is_at_distance_one_from_any_value_and_zero_from_another_missing() -> None:
    candidates = pd.DataFrame({"age": [40.0, 60.0, np.nan, 80.0], "stage": ["I", None, "II", "II"]})
    queries = pd.DataFrame({"age": [np.nan, 60.0, 40.0], "stage": ["II", None, None]})
    distances, indexes = (
        FaissMixedTypeKNeighbors(n_neighbors=4).fit(candidates).kneighbors(queries, return_distance=True)
    )
    # age is scaled by its range (40): 40 and 80 are 1 apart, 60 is 0.5 from either.
    expected = {
        0: {2: 0.0, 3: 1.0, 1: 2.0, 0: 2.0},  # (nan, II): equal to row 2; 1 from row 3 (age)
        1: {1: 0.0, 0: 1.5, 3: 1.5, 2: 2.0},  # (60, None): equal to row 1; missing vs present counts 1
        2: {1: 0.5, 0: 1.0, 2: 2.0, 3: 2.0},  # (40, None): both missing stage count 0
    }
    for q, row in expected.items():
        found = dict(zip(indexes[q].tolist(), distances[q].tolist(), strict=True))
        assert found == pytest.approx(row, abs=1e-6)
