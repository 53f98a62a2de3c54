"""The public schema: the one contract every site and the server share.

A schema declares each column's kind, role, public bounds, categories, transform and
missing-value policy. It is *declared by people*, never silently fitted on private data:
everything derived from it (transforms, sampling bounds, condition checks) is therefore
public information and costs no privacy budget.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedsynth.config_files import read_toml
from fedsynth.errors import UserError


class SchemaError(UserError, ValueError):
    """A schema file or object is malformed; the message names the field and the fix."""


class ColumnKind(StrEnum):
    CONTINUOUS = "continuous"
    INTEGER = "integer"
    BINARY = "binary"
    CATEGORICAL = "categorical"


class ColumnRole(StrEnum):
    FEATURE = "feature"
    TIME = "time"
    EVENT = "event"


class TransformKind(StrEnum):
    IDENTITY = "identity"
    LOG = "log"
    BOXCOX = "boxcox"


class MissingPolicy(StrEnum):
    REJECT = "reject"
    DROP_ROW = "drop_row"
    FILL = "fill"
    MODEL = "model"  # missing cells stay missing: the generator learns and samples them (see docs)


class Column(BaseModel):
    """One declared column.

    Numeric columns (continuous, integer) need public ``lower``/``upper`` bounds: they fix
    the [0, 1] scaling without looking at private data. Binary columns hold 0/1, or two
    declared labels in ``categories`` (the first maps to 0). Categorical columns list every
    category. ``offset`` is added before log / Box-Cox so that zeros can be transformed.
    ``step`` (numeric, optional) is the public resolution values are recorded at, e.g. 10 for a
    Karnofsky score or 0.1 for creatinine in mg/dL: sampled values are put on the grid
    ``lower + k * step``, so a synthetic column has the real one's atoms, not values between them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    name: str = Field(min_length=1)
    kind: ColumnKind
    role: ColumnRole = ColumnRole.FEATURE
    lower: float | None = None
    upper: float | None = None
    categories: tuple[str, ...] | None = None
    transform: TransformKind = TransformKind.IDENTITY
    boxcox_lambda: float | None = None
    offset: float = 0.0
    step: float | None = None
    missing: MissingPolicy = MissingPolicy.REJECT
    fill_value: float | str | None = None
    description: str = ""

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_as_strings(cls, value: Any) -> Any:
        if value is None:
            return None
        return tuple(str(v) for v in value)

    @model_validator(mode="after")
    def _check_consistency(self) -> Column:
        where = f"column '{self.name}'"
        numeric = self.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER)
        if numeric:
            if self.lower is None or self.upper is None:
                raise ValueError(f"{where}: numeric columns need public 'lower' and 'upper' bounds")
            if not (math.isfinite(self.lower) and math.isfinite(self.upper)) or self.lower >= self.upper:
                raise ValueError(f"{where}: need finite lower < upper, got [{self.lower}, {self.upper}]")
            if self.categories is not None:
                raise ValueError(f"{where}: 'categories' is only for binary/categorical columns; remove it")
            if self.step is not None and not (math.isfinite(self.step) and 0 < self.step <= self.upper - self.lower):
                raise ValueError(
                    f"{where}: 'step' must be a positive number no larger than upper - lower "
                    f"({self.upper - self.lower:g}), got {self.step}"
                )
            if self.step is not None and self.kind == ColumnKind.INTEGER and not float(self.step).is_integer():
                raise ValueError(f"{where}: an integer column's 'step' must be a whole number, got {self.step}")
        else:
            if self.step is not None:
                raise ValueError(f"{where}: 'step' applies to numeric columns only; remove it")
            if self.transform != TransformKind.IDENTITY:
                raise ValueError(f"{where}: transform '{self.transform}' applies to numeric columns only")
            if self.lower is not None or self.upper is not None:
                raise ValueError(f"{where}: bounds apply to numeric columns only; remove lower/upper")
        if self.kind == ColumnKind.CATEGORICAL and (not self.categories or len(self.categories) < 2):
            raise ValueError(f"{where}: categorical columns must list at least 2 'categories'")
        if self.kind == ColumnKind.BINARY and self.categories is not None and len(self.categories) != 2:
            raise ValueError(f"{where}: binary 'categories' must be exactly two labels (first maps to 0)")
        if self.categories is not None and len(set(self.categories)) != len(self.categories):
            raise ValueError(f"{where}: 'categories' has duplicates")
        if self.transform == TransformKind.BOXCOX and self.boxcox_lambda is None:
            raise ValueError(f"{where}: transform 'boxcox' needs a declared 'boxcox_lambda'")
        if self.transform != TransformKind.BOXCOX and self.boxcox_lambda is not None:
            raise ValueError(f"{where}: 'boxcox_lambda' is set but transform is '{self.transform}'")
        if self.transform in (TransformKind.LOG, TransformKind.BOXCOX) and self.lower + self.offset <= 0:
            raise ValueError(
                f"{where}: {self.transform} needs lower + offset > 0 (lower={self.lower}, "
                f"offset={self.offset}); set 'offset' so that every value is positive"
            )
        if self.role == ColumnRole.TIME and not numeric:
            raise ValueError(f"{where}: the time column must be continuous or integer")
        if self.role == ColumnRole.TIME and self.lower < 0:
            # The model samples within the declared bounds: a negative lower bound lets it
            # release negative survival times.
            raise ValueError(
                f"{where}: the time column's lower bound is {self.lower:g}, but survival times cannot be "
                "negative; set lower = 0 (or more) and correct any negative times in the data"
            )
        if self.role == ColumnRole.EVENT and self.kind != ColumnKind.BINARY:
            raise ValueError(f"{where}: the event column must be binary (0 = censored, 1 = event)")
        if self.missing == MissingPolicy.MODEL and self.role != ColumnRole.FEATURE:
            # The survival outcome must be observed for every row: time and event are what every
            # table, head and Cox model reads, and a missing one has no meaning for censoring.
            raise ValueError(
                f"{where}: missing = 'model' is for covariates only, not the {self.role} column; use "
                "'reject' or 'drop_row' for it"
            )
        if self.missing == MissingPolicy.FILL and self.fill_value is None:
            raise ValueError(f"{where}: missing = 'fill' needs a declared 'fill_value'")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER)

    @property
    def models_missing(self) -> bool:
        """Whether missing values are data here (kept as NaN, learnt and sampled by the generator)."""
        return self.missing == MissingPolicy.MODEL

    @property
    def labels(self) -> tuple[str, ...]:
        """The value labels of a discrete column, in code order (binary defaults to '0', '1')."""
        if self.kind == ColumnKind.BINARY:
            return self.categories or ("0", "1")
        if self.kind == ColumnKind.CATEGORICAL:
            assert self.categories is not None
            return self.categories
        raise TypeError(f"column '{self.name}' is numeric and has no labels")

    @property
    def width(self) -> int:
        """Number of [0, 1] model inputs this column occupies (one-hot for categoricals)."""
        return len(self.labels) if self.kind == ColumnKind.CATEGORICAL else 1


class Schema(BaseModel):
    """An ordered set of declared columns with exactly one time and one event column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "dataset"
    description: str = ""
    columns: tuple[Column, ...]

    @model_validator(mode="after")
    def _check_columns(self) -> Schema:
        names = [c.name for c in self.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"column names must be unique; duplicated: {duplicated}")
        for role in (ColumnRole.TIME, ColumnRole.EVENT):
            found = [c.name for c in self.columns if c.role == role]
            if len(found) != 1:
                raise ValueError(f"the schema needs exactly one column with role = '{role}', found {found or 'none'}")
        if len(self.columns) < 3:
            raise ValueError("the schema needs at least one feature besides time and event")
        return self

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"unknown column '{name}'; the schema declares: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def time_column(self) -> str:
        return next(c.name for c in self.columns if c.role == ColumnRole.TIME)

    @property
    def event_column(self) -> str:
        return next(c.name for c in self.columns if c.role == ColumnRole.EVENT)

    @property
    def covariates(self) -> list[str]:
        return [c.name for c in self.columns if c.role == ColumnRole.FEATURE]

    @property
    def modelled_missing(self) -> list[Column]:
        """The columns with missing = 'model', in schema order (each gets a missingness indicator)."""
        return [c for c in self.columns if c.models_missing]

    # -- TOML ---------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "schema") -> Schema:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SchemaError(_format_validation_error(exc, data, source)) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Schema:
        return cls.from_dict(read_toml(path, SchemaError, "schema file"), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _format_validation_error(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    """Name the column (not just its index) so that a custodian finds the line to fix."""
    lines = [f"{source}: the schema is invalid ({exc.error_count()} problem(s)):"]
    columns = data.get("columns", []) if isinstance(data, dict) else []
    for error in exc.errors():
        loc = list(error["loc"])
        if len(loc) >= 2 and loc[0] == "columns" and isinstance(loc[1], int) and loc[1] < len(columns):
            name = columns[loc[1]].get("name", f"#{loc[1]}") if isinstance(columns[loc[1]], dict) else loc[1]
            loc = [f"columns[{name}]"] + [str(part) for part in loc[2:]]
        field = ".".join(str(part) for part in loc) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  - {field}: {message}")
    return "\n".join(lines)
