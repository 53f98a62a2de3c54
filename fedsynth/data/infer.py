"""Draft a schema from a local file, for a data custodian to review before it is shared.

Drafting *reads the private data*: the bounds and categories it proposes describe this
site's rows. That is why bounds are rounded outward to coarse values and why the draft's
header and the CLI say so: the custodian must review and, where needed, widen or coarsen
them before the schema becomes the public contract.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fedsynth.data.schema import Column, ColumnKind, ColumnRole, MissingPolicy, Schema, TransformKind

MAX_CATEGORIES = 50


def round_outward(low: float, high: float) -> tuple[float, float]:
    """Round [low, high] outward to a multiple of a coarse step (a tenth of the range's magnitude).

    The exact minimum and maximum are the most identifying values of a column; coarse
    public bounds hide them and keep the [0, 1] scaling stable across sites.
    """
    span = high - low
    magnitude = max(abs(low), abs(high), 1e-12)
    step = 10.0 ** math.floor(math.log10(span if span > 0 else magnitude))
    lower = math.floor(low / step) * step
    upper = math.ceil(high / step) * step
    if lower == low and low != 0:
        lower -= step
    if upper == high:
        upper += step
    if low >= 0 > lower:
        lower = 0.0
    return float(_tidy(lower)), float(_tidy(upper))


def _tidy(value: float) -> float:
    return float(f"{value:.10g}")


def _numeric(raw: pd.Series) -> pd.Series | None:
    numbers = pd.to_numeric(raw.dropna(), errors="coerce")
    return None if numbers.isna().any() else numbers


def _infer_column(name: str, raw: pd.Series, role: ColumnRole) -> Column:
    missing = MissingPolicy.DROP_ROW if raw.isna().any() else MissingPolicy.REJECT
    present = raw.dropna()
    if present.empty:
        raise ValueError(f"column '{name}' is empty; drop it from the file or fill it")
    numbers = _numeric(present)
    distinct = sorted(present.astype(str).str.strip().unique())
    if role == ColumnRole.EVENT:
        return Column(name=name, kind=ColumnKind.BINARY, role=role, missing=missing)
    if numbers is not None and role == ColumnRole.FEATURE and set(numbers.unique()) <= {0, 1}:
        return Column(name=name, kind=ColumnKind.BINARY, role=role, missing=missing)
    if numbers is None or role == ColumnRole.FEATURE and numbers.nunique() <= 2:
        if len(distinct) > MAX_CATEGORIES:
            raise ValueError(
                f"column '{name}' has {len(distinct)} distinct text values: it looks like free text or an "
                f"identifier; drop it from the file (identifiers must never be modelled)"
            )
        kind = ColumnKind.BINARY if len(distinct) == 2 else ColumnKind.CATEGORICAL
        if len(distinct) < 2:
            raise ValueError(f"column '{name}' has a single value '{distinct[0]}'; drop it from the file")
        return Column(name=name, kind=kind, role=role, categories=tuple(distinct), missing=missing)
    values = numbers.to_numpy(dtype=np.float64)
    integral = bool(np.all(values == np.round(values)))
    lower, upper = round_outward(float(values.min()), float(values.max()))
    transform, offset = TransformKind.IDENTITY, 0.0
    skew = float(pd.Series(values).skew()) if len(values) > 2 else 0.0
    if values.min() >= 0 and skew > 1.0:
        transform = TransformKind.LOG
        offset = 0.0 if lower > 0 else 1.0
    return Column(
        name=name,
        kind=ColumnKind.INTEGER if integral else ColumnKind.CONTINUOUS,
        role=role,
        lower=lower,
        upper=upper,
        transform=transform,
        offset=offset,
        missing=missing,
    )


def infer_schema(frame: pd.DataFrame, time: str, event: str, name: str = "dataset") -> Schema:
    """Draft a schema for ``frame``; ``time`` and ``event`` name the survival columns."""
    for role, column in (("time", time), ("event", event)):
        if column not in frame.columns:
            raise ValueError(
                f"--{role} column '{column}' is not in the data; columns: {', '.join(map(str, frame.columns))}"
            )
    columns = []
    for column_name in frame.columns:
        role = (
            ColumnRole.TIME if column_name == time else ColumnRole.EVENT if column_name == event else ColumnRole.FEATURE
        )
        columns.append(_infer_column(str(column_name), frame[column_name], role))
    return Schema(
        name=name, description=f"Draft inferred from {len(frame)} rows; review before sharing.", columns=tuple(columns)
    )


def draft_header(source: str, n_rows: int) -> str:
    return (
        f"# DRAFT schema inferred by `fedsynth schema infer` from {source} ({n_rows} rows).\n"
        "# It READ THE PRIVATE DATA: bounds and categories below describe this file.\n"
        "# Review every column before sharing: widen or coarsen bounds, check categories, kinds,\n"
        "# transforms and missing-value policies. Once shared, this schema is public.\n\n"
    )
