"""A site's subgroup fairness figures, as the aggregates it may send (issue 24).

:func:`fedsynth.evaluation.fairness.subgroup_fairness` measures, per level of a sensitive column,
the C-index and calibration-in-the-large of the TRTR, TSTR and augmented Cox models on the level's
real holdout rows, and the level's real and synthetic event rates. A site sends, per column it is
asked about (the model's ``fairness_column`` and those the coordinator names):

* ``horizon``: the calibration horizon (the evaluation's first: a public, declared one);
* ``overall``: each model's C-index on the whole holdout;
* ``levels``: per level (a label of the public schema), its real training and holdout row counts,
  its synthetic row count, and each figure the level has enough rows for;
* ``not_estimable``: per level, why a figure is missing (a fixed phrase, never a count);
* ``gaps``: each figure's max - min over the levels that have it;

or, where the figures could not be computed at all, ``{"error": reason}``.

Small-cell suppression (:mod:`fedsynth.suppression`), on top of the figures' own minimums
(``MIN_GROUP_ROWS`` rows and ``MIN_SUBGROUP_EVENTS`` events in the level):

* a level's real row count under ``MIN_CELL_ROWS`` is withheld (None), as a histogram cell is;
  where exactly one level's count would be withheld, so is the smallest other one's: the reply's
  totals less the other levels' counts would give it back (secondary suppression);
* a level's real event rate is withheld where fewer than ``MIN_CELL_ROWS`` of its training rows
  have an event, or have none (the rate times the count is that number).

There is no list: every figure is a scalar under a column, level or figure name of the public
schema, so the part's size is fixed by the schema, never by the rows.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedsynth.data.schema import ColumnRole, Schema
from fedsynth.evaluation.calibration import short_reason
from fedsynth.evaluation.fairness import FIGURES, SubgroupFairness, figure_gap, fit_models, subgroup_fairness
from fedsynth.evaluation.utility import DEFAULT_PENALIZER, CoxFitError, complete_cases
from fedsynth.suppression import MIN_CELL_ROWS

REAL_COUNTS = ("n_train", "n_holdout")  # a level's real training and holdout rows (complete cases)
COUNTS = (*REAL_COUNTS, "n_synthetic")
ENTRY_KEYS = ("horizon", "overall", "levels", "not_estimable", "gaps")
OVERALL = tuple(f for f in FIGURES if f.startswith("cindex_"))
# What scoring can raise (as fedsynth.evaluation.site_evaluation's SCORING_ERRORS): the column's
# figures are then one reason, {"error": ...}.
FAILURES = (ValueError, ArithmeticError, CoxFitError, RuntimeError)
FEW_EVENTS = f"fewer than {MIN_CELL_ROWS} real training rows with an event, or without one"


def check_sensitive_column(schema: Schema, name: str) -> None:
    """Raise ValueError unless ``name`` is a binary or categorical feature of ``schema``."""
    discrete = [c.name for c in schema.columns if c.role is ColumnRole.FEATURE and not c.is_numeric]
    if name not in schema.names or schema.column(name).role is not ColumnRole.FEATURE:
        raise ValueError(f"fairness column {name!r} is not a feature of schema {schema.name!r}; use one of {discrete}")
    if schema.column(name).is_numeric:
        raise ValueError(
            f"fairness column {name!r} is {schema.column(name).kind}; subgroups need a binary or categorical "
            f"column: one of {discrete}"
        )


def sensitive_columns(model_column: str | None, requested: list[str] | None) -> list[str]:
    """The model's own ``fairness_column`` first, then the requested ones, each once."""
    return list(dict.fromkeys([*([model_column] if model_column else []), *(requested or [])]))


def withhold_small_counts(levels: dict[str, dict[str, Any]]) -> None:
    """Replace each real count under ``MIN_CELL_ROWS`` by None, and where that withholds exactly
    one level's count, the smallest other level's too (in place)."""
    for key in REAL_COUNTS:
        small = [level for level, entry in levels.items() if entry[key] is not None and entry[key] < MIN_CELL_ROWS]
        if len(small) == 1 and len(levels) > 1:
            others = [level for level in levels if level not in small and levels[level][key] is not None]
            small += [min(others, key=lambda level: levels[level][key])] if others else []
        for level in small:
            levels[level][key] = None


def site_entry(report: SubgroupFairness) -> dict[str, Any]:
    """One column's figures as a site sends them (see the module)."""
    levels: dict[str, dict[str, Any]] = {}
    not_estimable = {level: dict(reasons) for level, reasons in report.not_estimable.items()}
    for level, figures in report.levels.items():
        entry: dict[str, Any] = {key: int(figures[key]) for key in COUNTS}
        entry |= {figure: float(figures[figure]) for figure in FIGURES if figure in figures}
        if "event_rate_real" in entry:
            events = round(entry["event_rate_real"] * entry["n_train"])
            if min(events, entry["n_train"] - events) < MIN_CELL_ROWS:
                del entry["event_rate_real"]
                not_estimable.setdefault(level, {})["event_rate_real"] = FEW_EVENTS
        levels[level] = entry
    withhold_small_counts(levels)
    return {
        "horizon": float(report.horizon),
        "overall": {key: None if value is None else float(value) for key, value in report.overall.items()},
        "levels": levels,
        "not_estimable": not_estimable,
        "gaps": {figure: figure_gap([e[figure] for e in levels.values() if figure in e]) for figure in FIGURES},
    }


def site_fairness(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    schema: Schema,
    columns: list[str],
    horizon: float,
) -> dict[str, dict[str, Any]]:
    """Each sensitive column's figures (:func:`site_entry`); the three Cox models fitted once."""
    if not columns:
        return {}
    for column in columns:
        check_sensitive_column(schema, column)
    fitted = fit_models(complete_cases(train, schema), complete_cases(synthetic, schema), schema, DEFAULT_PENALIZER)
    out: dict[str, dict[str, Any]] = {}
    for column in columns:
        try:
            report = subgroup_fairness(train, holdout, synthetic, schema, column, horizon, fitted=fitted)
        except FAILURES as exc:  # e.g. no comparable pair in the holdout: reported, not fatal
            out[column] = {"error": short_reason(exc)}
            continue
        out[column] = site_entry(report)
    return out
