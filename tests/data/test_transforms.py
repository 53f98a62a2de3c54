"""inverse(transform(x)) == x within the public bounds, for every kind of column."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsynth.data.datasets import DATASETS, load_dataset
from fedsynth.data.schema import Column, Schema
from fedsynth.data.transforms import Transformer, from_unit, to_unit


def _column(**kwargs) -> Column:
    return Column(name="x", **kwargs)


numeric_columns = st.one_of(
    st.builds(
        lambda lo, span: _column(kind="continuous", lower=lo, upper=lo + span),
        st.floats(-1e3, 1e3),
        st.floats(1e-2, 1e4),
    ),
    st.builds(
        lambda lo, span, lam, off: _column(
            kind="continuous", lower=lo, upper=lo + span, transform="boxcox", boxcox_lambda=lam, offset=off
        ),
        st.floats(0, 100),
        st.floats(1, 1e3),
        st.floats(-2, 2),
        st.floats(0.5, 10),
    ),
    st.builds(
        lambda lo, span, off: _column(kind="continuous", lower=lo, upper=lo + span, transform="log", offset=off),
        st.floats(0, 100),
        st.floats(1, 1e4),
        st.floats(0.1, 10),
    ),
)


@settings(max_examples=200, deadline=None)
@given(numeric_columns, st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_continuous_round_trip_within_bounds(column: Column, fractions: list[float]) -> None:
    values = column.lower + np.array(fractions) * (column.upper - column.lower)
    unit = to_unit(column, values)
    assert np.all((unit >= 0) & (unit <= 1))
    np.testing.assert_allclose(from_unit(column, unit), values, rtol=1e-9, atol=1e-9 * (column.upper - column.lower))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-1000, 1000),
    st.integers(1, 5000),
    st.lists(st.floats(0, 1), min_size=1, max_size=20),
    st.sampled_from(["identity", "log"]),
)
def test_integer_round_trip_is_exact(lower: int, span: int, fractions: list[float], transform: str) -> None:
    offset = 0.0 if transform == "identity" else float(max(1, 1 - lower))
    column = _column(kind="integer", lower=lower, upper=lower + span, transform=transform, offset=offset)
    values = np.round(lower + np.array(fractions) * span)
    assert np.array_equal(from_unit(column, to_unit(column, values)), values)


def test_out_of_bounds_values_are_clipped_to_unit_interval() -> None:
    column = _column(kind="continuous", lower=0, upper=10)
    assert to_unit(column, np.array([-5.0, 15.0])).tolist() == [0.0, 1.0]


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(DATASETS), st.integers(0, 2**31 - 1))
def test_bundled_frames_round_trip(name: str, seed: int) -> None:
    frame, schema = _cached(name)
    rows = frame.sample(n=min(64, len(frame)), random_state=seed).reset_index(drop=True)
    transformer = Transformer(schema)
    encoded = transformer.encode(rows)
    assert encoded.shape[1] == transformer.width
    assert encoded.min() >= 0.0 and encoded.max() <= 1.0
    _assert_frames_close(transformer.decode(encoded), rows, schema)
    _assert_frames_close(transformer.from_codes(transformer.codes(rows)), rows, schema)


_CACHE: dict[str, tuple[pd.DataFrame, Schema]] = {}


def _cached(name: str) -> tuple[pd.DataFrame, Schema]:
    if name not in _CACHE:
        _CACHE[name] = load_dataset(name)
    return _CACHE[name]


def _assert_frames_close(left: pd.DataFrame, right: pd.DataFrame, schema: Schema) -> None:
    for column in schema.columns:
        if column.kind == "continuous":
            np.testing.assert_allclose(
                left[column.name].to_numpy(float), right[column.name].to_numpy(float), rtol=1e-9, atol=1e-9
            )
        else:
            assert left[column.name].tolist() == right[column.name].tolist(), column.name


def test_a_declared_step_puts_values_on_the_recorded_grid_as_files_write_them() -> None:
    creatinine = _column(kind="continuous", lower=0.0, upper=20.0, transform="log", offset=1.0, step=0.1)
    values = from_unit(creatinine, np.linspace(0.0, 0.2, 500))
    # The decimals a file holds: 1.1, never 11 * 0.1 = 1.1000000000000001 beside the real atom.
    assert set(values) == {float(f"{v:.1f}") for v in values}
    karnofsky = _column(kind="integer", lower=70.0, upper=100.0, step=10.0)
    assert set(from_unit(karnofsky, np.linspace(0.0, 1.0, 200))) == {70.0, 80.0, 90.0, 100.0}
    real = np.array([0.4, 0.7, 1.1, 2.3])
    assert np.array_equal(from_unit(creatinine, to_unit(creatinine, real)), real)


def test_missing_values_round_trip_through_codes_and_the_encoded_matrix() -> None:
    from tests.missing import blank

    frame, schema = blank(*_cached("gbsg2"), {"age": 0.3, "horTh": 0.2, "tgrade": 0.1, "pnodes": 0.5}, seed=3)
    transformer = Transformer(schema)
    codes = transformer.codes(frame)
    for name in ("age", "horTh", "tgrade", "pnodes"):
        j = schema.names.index(name)
        assert (np.isnan(codes[:, j]) == frame[name].isna().to_numpy()).all()
    pd.testing.assert_frame_equal(transformer.from_codes(codes), frame)
    matrix = transformer.encode(frame)
    assert matrix.shape[1] == sum(c.width for c in schema.columns) + 4
    assert not np.isnan(matrix).any()
    assert (matrix[:, transformer.indicators["age"]] == frame["age"].isna()).all()
    pd.testing.assert_frame_equal(transformer.decode(matrix), frame)
