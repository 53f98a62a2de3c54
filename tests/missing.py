"""Test data with missing = "model" columns: a bundled frame with cells blanked at known rates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame


def modelled_schema(schema: Schema, columns: list[str]) -> Schema:
    """``schema`` with missing = "model" on ``columns``."""
    data = schema.to_dict()
    for entry in data["columns"]:
        if entry["name"] in columns:
            entry["missing"] = "model"
    return Schema.from_dict(data)


def blank(
    frame: pd.DataFrame,
    schema: Schema,
    shares: dict[str, float],
    seed: int = 0,
    when: pd.Series | None = None,
) -> tuple[pd.DataFrame, Schema]:
    """``frame`` with each column of ``shares`` missing at random in that share of the rows (only
    among rows where ``when`` holds, if given: missingness that depends on other columns), and the
    schema that models it; the frame is canonical (validated)."""
    rng = np.random.default_rng(seed)
    raw = frame.astype(object).copy()
    eligible = np.ones(len(frame), dtype=bool) if when is None else when.to_numpy(dtype=bool)
    for name, share in shares.items():
        raw.loc[eligible & (rng.random(len(frame)) < share), name] = None
    schema = modelled_schema(schema, list(shares))
    canonical, _ = validate_frame(raw, schema)
    return canonical, schema
