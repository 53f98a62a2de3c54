from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.schema import Schema
from fedsynth.data.transforms import Transformer


@pytest.fixture
def small_schema() -> Schema:
    return Schema.from_dict(
        {
            "name": "small",
            "columns": [
                {"name": "x", "kind": "binary"},
                {"name": "age", "kind": "integer", "lower": 0, "upper": 100},
                {"name": "grp", "kind": "categorical", "categories": ["a", "b", "c"]},
                {"name": "time", "kind": "continuous", "role": "time", "lower": 0, "upper": 10},
                {"name": "event", "kind": "binary", "role": "event"},
            ],
        }
    )


def uniform_rows(schema: Schema, m: int, seed: int) -> pd.DataFrame:
    """Rows uniform over the public bounds and levels: a deliberately wrong model."""
    rng = np.random.default_rng(seed)
    codes = np.column_stack(
        [rng.uniform(size=m) if c.is_numeric else rng.integers(0, len(c.labels), m) for c in schema.columns]
    )
    return Transformer(schema).from_codes(codes)
