"""Tables restricted to the cells that sampling conditions allow (post-processing of DP tables).

An unconditional table says something exact about a conditioned population only if it crosses
*every* conditioned column: restricted to the allowed cells (a numeric bin cut by a range keeps
the share it overlaps, uniform within the bin) it is, up to a constant, the conditional
distribution of its other columns.
"""

from __future__ import annotations

import math

import numpy as np

from fedsynth.data.conditions import ResolvedCondition
from fedsynth.marginals.tables import MarginalSpec, TableSpec


def source_table(spec: MarginalSpec, columns: tuple[str, ...], conditioned: set[str]) -> TableSpec | None:
    """The smallest table holding ``columns`` and every conditioned column, or None."""
    fits = [t for t in spec.tables if {*columns, *conditioned} <= set(t.columns)]
    return min(fits, key=lambda t: math.prod(t.shape)) if fits else None


def restricted(
    table: TableSpec,
    tables: dict[str, np.ndarray],
    spec: MarginalSpec,
    conditions: list[ResolvedCondition],
    keep: tuple[str, ...],
) -> np.ndarray:
    """``table`` times the allowed shares, summed onto the ``keep`` columns (in ``keep``'s order)."""
    weighted = tables[table.name] * _allowed(table, spec, conditions).reshape(table.shape)
    axes = tuple(i for i, c in enumerate(table.columns) if c not in keep)
    summed = weighted.sum(axis=axes) if axes else weighted
    order = [c for c in table.columns if c in keep]
    return np.transpose(summed, [order.index(c) for c in keep])


def _allowed(table: TableSpec, spec: MarginalSpec, conditions: list[ResolvedCondition]) -> np.ndarray:
    """Per flat cell, the share of it that the conditions allow (1 without conditions)."""
    share = np.ones(table.shape, dtype=np.float64)
    for condition in conditions:
        name = condition.column.name
        if name not in table.columns:
            continue
        axis = table.columns.index(name)
        size = table.shape[axis]
        if condition.codes is not None:
            along = np.isin(np.arange(size), condition.codes).astype(np.float64)
        else:
            along = _overlap(spec.bin(name).unit_edges(), condition.unit_lower, condition.unit_upper)
            # A missing value satisfies no condition: the missing cell (if any) is not allowed.
            along = np.concatenate([along, np.zeros(size - len(along))])
        share *= along.reshape([size if i == axis else 1 for i in range(len(table.shape))])
    return share.reshape(-1)


def _overlap(edges: np.ndarray, low: float, high: float) -> np.ndarray:
    """Share of each bin inside [low, high] (uniform within a bin); a point gets its bin whole."""
    width = np.diff(edges)
    inside = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0.0, None) / width
    if inside.sum() > 0.0:
        return inside
    point = np.zeros_like(width)
    point[min(int(math.floor(low * len(width))), len(width) - 1)] = 1.0
    return point
