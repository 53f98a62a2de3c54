"""Conditional augmentation of under-represented subgroups, for stratified calibration (seed 000).

Seed 000's use case: a Cox model fitted on a cohort where a clinical subgroup is rare predicts
that subgroup's risk poorly; adding synthetic patients *of that subgroup*, drawn conditionally
from the generator, may improve its calibration without retraining the generator. Here the
conditional draws come from the model alone (``MCM.sample`` with ``column=level``): they are
post-processing of the DP global model, never copies of the site's rows (the paper's
copy-and-mask synthesis is not used).

Which subgroups: each level of each binary covariate whose share of the real training rows is
below ``max_share``. Each is topped up with ``ratio`` x its real size of synthetic rows of that
level. Whether it helps is measured, not assumed: stratified calibration of the Cox model
fitted on real rows only and on real + conditional rows, on the same real holdout.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from fedsynth.data.schema import ColumnKind, ColumnRole, Schema

DEFAULT_MAX_SHARE = 0.3
DEFAULT_RATIO = 1.0

# (n, conditions, seed) -> n synthetic rows satisfying the conditions (MCM.sample's signature).
ConditionalSampler = Callable[[int, list[str], int], pd.DataFrame]


def _condition_value(level: object) -> str:
    text = str(level)
    return text if text.replace(".", "", 1).isdigit() else f'"{text}"'


def under_represented(train: pd.DataFrame, schema: Schema, max_share: float = DEFAULT_MAX_SHARE) -> dict[str, int]:
    """``{"column=level": real rows}`` for every binary-covariate level rarer than ``max_share``."""
    groups: dict[str, int] = {}
    for column in schema.columns:
        if column.role is not ColumnRole.FEATURE or column.kind is not ColumnKind.BINARY:
            continue
        counts = train[column.name].value_counts()
        for level, count in counts.items():
            if 0 < count < max_share * len(train):
                groups[f"{column.name}={_condition_value(level)}"] = int(count)
    return groups


def conditional_augmentation(
    train: pd.DataFrame,
    schema: Schema,
    sample: ConditionalSampler,
    max_share: float = DEFAULT_MAX_SHARE,
    ratio: float = DEFAULT_RATIO,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Synthetic rows for every under-represented subgroup; returns (rows, rows drawn per subgroup)."""
    drawn: dict[str, int] = {}
    parts = []
    for index, (condition, count) in enumerate(under_represented(train, schema, max_share).items()):
        n = max(1, round(ratio * count))
        parts.append(sample(n, [condition], seed + index))
        drawn[condition] = n
    rows = pd.concat(parts, ignore_index=True) if parts else train.iloc[:0].copy()
    return rows, drawn
