"""Sampling conditions: a small grammar, parsed and checked against the public schema.

Grammar (one condition per expression; several expressions may be joined by ``;`` or
`` and ``):

* equality: ``diabetes=1``, ``sex == F``
* set: ``stage in {2,3}`` (also ``[...]``)
* range: ``60<=age<=80``, ``age>=60``, ``age<80``, ``70 <= age``

The CLI and the HTTP service share it. Conditions on the same column are intersected.
A resolved condition lives in the model's space: allowed codes for discrete columns, an
interval of [0, 1] for numeric ones.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.data.schema import Column, ColumnKind, Schema
from fedsynth.data.transforms import to_unit
from fedsynth.errors import UserError


class ConditionError(UserError, ValueError):
    """A condition is malformed or impossible under the schema; says which and how to fix it."""

    def __init__(self, message: str, column: str | None = None) -> None:
        self.column = column
        super().__init__(message)


@dataclass(frozen=True)
class Condition:
    """A parsed condition on one column, values still as the user wrote them."""

    column: str
    values: tuple[str, ...] | None = None
    lower: float | None = None
    upper: float | None = None
    lower_strict: bool = False
    upper_strict: bool = False

    def describe(self) -> str:
        if self.values is not None:
            return f"{self.column} in {{{', '.join(self.values)}}}"
        low = "" if self.lower is None else f"{self.lower:g} {'<' if self.lower_strict else '<='} "
        high = "" if self.upper is None else f" {'<' if self.upper_strict else '<='} {self.upper:g}"
        return f"{low}{self.column}{high}"


@dataclass(frozen=True)
class ResolvedCondition:
    """A condition in model space: ``codes`` for discrete columns, [lower, upper] otherwise.

    ``lower_value``/``upper_value`` are the bounds on the original scale, used to enforce
    the condition exactly on returned rows.
    """

    column: Column
    index: int
    codes: tuple[int, ...] | None = None
    unit_lower: float = 0.0
    unit_upper: float = 1.0
    lower_value: float | None = None
    upper_value: float | None = None

    @property
    def is_fixed(self) -> bool:
        if self.codes is not None:
            return len(self.codes) == 1
        return self.lower_value == self.upper_value


_RANGE2 = re.compile(r"^(?P<lo>[^<>=]+?)\s*(?P<op1><=|<)\s*(?P<col>[^<>=]+?)\s*(?P<op2><=|<)\s*(?P<hi>[^<>=]+)$")
_IN = re.compile(r"^(?P<col>.+?)\s+in\s+(?P<vals>.+)$", re.IGNORECASE)
_BINARY_OP = re.compile(r"^(?P<left>[^<>=!]+?)\s*(?P<op><=|>=|==|=|<|>)\s*(?P<right>[^<>=]+)$")
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "==": "=="}
SYNTAX_HELP = "use e.g. 'diabetes=1', 'stage in {2,3}', '60<=age<=80' or 'age>=60'"


def _number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConditionError(f"condition on '{column}': '{text}' is not a number; {SYNTAX_HELP}", column) from None
    if not math.isfinite(value):
        raise ConditionError(f"condition on '{column}': bound must be finite, got '{text}'", column)
    return value


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_condition(expression: str) -> Condition:
    """Parse one condition expression (see the module docstring for the grammar)."""
    text = expression.strip()
    if not text:
        raise ConditionError(f"empty condition; {SYNTAX_HELP}")
    if match := _RANGE2.match(text):
        column = _unquote(match["col"])
        return Condition(
            column,
            lower=_number(match["lo"], column),
            upper=_number(match["hi"], column),
            lower_strict=match["op1"] == "<",
            upper_strict=match["op2"] == "<",
        )
    if match := _IN.match(text):
        column = _unquote(match["col"])
        inner = match["vals"].strip()
        if inner[:1] in "{[(" and inner[-1:] in "}])":
            inner = inner[1:-1]
        values = tuple(_unquote(v) for v in inner.split(",") if v.strip())
        if not values:
            raise ConditionError(f"condition on '{column}': the set is empty; list at least one value", column)
        return Condition(column, values=values)
    if match := _BINARY_OP.match(text):
        left, op, right = _unquote(match["left"]), match["op"], _unquote(match["right"])
        if _is_number(left) and not _is_number(right) and op not in ("=", "=="):
            left, right, op = right, left, _FLIP[op]
        column = left
        if op in ("=", "=="):
            return Condition(column, values=(right,))
        bound = _number(right, column)
        if op in (">=", ">"):
            return Condition(column, lower=bound, lower_strict=op == ">")
        return Condition(column, upper=bound, upper_strict=op == "<")
    raise ConditionError(f"cannot parse condition '{expression}'; {SYNTAX_HELP}")


def parse_conditions(expressions: list[str] | tuple[str, ...] | None) -> list[Condition]:
    """Parse several expressions; each may hold several conditions joined by ';' or ' and '."""
    parsed: list[Condition] = []
    for expression in expressions or ():
        for part in re.split(r";|\s+and\s+", expression, flags=re.IGNORECASE):
            if part.strip():
                parsed.append(parse_condition(part))
    return parsed


def _unknown_column(name: str, schema: Schema) -> ConditionError:
    close = difflib.get_close_matches(name, schema.names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConditionError(f"condition on unknown column '{name}'.{hint} Columns: {', '.join(schema.names)}", name)


def _discrete_codes(column: Column, condition: Condition) -> set[int]:
    labels = column.labels
    codes: set[int] = set()
    for raw in condition.values or ():
        value = raw
        if column.kind == ColumnKind.BINARY and column.categories is None:
            lowered = raw.lower()
            value = (
                "1"
                if lowered in ("1", "1.0", "true", "yes")
                else "0"
                if lowered in ("0", "0.0", "false", "no")
                else raw
            )
        if value not in labels:
            raise ConditionError(
                f"condition on '{column.name}': '{raw}' is not a declared value; allowed: {', '.join(labels)}",
                column.name,
            )
        codes.add(labels.index(value))
    if condition.values is None:
        raise ConditionError(
            f"condition on '{column.name}': a range does not apply to a {column.kind} column; "
            f"use '{column.name}=VALUE' or '{column.name} in {{...}}'",
            column.name,
        )
    return codes


def _numeric_interval(column: Column, condition: Condition) -> tuple[float, float]:
    if condition.values is not None:
        if len(condition.values) != 1:
            raise ConditionError(
                f"condition on '{column.name}': a set of values applies to discrete columns; for a numeric "
                f"column use a range such as '{column.lower:g}<={column.name}<={column.upper:g}'",
                column.name,
            )
        value = _number(condition.values[0], column.name)
        low, high = value, value
    else:
        low = column.lower if condition.lower is None else condition.lower
        high = column.upper if condition.upper is None else condition.upper
        if column.kind == ColumnKind.INTEGER:
            low = math.floor(low) + 1 if condition.lower_strict and float(low).is_integer() else math.ceil(low)
            high = math.ceil(high) - 1 if condition.upper_strict and float(high).is_integer() else math.floor(high)
        else:
            if condition.lower_strict:
                low = float(np.nextafter(low, math.inf))
            if condition.upper_strict:
                high = float(np.nextafter(high, -math.inf))
    assert column.lower is not None and column.upper is not None
    if column.kind == ColumnKind.INTEGER and condition.values is not None and not float(low).is_integer():
        raise ConditionError(f"condition on '{column.name}': the column is integer; '{low:g}' is not", column.name)
    if high < column.lower or low > column.upper:
        raise ConditionError(
            f"condition '{condition.describe()}' is outside the schema's bounds for '{column.name}' "
            f"[{column.lower:g}, {column.upper:g}]; choose values inside them",
            column.name,
        )
    if low > high:
        raise ConditionError(f"condition '{condition.describe()}' selects no value (lower > upper)", column.name)
    if condition.values is not None and not column.lower <= low <= column.upper:
        raise ConditionError(
            f"condition on '{column.name}': {low:g} is outside the schema's bounds "
            f"[{column.lower:g}, {column.upper:g}]",
            column.name,
        )
    return max(low, column.lower), min(high, column.upper)


def resolve_conditions(conditions: list[Condition], schema: Schema) -> list[ResolvedCondition]:
    """Check conditions against the schema and intersect those on the same column."""
    by_column: dict[str, list[Condition]] = {}
    for condition in conditions:
        if condition.column not in schema.names:
            raise _unknown_column(condition.column, schema)
        by_column.setdefault(condition.column, []).append(condition)
    resolved = []
    for name, group in by_column.items():
        column = schema.column(name)
        index = schema.names.index(name)
        if column.is_numeric:
            intervals = [_numeric_interval(column, c) for c in group]
            low, high = max(i[0] for i in intervals), min(i[1] for i in intervals)
            if low > high:
                raise ConditionError(
                    f"conditions on '{name}' contradict each other: {' and '.join(c.describe() for c in group)}", name
                )
            # An integer k is sampled as the interval [k - 0.5, k + 0.5] that rounds to it, so the
            # end points of a range get their full share of probability.
            pad = 0.5 if column.kind == ColumnKind.INTEGER and low < high else 0.0
            unit = to_unit(column, np.array([low - pad, high + pad]))
            resolved.append(ResolvedCondition(column, index, None, float(unit[0]), float(unit[1]), low, high))
        else:
            codes = set.intersection(*(_discrete_codes(column, c) for c in group))
            if not codes:
                raise ConditionError(
                    f"conditions on '{name}' contradict each other: {' and '.join(c.describe() for c in group)}", name
                )
            resolved.append(ResolvedCondition(column, index, tuple(sorted(codes))))
    return resolved


def satisfies(frame: pd.DataFrame, condition: ResolvedCondition) -> pd.Series:
    """Row-wise truth of one resolved condition on a canonical frame; a missing value (NaN, a
    missing = "model" column) satisfies no condition."""
    values = frame[condition.column.name]
    if condition.codes is not None:
        allowed = {condition.column.labels[c] for c in condition.codes}
        if condition.column.kind == ColumnKind.BINARY and condition.column.categories is None:
            allowed_codes = set(condition.codes)
            return values.isin(allowed_codes)
        return values.isin(allowed)
    return (values >= condition.lower_value) & (values <= condition.upper_value)


def resolve_any(conditions: ConditionsLike, schema: Schema) -> list[ResolvedCondition]:
    """Parse (if text) and check conditions against ``schema``; resolved ones pass through."""
    items = list(conditions or [])
    if items and all(isinstance(c, ResolvedCondition) for c in items):
        return items  # type: ignore[return-value]
    parsed = [c for c in items if isinstance(c, Condition)]
    parsed += parse_conditions([c for c in items if isinstance(c, str)])
    return resolve_conditions(parsed, schema)


# What a generator's sample() takes: condition texts, parsed conditions or resolved ones.
ConditionsLike = Sequence[str | Condition | ResolvedCondition] | None


def enforce_conditions(frame: pd.DataFrame, conditions: list[ResolvedCondition]) -> pd.DataFrame:
    """Make returned rows satisfy numeric conditions to the last bit, then verify all of them.

    Sampling already draws inside each condition; this removes rounding residue of the
    inverse transform (e.g. 25.499999 for 'bmi=25.5') and proves the promise holds.
    """
    for condition in conditions:
        name = condition.column.name
        if condition.codes is None:
            clipped = frame[name].clip(condition.lower_value, condition.upper_value)
            frame[name] = clipped.astype(frame[name].dtype)
    violations = [c.column.name for c in conditions if not satisfies(frame, c).all()]
    if violations:
        raise RuntimeError(f"internal error: sampled rows violate conditions on {violations}")
    return frame
