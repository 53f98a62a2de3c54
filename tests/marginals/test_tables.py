from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.marginals.tables import (
    DISCRETE_WEIGHT,
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
    assert list(tables) == ["age", "time|event", "x", "grp"]
    np.testing.assert_array_equal(tables["age"], [1, 0, 2, 1])
    np.testing.assert_array_equal(tables["time|event"], [[0, 1], [1, 2]])
    np.testing.assert_array_equal(tables["x"], [2, 2])
    np.testing.assert_array_equal(tables["grp"], [1, 1, 2])
    weights = {t.name: t.weight for t in spec.tables}
    assert weights == {"age": 1.0, "time|event": 1.0, "x": DISCRETE_WEIGHT, "grp": DISCRETE_WEIGHT}


@pytest.mark.parametrize(("selection", "squared"), [("all", 5 + 3), ("compact", 2 + 2 * DISCRETE_WEIGHT**2)])
def test_sensitivity_is_the_l2_change_of_one_record(small_schema, selection: str, squared: float) -> None:
    spec = MarginalSpec.from_schema(small_schema, selection=selection)
    assert spec.l2_sensitivity == pytest.approx(math.sqrt(squared))
    weight = {t.name: t.weight for t in spec.tables}
    frame = _frame()
    full = count_tables(frame, spec)
    for i in range(len(frame)):
        less = count_tables(frame.drop(index=i), spec)
        # What is released is weight x counts (plus noise): the L2 change of that.
        diff = np.concatenate([weight[k] * (full[k] - less[k]).ravel() for k in full])
        assert np.linalg.norm(diff) == pytest.approx(spec.l2_sensitivity)


def test_noise_std_is_multiplier_times_sensitivity_over_the_weight() -> None:
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema)
    exact = count_tables(frame, spec)
    draws = [add_gaussian_noise(exact, 1.5, spec, np.random.default_rng(seed)) for seed in range(10)]
    for weight in {t.weight for t in spec.tables}:
        tables = [t for t in spec.tables if t.weight == weight]
        residual = np.concatenate([(noisy[t.name] - exact[t.name]).ravel() for noisy in draws for t in tables])
        expected = 1.5 * spec.l2_sensitivity / weight
        assert expected == spec.noise_std(tables[0], 1.5)
        # At least 160 cells: the sample SD's relative standard error is at most 5.6%; 20% is ~3.5.
        assert residual.size >= 160 and abs(residual.std() / expected - 1.0) < 0.2
        assert abs(residual.mean()) < 4 * expected / math.sqrt(residual.size)


def test_a_spec_document_with_a_bad_weight_is_refused(small_schema) -> None:
    document = MarginalSpec.from_schema(small_schema).to_dict()
    document["tables"][-1]["weight"] = 0.0
    with pytest.raises(ValueError, match="weight must be a positive number"):
        MarginalSpec.from_dict(document)


def test_json_round_trips(small_schema) -> None:
    spec = MarginalSpec.from_schema(small_schema, numeric_bins=5, time_bins=3)
    assert MarginalSpec.from_dict(spec.to_dict()) == spec
    tables = add_gaussian_noise(count_tables(_frame(), spec), 1.0, spec, np.random.default_rng(1))
    back = tables_from_json(tables_to_json(tables), spec)
    for name, values in tables.items():
        np.testing.assert_array_equal(back[name], values)


@pytest.mark.parametrize("selection", ["all", "compact"])
def test_a_missing_value_counts_in_the_missing_cell_and_the_sensitivity_stays_exact(small_schema, selection) -> None:
    from tests.missing import modelled_schema

    schema = modelled_schema(small_schema, ["age", "grp"])
    spec = MarginalSpec.from_schema(schema, numeric_bins=4, time_bins=2, selection=selection)
    assert spec.bin("age").n_cells == 5 and spec.bin("grp").n_cells == 4 and spec.bin("x").n_cells == 2
    # The same tables as without missing values: only each table's shape grew by its missing cell.
    plain = MarginalSpec.from_schema(small_schema, numeric_bins=4, time_bins=2, selection=selection)
    assert spec.l2_sensitivity == plain.l2_sensitivity
    frame = _frame().astype({"age": float, "grp": object})
    frame.loc[[1, 3], "age"] = np.nan
    frame.loc[[2], "grp"] = np.nan
    tables = count_tables(frame, spec)
    np.testing.assert_array_equal(tables["age"], [1, 0, 0, 1, 2])  # 5 -> 0, 99 -> 3, two missing
    np.testing.assert_array_equal(tables["grp"], [1, 1, 1, 1])  # a, b, c, one missing
    weight = {t.name: t.weight for t in spec.tables}
    for i in range(len(frame)):  # every record, missing values or not, moves the release by exactly this
        less = count_tables(frame.drop(index=i), spec)
        diff = np.concatenate([weight[k] * (tables[k] - less[k]).ravel() for k in tables])
        assert np.linalg.norm(diff) == pytest.approx(spec.l2_sensitivity)
    assert MarginalSpec.from_dict(spec.to_dict()) == spec
    assert "missing" not in str(plain.to_dict()["bins"])  # specs without missing cells read as before
