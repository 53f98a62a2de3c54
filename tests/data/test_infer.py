from __future__ import annotations

import pandas as pd
import pytest

from fedsynth.data.datasets import raw_dataset
from fedsynth.data.infer import infer_schema, round_outward
from fedsynth.data.schema import ColumnKind
from fedsynth.data.validation import validate_frame


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(30, 104, (20, 110)), (13.04, 44.8, (10, 50)), (0, 47, (0, 50)), (1, 2358, (0, 3000)), (0.01, 20.5, (0, 30))],
)
def test_bounds_are_rounded_strictly_outward(low: float, high: float, expected: tuple[float, float]) -> None:
    lower, upper = round_outward(low, high)
    assert (lower, upper) == expected
    assert lower <= low and upper > high


def test_infer_drafts_a_schema_the_data_passes() -> None:
    frame = raw_dataset("whas500")
    schema = infer_schema(frame, time="lenfol", event="fstat", name="whas")
    assert schema.time_column == "lenfol" and schema.event_column == "fstat"
    assert schema.column("gender").kind == ColumnKind.BINARY
    assert schema.column("age").kind == ColumnKind.INTEGER
    assert schema.column("bmi").kind == ColumnKind.CONTINUOUS
    validate_frame(frame, schema)


def test_infer_refuses_identifier_like_text() -> None:
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(100)], "t": range(100), "e": [0, 1] * 50})
    with pytest.raises(ValueError, match="identifier"):
        infer_schema(frame, time="t", event="e")


def test_infer_unknown_time_column() -> None:
    frame = pd.DataFrame({"x": [1, 2], "t": [1, 2], "e": [0, 1]})
    with pytest.raises(ValueError, match="--time column 'time' is not in the data"):
        infer_schema(frame, time="time", event="e")
