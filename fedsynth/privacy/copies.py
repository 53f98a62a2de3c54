"""Exact copies: synthetic rows identical, in every column, to some training row."""

from __future__ import annotations

import pandas as pd


def exact_copy_count(synthetic: pd.DataFrame, train: pd.DataFrame) -> int:
    """Number of synthetic rows that equal a training row in every column."""
    columns = list(train.columns)
    left = synthetic[columns].astype(str)
    right = train[columns].astype(str).drop_duplicates()
    return int(left.merge(right, on=columns, how="inner").shape[0])
