"""Draft a schema from a local file, for a data custodian to review before it is shared.

Drafting *reads the private data*: the bounds and categories it proposes describe this
site's rows. That is why bounds are rounded outward to coarse values and why the draft's
header and the CLI say so: the custodian must review and, where needed, widen or coarsen
them before the schema becomes the public contract.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import ValidationError

from fedsynth.data.schema import Column, ColumnKind, ColumnRole, MissingPolicy, Schema, TransformKind
from fedsynth.data.validation import missing_cells

MAX_CATEGORIES = 50
# A covariate missing at least this often is drafted with missing = "model" (see _missing_policy).
MODEL_MISSING_SHARE = 0.05
# Names a hospital extract gives identifiers: a patient, record, institution or site code.
IDENTIFIER_NAME = re.compile(
    r"(?i)^(id|ids|mrn|uuid|guid|patient|patient[_.]?(id|no|number)|subject|record|inst|institution|site|"
    r"hospital|centre|center|clinic)$|[_.](id|mrn)$"
)
MIN_ROWS_FOR_KEY = 20  # a column distinct on every row of at least this many rows is a row key


@dataclass(frozen=True)
class DraftNote:
    """One thing the custodian should know about a drafted (or left-out) column, in plain words."""

    column: str
    text: str
    excluded: bool = False


def identifier_reason(name: str, raw: pd.Series) -> str | None:
    """Why a column looks like an identifier (never to be modelled), or None."""
    present = raw.dropna()
    if IDENTIFIER_NAME.search(name):
        return f"its name says it is an identifier ({present.nunique()} distinct values)"
    if len(present) >= MIN_ROWS_FOR_KEY and present.nunique() == len(present):
        numbers = pd.to_numeric(present, errors="coerce")
        if numbers.isna().any() or bool((numbers == numbers.round()).all()):
            return f"every one of its {len(present)} values is different: a row key"
    return None


def _step(values: np.ndarray, lower: float) -> float | None:
    """The recording step of whole-number values (10 for a Karnofsky score), when above 1."""
    offsets = np.unique(np.round(values - lower).astype(np.int64))
    if len(offsets) < 3:
        return None
    step = int(np.gcd.reduce(offsets))
    return float(step) if step > 1 else None


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


def _refuse(name: str, bad: pd.Series, present: pd.Series, problem: str, fix: str) -> None:
    """Raise naming the column, how many rows, the first one (1-based, as validation counts) and the fix."""
    if bad.any():
        first = bad[bad].index[0]
        raise ValueError(
            f"column '{name}' {problem} ({int(bad.sum())} row(s); first: row {first + 1} = "
            f"'{present.loc[first]}'); {fix}"
        )


def _missing_policy(absent: pd.Series, role: ColumnRole) -> MissingPolicy:
    """reject without missing values; a covariate missing in at least ``MODEL_MISSING_SHARE`` of
    the rows: model (dropping them would lose those patients, and with them whatever their
    missingness says); otherwise drop_row (a few rows; time and event must be observed)."""
    if not absent.any():
        return MissingPolicy.REJECT
    if role == ColumnRole.FEATURE and absent.mean() >= MODEL_MISSING_SHARE:
        return MissingPolicy.MODEL
    return MissingPolicy.DROP_ROW


def _infer_column(name: str, raw: pd.Series, role: ColumnRole) -> Column:
    # The same cells count as missing here as in validation, so that the draft's policy fits.
    absent = missing_cells(raw)
    missing = _missing_policy(absent, role)
    present = raw[~absent]
    if present.empty:
        raise ValueError(f"column '{name}' is empty; drop it from the file or fill it")
    parsed = pd.to_numeric(present, errors="coerce").astype(np.float64)
    text = parsed.isna()
    _refuse(
        name,
        ~text & ~np.isfinite(parsed),
        present,
        "holds infinite values",
        "replace them with the real values, or leave those cells empty (missing)",
    )
    if role == ColumnRole.TIME:
        _refuse(name, text, present, "is the time column but holds text", "survival times must be numbers")
        _refuse(
            name, parsed < 0, present, "is the time column but holds negative times", "correct them: times are >= 0"
        )
    if role == ColumnRole.EVENT:
        # A draft must not turn 2 or 'yes' into an event silently: which value means "event" is the custodian's call.
        _refuse(
            name,
            ~parsed.isin([0.0, 1.0]),
            present,
            "is the event column but holds values other than 0 (censored) and 1 (event)",
            "recode the column to 0/1, or declare the two labels in its 'categories' in the schema (first = censored)",
        )
        return Column(name=name, kind=ColumnKind.BINARY, role=role, missing=missing)
    numbers = None if text.any() else parsed
    distinct = sorted(present.astype(str).str.strip().unique())
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
    step = _step(values, lower) if integral and role == ColumnRole.FEATURE else None
    return Column(
        name=name,
        kind=ColumnKind.INTEGER if integral else ColumnKind.CONTINUOUS,
        role=role,
        lower=lower,
        upper=upper,
        step=step if step is not None and step <= upper - lower else None,
        transform=transform,
        offset=offset,
        missing=missing,
    )


def infer_schema(frame: pd.DataFrame, time: str, event: str, name: str = "dataset", source: str = "data") -> Schema:
    """Draft a schema for ``frame``; ``time`` and ``event`` name the survival columns.

    Raises ValueError starting with ``source`` (the file) and naming the column and the fix.
    """
    return draft_schema(frame, time, event, name, source)[0]


def draft_schema(
    frame: pd.DataFrame, time: str, event: str, name: str = "dataset", source: str = "data"
) -> tuple[Schema, list[DraftNote]]:
    """The draft schema and, per column, what the custodian should review: identifiers left
    out, missing values and the rows their policy drops, bounds and steps and why."""
    for role, column in (("time", time), ("event", event)):
        if column not in frame.columns:
            raise ValueError(
                f"{source}: --{role} column '{column}' is not in the data; "
                f"columns: {', '.join(map(str, frame.columns))}"
            )
    if time == event:
        raise ValueError(f"{source}: --time and --event both name '{time}'; the event indicator is its own column")
    if len(frame) == 0:
        raise ValueError(f"{source} has no rows; draft the schema from a file that holds the data")
    frame = frame.reset_index(drop=True)
    notes: list[DraftNote] = []
    try:
        columns = []
        for column_name in map(str, frame.columns):
            role = {time: ColumnRole.TIME, event: ColumnRole.EVENT}.get(column_name, ColumnRole.FEATURE)
            reason = identifier_reason(column_name, frame[column_name]) if role == ColumnRole.FEATURE else None
            if reason is not None:
                notes.append(DraftNote(column_name, _excluded_text(column_name, reason), excluded=True))
                continue
            column = _infer_column(column_name, frame[column_name], role)
            columns.append(column)
            notes.extend(_column_notes(column, frame[column_name]))
        schema = Schema(
            name=name,
            description=f"Draft inferred from {len(frame)} rows; review before sharing.",
            columns=tuple(columns),
        )
    except ValidationError as exc:  # a drafted column the schema refuses: say why without pydantic's framing
        reasons = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        raise ValueError(f"{source}: cannot draft a valid schema: {reasons}") from None
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    bounded = any(c.lower is not None for c in schema.columns)
    return schema, notes + _rows_lost(schema, frame) + ([BOUNDS_NOTE] if bounded else [])


def _excluded_text(name: str, reason: str) -> str:
    return (
        f"{reason}; identifiers are never modelled (training ignores the column). To give each of its values "
        f'its own simulated site: partition = "column:{name}". A clinical variable? Add it to the schema by hand.'
    )


BOUNDS_NOTE = DraftNote(
    "(bounds)",
    "numeric bounds are the observed range rounded outward, so that the exact extremes (the most identifying "
    "values) are not published; where a column has a known public scale (a 0-100 score), declare that instead",
)


def _column_notes(column: Column, raw: pd.Series) -> list[DraftNote]:
    notes, cells = [], missing_cells(raw)
    absent = int(cells.sum())
    if absent:
        if column.missing == MissingPolicy.MODEL:
            action = ("keeps those rows: the generator learns when the value is missing (trained under DP like "
                      "every column) and samples empty cells")  # fmt: skip
        elif column.role == ColumnRole.FEATURE:
            action = (f"drops those rows (under {MODEL_MISSING_SHARE:.0%} missing: few rows, and so rare a "
                      'missingness is hard to learn under DP noise; missing = "model" would keep them)')  # fmt: skip
        else:
            action = "drops those rows (the survival outcome must be observed)"
        notes.append(DraftNote(column.name, f"{absent} of {len(raw)} values missing ({absent / len(raw):.0%}): "
                               f"missing = \"{column.missing.value}\" {action}"))  # fmt: skip
    if column.lower is not None and column.upper is not None:
        values = pd.to_numeric(raw[~cells], errors="coerce")
        text = f"observed {values.min():g} to {values.max():g}, bounds {column.lower:g} to {column.upper:g}"
        if column.step is not None:
            text += f"; recorded in steps of {column.step:g} (step = {column.step:g})"
        if column.transform != TransformKind.IDENTITY:
            text += f'; skewed, so transform = "{column.transform.value}"'
        notes.append(DraftNote(column.name, text))
    return notes


def _rows_lost(schema: Schema, frame: pd.DataFrame) -> list[DraftNote]:
    dropping = [c.name for c in schema.columns if c.missing == MissingPolicy.DROP_ROW]
    if not dropping:
        return []
    lost = int(pd.concat([missing_cells(frame[name]) for name in dropping], axis=1).any(axis=1).sum())
    return [
        DraftNote(
            "(all rows)",
            f"{lost} of {len(frame)} rows ({lost / len(frame):.0%}) have a missing value in a drop_row column and "
            'would not be used; missing = "model" (a covariate) or "fill" with a fill_value keeps the rows',
        )
    ]


def draft_header(source: str, n_rows: int) -> str:
    return (
        f"# DRAFT schema inferred by `fedsynth schema infer` from {source} ({n_rows} rows).\n"
        "# It READ THE PRIVATE DATA: bounds and categories below describe this file.\n"
        "# Review every column before sharing: widen or coarsen bounds, check categories, kinds,\n"
        "# transforms and missing-value policies. Once shared, this schema is public.\n\n"
    )
