"""Check a site's DataFrame against the public schema and bring it to canonical form.

Validation reports *every* problem in one go (column, first offending rows and values, and
the fix), because a data custodian fixing a hospital extract one error per run would give
up. It never writes anything: callers write only after it returned.

Canonical form: continuous columns float64, integer columns int64, unlabeled binary
columns int64 0/1, labeled binary and categorical columns their label strings. A column with
missing = "model" keeps its missing cells as NaN, so its integer or unlabeled binary values are
float64 (a whole number or 0.0/1.0 where present).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedsynth.data.schema import Column, ColumnKind, MissingPolicy, Schema
from fedsynth.errors import UserError

MAX_SHOWN = 5
# Cell texts that mean "no value" (what spreadsheets and R/pandas exports write for missing).
MISSING_TOKENS = frozenset({"", "NA", "NaN", "nan", "None", "null"})
_TRUE = {"1", "1.0", "true", "t", "yes", "y"}
_FALSE = {"0", "0.0", "false", "f", "no", "n"}


def missing_cells(raw: pd.Series) -> pd.Series:
    """Which cells of a raw column are missing: empty, NaN or one of ``MISSING_TOKENS``."""
    return raw.isna() | raw.astype(str).str.strip().isin(MISSING_TOKENS)


@dataclass(frozen=True)
class Problem:
    """One validation problem, phrased for the person who has to fix the data."""

    column: str
    message: str
    fix: str
    rows: tuple[int, ...] = ()
    values: tuple[str, ...] = ()
    count: int = 0

    def __str__(self) -> str:
        text = f"column '{self.column}': {self.message}"
        if self.count:
            shown = ", ".join(f"row {r}: {v!r}" for r, v in zip(self.rows, self.values, strict=False))
            more = f" (+{self.count - len(self.rows)} more)" if self.count > len(self.rows) else ""
            text += f" [{self.count} row(s); {shown}{more}]"
        return f"{text}\n      fix: {self.fix}"


class DataValidationError(UserError, ValueError):
    """The data does not match the schema; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem], source: str = "data") -> None:
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} does not match the schema ({len(problems)} problem(s)):\n{body}")


@dataclass
class ValidationReport:
    """What validation did besides checking: rows dropped by policy, columns ignored."""

    n_input_rows: int
    dropped_rows: dict[str, int] = field(default_factory=dict)
    filled_values: dict[str, int] = field(default_factory=dict)
    kept_missing: dict[str, int] = field(default_factory=dict)  # missing = "model": cells kept as NaN
    ignored_columns: list[str] = field(default_factory=list)


def _problem(column: str, mask: pd.Series, raw: pd.Series, message: str, fix: str) -> Problem:
    index = mask[mask].index
    # Report 1-based data rows as a spreadsheet or CSV viewer shows them (header is line 1).
    positions = [int(raw.index.get_loc(i)) + 1 for i in index[:MAX_SHOWN]]
    values = tuple(str(raw.loc[i]) for i in index[:MAX_SHOWN])
    return Problem(column, message, fix, tuple(positions), values, int(mask.sum()))


def _as_label(value: object) -> str:
    """Label text of a raw cell: 2.0 read from CSV is the category '2'."""
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _check_numeric(column: Column, raw: pd.Series, present: pd.Series, problems: list[Problem]) -> pd.Series:
    numbers = pd.to_numeric(raw.where(present), errors="coerce")
    not_numeric = present & numbers.isna()
    if not_numeric.any():
        problems.append(
            _problem(
                column.name,
                not_numeric,
                raw,
                "values are not numbers",
                "replace the text with numbers (or empty cells, if the missing policy allows)",
            )
        )
    not_finite = present & ~not_numeric & ~np.isfinite(numbers)
    if not_finite.any():
        problems.append(
            _problem(
                column.name,
                not_finite,
                raw,
                "values are infinite, not numbers",
                "replace them with the real values (or empty cells, if the missing policy allows)",
            )
        )
    ok = present & ~not_numeric & ~not_finite
    if column.kind == ColumnKind.INTEGER:
        fractional = ok & (numbers != np.round(numbers))
        if fractional.any():
            problems.append(
                _problem(
                    column.name,
                    fractional,
                    raw,
                    "values are not whole numbers but the column is 'integer'",
                    "round the values, or declare the column kind = 'continuous'",
                )
            )
    out_of_bounds = ok & ((numbers < column.lower) | (numbers > column.upper))
    if out_of_bounds.any():
        problems.append(
            _problem(
                column.name,
                out_of_bounds,
                raw,
                f"values outside the declared public bounds [{column.lower:g}, {column.upper:g}]",
                "correct the values, or widen 'lower'/'upper' in the schema (bounds are public: "
                "round them outward rather than using the exact data range)",
            )
        )
    return numbers


def _check_discrete(column: Column, raw: pd.Series, present: pd.Series, problems: list[Problem]) -> pd.Series:
    # object dtype: a column with no present value (0 rows, or every cell empty) must still take .str
    labels = raw.where(present).map(_as_label, na_action="ignore").astype(object)
    if column.kind == ColumnKind.BINARY and column.categories is None:
        lowered = labels.str.lower()
        codes = pd.Series(np.where(lowered.isin(_TRUE), 1, np.where(lowered.isin(_FALSE), 0, -1)), index=raw.index)
        bad = present & (codes < 0)
        if bad.any():
            problems.append(
                _problem(
                    column.name,
                    bad,
                    raw,
                    "values are not binary (0/1, true/false)",
                    "recode to 0/1, or declare the two labels in 'categories' (the first maps to 0)",
                )
            )
        return codes
    allowed = set(column.labels)
    bad = present & ~labels.isin(allowed)
    if bad.any():
        problems.append(
            _problem(
                column.name,
                bad,
                raw,
                f"unknown categories (declared: {', '.join(column.labels)})",
                "recode the values to a declared category, or add the category to the schema",
            )
        )
    return labels


def validate_frame(frame: pd.DataFrame, schema: Schema, source: str = "data") -> tuple[pd.DataFrame, ValidationReport]:
    """Validate ``frame`` against ``schema``; return the canonical frame and what was done.

    Raises :class:`DataValidationError` listing every problem found.
    """
    problems: list[Problem] = []
    report = ValidationReport(n_input_rows=len(frame))
    frame = frame.reset_index(drop=True)
    missing_columns = [c.name for c in schema.columns if c.name not in frame.columns]
    for name in missing_columns:
        near = [c for c in frame.columns if str(c).strip().lower() == name.lower()]
        hint = f" (found '{near[0]}': rename it to '{name}')" if near else ""
        problems.append(
            Problem(
                name,
                f"column is missing from the data{hint}",
                f"add a column named '{name}' or remove it from the schema",
            )
        )
    report.ignored_columns = [str(c) for c in frame.columns if c not in set(schema.names)]
    if len(frame) == 0:
        problems.append(Problem("(all)", "the data has no rows", "provide at least one row"))

    drop = pd.Series(False, index=frame.index)
    parsed: dict[str, pd.Series] = {}
    for column in schema.columns:
        if column.name in missing_columns:
            continue
        raw = frame[column.name]
        missing = missing_cells(raw)
        if missing.any():
            if column.missing == MissingPolicy.REJECT:
                problems.append(
                    _problem(
                        column.name,
                        missing,
                        raw.astype(object).where(~missing, "<missing>"),
                        "missing values, and the schema's missing policy is 'reject'",
                        "fill the values, or set missing = 'drop_row' / 'fill' (with fill_value) / "
                        "'model' (a covariate whose missingness the generator learns) for this column in the schema",
                    )
                )
            elif column.missing == MissingPolicy.MODEL:
                report.kept_missing[column.name] = int(missing.sum())
            elif column.missing == MissingPolicy.DROP_ROW:
                report.dropped_rows[column.name] = int(missing.sum())
                drop |= missing
            else:
                report.filled_values[column.name] = int(missing.sum())
                raw = raw.astype(object).where(~missing, column.fill_value)
                missing = pd.Series(False, index=frame.index)
        present = ~missing
        if column.is_numeric:
            parsed[column.name] = _check_numeric(column, raw, present, problems)
        else:
            parsed[column.name] = _check_discrete(column, raw, present, problems)
        if column.models_missing:
            parsed[column.name] = parsed[column.name].where(present, np.nan)

    if problems:
        raise DataValidationError(problems, source)
    keep = ~drop
    if not keep.any():
        raise DataValidationError(
            [
                Problem(
                    "(all)",
                    "every row was dropped by the missing-value policy",
                    "fill the missing values or use missing = 'fill'",
                )
            ],
            source,
        )
    canonical = {}
    for column in schema.columns:
        values = parsed[column.name][keep].reset_index(drop=True)
        if column.models_missing:
            canonical[column.name] = canonical_with_missing(column, values)
        elif column.kind == ColumnKind.CONTINUOUS:
            canonical[column.name] = values.astype(np.float64)
        elif column.kind == ColumnKind.INTEGER or (column.kind == ColumnKind.BINARY and column.categories is None):
            canonical[column.name] = values.astype(np.int64)
        else:
            canonical[column.name] = values.astype(object)
    return pd.DataFrame(canonical, columns=schema.names), report


def canonical_with_missing(column: Column, values: pd.Series) -> pd.Series:
    """A missing = "model" column in canonical form: NaN where missing, so numbers are float64
    (integers included: int64 holds no NaN) and labels are objects."""
    if column.is_numeric or (column.kind == ColumnKind.BINARY and column.categories is None):
        return pd.to_numeric(values, errors="coerce").astype(np.float64)
    return values.astype(object).where(values.notna(), np.nan)
