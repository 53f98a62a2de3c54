from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.marginals.tables import (
    MarginalSpec,
    add_gaussian_noise,
    count_tables,
    tables_from_json,
    tables_to_json,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [0, 1, 1, 0],
            "age": [5, 55, 99, 50],
            "grp": ["a", "c", "c", "b"],
            "time": [1.0, 9.9, 5.0, 10.0],
            "event": [1, 0, 1, 1],
        }
    )


def test_counts_by_hand(small_schema) -> None:
    spec = MarginalSpec.from_schema(small_schema, numeric_bins=4, time_bins=2, selection="all")
    tables = count_tables(_frame(), spec)
    np.testing.assert_array_equal(tables["x"], [2, 2])
    # age bins of width 25 on [0, 100]: 5 -> 0, 50 and 55 -> 2, 99 -> 3
    np.testing.assert_array_equal(tables["age"], [1, 0, 2, 1])
    np.testing.assert_array_equal(tables["grp"], [1, 1, 2])
    np.testing.assert_array_equal(tables["time"], [1, 3])  # the upper bound falls in the last bin
    np.testing.assert_array_equal(tables["event"], [1, 3])
    expected = np.zeros((3, 2, 2))
    expected[0, 0, 1] = 1  # a, time bin 0, event
    expected[2, 1, 0] = 1  # c, time bin 1, censored
    expected[2, 1, 1] = 1  # c, time bin 1, event
    expected[1, 1, 1] = 1  # b, time bin 1, event
    np.testing.assert_array_equal(tables["grp|time|event"], expected)
    assert set(tables) == {t.name for t in spec.tables}


def test_compact_tables_by_hand(small_schema) -> None:
    spec = MarginalSpec.from_schema(small_schema, numeric_bins=4, time_bins=2)
    tables = count_tables(_frame(), spec)
    assert list(tables) == ["age", "time|event", "x|event", "grp|event"]
    np.testing.assert_array_equal(tables["age"], [1, 0, 2, 1])
    np.testing.assert_array_equal(tables["time|event"], [[0, 1], [1, 2]])
    np.testing.assert_array_equal(tables["x|event"], [[0, 2], [1, 1]])
    np.testing.assert_array_equal(tables["grp|event"], [[0, 1], [0, 1], [1, 1]])


@pytest.mark.parametrize(("selection", "n_tables"), [("all", 5 + 3), ("compact", 4)])
def test_sensitivity_is_the_l2_change_of_one_record(small_schema, selection: str, n_tables: int) -> None:
    spec = MarginalSpec.from_schema(small_schema, selection=selection)
    assert len(spec.tables) == n_tables
    assert spec.l2_sensitivity == math.sqrt(n_tables)
    frame = _frame()
    full = count_tables(frame, spec)
    for i in range(len(frame)):
        less = count_tables(frame.drop(index=i), spec)
        diff = np.concatenate([(full[k] - less[k]).ravel() for k in full])
        assert np.linalg.norm(diff) == spec.l2_sensitivity


def test_noise_std_is_multiplier_times_sensitivity() -> None:
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema)
    exact = count_tables(frame, spec)
    noisy = add_gaussian_noise(exact, 1.5, spec, np.random.default_rng(0))
    residual = np.concatenate([(noisy[k] - exact[k]).ravel() for k in exact])
    expected = 1.5 * spec.l2_sensitivity
    # ~1,900 cells: the sample SD's relative standard error is about 1.6%; 6% is ~4 of them.
    assert abs(residual.std() / expected - 1.0) < 0.06
    assert abs(residual.mean()) < 4 * expected / math.sqrt(residual.size)


def test_json_round_trips(small_schema) -> None:
    spec = MarginalSpec.from_schema(small_schema, numeric_bins=5, time_bins=3)
    assert MarginalSpec.from_dict(spec.to_dict()) == spec
    tables = add_gaussian_noise(count_tables(_frame(), spec), 1.0, spec, np.random.default_rng(1))
    back = tables_from_json(tables_to_json(tables), spec)
    for name, values in tables.items():
        np.testing.assert_array_equal(back[name], values)
