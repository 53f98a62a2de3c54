"""Exact, invertible maps between declared columns and the model's [0, 1] space.

Every parameter comes from the public schema (bounds, Box-Cox lambda, offset), so the
transform leaks nothing about any site's rows. Numeric columns go through
Box-Cox (log when lambda = 0) then min-max scaling by the transformed public bounds;
binary columns are their 0/1 code; categorical columns are one-hot. The inverse rounds
integer columns (and columns with a declared ``step``, to its grid) and clips to the bounds, so
``decode(encode(df))`` reproduces ``df`` recorded at that resolution.

Columns with missing = "model" hold NaN where a value is missing: their codes are NaN there
(the model layer turns that into an indicator it learns), and the [0, 1] matrix gets one 0/1
indicator column per such column after all the others, with the value's own entries at 0.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.data.schema import Column, ColumnKind, Schema, TransformKind


def _lambda(column: Column) -> float | None:
    """Box-Cox lambda of a numeric column, or None for identity."""
    if column.transform == TransformKind.IDENTITY:
        return None
    if column.transform == TransformKind.LOG:
        return 0.0
    assert column.boxcox_lambda is not None
    return float(column.boxcox_lambda)


def _forward(column: Column, x: np.ndarray) -> np.ndarray:
    lam = _lambda(column)
    if lam is None:
        return x
    shifted = x + column.offset
    if lam == 0.0:
        return np.log(shifted)
    # (x**lam - 1) / lam = log(x) * expm1(t) / t with t = lam * log(x): exact for lambda near 0,
    # where the naive form cancels, and for subnormal lambda, where t underflows to 0.
    log_x = np.log(shifted)
    return log_x * _ratio(np.expm1, lam * log_x)


def _backward(column: Column, y: np.ndarray) -> np.ndarray:
    lam = _lambda(column)
    if lam is None:
        return y
    if lam == 0.0:
        return np.exp(y) - column.offset
    return np.exp(y * _ratio(np.log1p, np.maximum(lam * y, -1.0))) - column.offset


def _ratio(func, t: np.ndarray) -> np.ndarray:
    """func(t) / t with its limit 1 at t = 0 (for expm1 and log1p)."""
    t = np.asarray(t, dtype=np.float64)
    safe = np.where(t == 0.0, 1.0, t)
    with np.errstate(divide="ignore"):
        return np.where(t == 0.0, 1.0, func(safe) / safe)


def to_unit(column: Column, values: np.ndarray | float) -> np.ndarray:
    """Map values on the column's original scale to [0, 1] (numeric columns only)."""
    x = np.clip(np.asarray(values, dtype=np.float64), column.lower, column.upper)
    lo, hi = _forward(column, np.array([column.lower, column.upper], dtype=np.float64))
    return np.clip((_forward(column, x) - lo) / (hi - lo), 0.0, 1.0)


def from_unit(column: Column, u: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`to_unit`: rounds integer columns, clips to the public bounds."""
    lo, hi = _forward(column, np.array([column.lower, column.upper], dtype=np.float64))
    y = lo + np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0) * (hi - lo)
    x = _backward(column, y)
    if column.step is not None:
        x = on_grid(x, float(column.lower), column.step)
    elif column.kind == ColumnKind.INTEGER:
        x = np.round(x)
    return np.clip(x, column.lower, column.upper)


def on_grid(values: np.ndarray, lower: float, step: float) -> np.ndarray:
    """Values rounded to the nearest ``lower + k * step``, as the decimal a recorded value parses to:
    ``11 * 0.1`` is 1.1000000000000001, not the 1.1 read from a file, and would sit beside that atom."""
    decimals = max(_decimals(lower), _decimals(step))
    return np.round(lower + np.round((values - lower) / step) * step, decimals)


def _decimals(number: float) -> int:
    """Digits after the point in the shortest decimal of ``number`` (0.1 -> 1, 10.0 -> 0)."""
    exponent = decimal.Decimal(repr(float(number))).normalize().as_tuple().exponent
    return max(0, -int(exponent)) if isinstance(exponent, int) else 0


@dataclass(frozen=True)
class ColumnSlot:
    """Where one column lives in the encoded matrix."""

    column: Column
    start: int
    stop: int


class Transformer:
    """Encode canonical DataFrames (see :mod:`fedsynth.data.validation`) to [0, 1] and back."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        slots: list[ColumnSlot] = []
        start = 0
        for column in schema.columns:
            slots.append(ColumnSlot(column, start, start + column.width))
            start += column.width
        self.slots: tuple[ColumnSlot, ...] = tuple(slots)
        # One missingness indicator per missing = "model" column, after every value slot.
        self.indicators: dict[str, int] = {}
        for column in schema.modelled_missing:
            self.indicators[column.name] = start
            start += 1
        self.width = start

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Return an (n, width) float64 matrix in [0, 1]; ``frame`` must be validated first.

        A missing value (missing = "model") encodes as its indicator at 1 and its own entries at 0."""
        out = np.zeros((len(frame), self.width), dtype=np.float64)
        for slot in self.slots:
            column = slot.column
            values = frame[column.name]
            missing = values.isna().to_numpy() if column.models_missing else np.zeros(len(frame), dtype=bool)
            if column.models_missing:
                out[:, self.indicators[column.name]] = missing
            present = np.flatnonzero(~missing)
            values = values.iloc[present]
            if column.is_numeric:
                out[present, slot.start] = to_unit(column, values.to_numpy(dtype=np.float64))
            else:
                codes = encode_labels(column, values)
                if column.kind == ColumnKind.BINARY:
                    out[present, slot.start] = codes
                else:
                    out[present, slot.start + codes] = 1.0
        return out

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        """Inverse of :meth:`encode`; categoricals take the arg-max of their one-hot block."""
        codes = np.zeros((len(matrix), len(self.slots)), dtype=np.float64)
        for j, slot in enumerate(self.slots):
            column = slot.column
            block = matrix[:, slot.start : slot.stop]
            if column.is_numeric:
                codes[:, j] = block[:, 0]
            elif column.kind == ColumnKind.BINARY:
                codes[:, j] = block[:, 0] >= 0.5
            else:
                codes[:, j] = block.argmax(axis=1)
            if column.models_missing:
                codes[matrix[:, self.indicators[column.name]] >= 0.5, j] = np.nan
        return self.from_codes(codes)

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """Per-column targets for the model: unit value (numeric) or integer code (discrete);
        NaN where a missing = "model" column's value is missing."""
        out = np.full((len(frame), len(self.slots)), np.nan, dtype=np.float64)
        for j, slot in enumerate(self.slots):
            column = slot.column
            values = frame[column.name]
            present = np.flatnonzero(values.notna().to_numpy()) if column.models_missing else slice(None)
            values = values.iloc[present]
            if column.is_numeric:
                out[present, j] = to_unit(column, values.to_numpy(dtype=np.float64))
            else:
                out[present, j] = encode_labels(column, values)
        return out

    def from_codes(self, codes: np.ndarray) -> pd.DataFrame:
        """Inverse of :meth:`codes` (NaN codes of a missing = "model" column decode to NaN)."""
        data: dict[str, object] = {}
        for j, slot in enumerate(self.slots):
            column = slot.column
            if column.is_numeric:
                data[column.name] = _numeric_output(column, from_unit(column, codes[:, j]))
            elif column.models_missing:
                missing = np.isnan(codes[:, j])
                labels = decode_labels(column, np.where(missing, 0, codes[:, j]).astype(np.int64))
                kind = object if labels.dtype == object else np.float64
                data[column.name] = np.where(missing, np.nan, labels.astype(kind))
            else:
                data[column.name] = decode_labels(column, codes[:, j].astype(np.int64))
        return pd.DataFrame(data, columns=self.schema.names)


def _numeric_output(column: Column, values: np.ndarray) -> np.ndarray:
    # A missing = "model" integer column stays float64: NaN marks its missing values.
    return values.astype(np.int64) if column.kind == ColumnKind.INTEGER and not column.models_missing else values


def encode_labels(column: Column, values: pd.Series) -> np.ndarray:
    """Integer codes of a canonical discrete column (binary without labels is already 0/1)."""
    if column.kind == ColumnKind.BINARY and column.categories is None:
        return values.to_numpy(dtype=np.int64)
    lookup = {label: code for code, label in enumerate(column.labels)}
    return values.map(lookup).to_numpy(dtype=np.int64)


def decode_labels(column: Column, codes: np.ndarray) -> np.ndarray:
    """Canonical values for integer codes: 0/1 for unlabeled binaries, else the label strings."""
    if column.kind == ColumnKind.BINARY and column.categories is None:
        return codes.astype(np.int64)
    return np.asarray(column.labels, dtype=object)[codes]
