"""A site's survival-utility evaluation of the global model: its own rows in, aggregates out.

The site half of the federated evaluation (same protocol as the audit): the site samples a
synthetic set from the global model itself, of the size the coordinator names (the release's:
the judged figures must describe data of the size researchers get), evaluates it against its
own train and holdout rows (:func:`fedsynth.evaluation.site_evaluation.evaluate_synthetic`) and
returns aggregates only —
per-column statistics, hazard ratios per covariate, C-indices, calibration figures, survival
curves on a fixed 50-point grid for groups of at least 20 patients, and subgroup fairness figures
per level of the sensitive columns (small cells withheld, :mod:`fedsynth.evaluation.site_fairness`).
Counted against the site's ``privacy.max_audits`` before anything runs (evaluation results are not
DP either).
"""

from __future__ import annotations

import math
from typing import Any

from fedsynth.client.audit import check_audit_result, start_site_query
from fedsynth.client.audit_log import AuditRefusedError
from fedsynth.client.site import Site
from fedsynth.data.schema import ColumnKind, Schema
from fedsynth.evaluation.calibration import RISK_GRID
from fedsynth.evaluation.fairness import FIGURES
from fedsynth.evaluation.fidelity import CURVE_POINTS, HISTOGRAM_BINS
from fedsynth.evaluation.site_evaluation import evaluate_synthetic
from fedsynth.evaluation.site_fairness import (
    COUNTS,
    ENTRY_KEYS,
    OVERALL,
    REAL_COUNTS,
    check_sensitive_column,
    sensitive_columns,
)
from fedsynth.model.generators import AnyGenerator
from fedsynth.suppression import MIN_CELL_ROWS, MIN_GROUP_ROWS

MAX_HORIZONS = 10


def evaluation_list_lengths(schema: Schema) -> frozenset[int]:
    """Number lists an evaluation may hold, all fixed by the public schema: survival curves on the
    fixed grid, calibration curves on the risk grid, histograms over public bins or declared
    levels, correlation-matrix rows (one per design column), CIs and horizons."""
    design_width = 2 + sum(
        len(c.labels) - 1 if c.kind is ColumnKind.CATEGORICAL else 1
        for c in schema.columns
        if c.name not in (schema.time_column, schema.event_column)
    )
    design_width += len(schema.modelled_missing)  # the correlations' name:missing indicators
    levels = {len(c.labels) for c in schema.columns if not c.is_numeric}
    return frozenset({CURVE_POINTS, len(RISK_GRID), HISTOGRAM_BINS, design_width, *levels, *range(1, MAX_HORIZONS + 1)})


def check_evaluation_result(result: dict[str, Any], schema: Schema) -> None:
    """The aggregate-only contract of an evaluation reply (see :func:`check_audit_result`), and its
    subgroup fairness part field by field (:func:`check_fairness_result`)."""
    check_audit_result(
        result,
        max_rows=int(result["n_train"]) + int(result["n_holdout"]),
        allowed_lengths=evaluation_list_lengths(schema),
    )
    if "fairness" in result:
        check_fairness_result(result["fairness"], schema)


def _figure_problem(name: str, value: Any, gap: bool = False) -> str | None:
    """Why ``value`` is not a C-index, an event rate or a calibration-in-the-large, or with ``gap``
    the difference of two (None if it is)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{type(value).__name__}, not a number"
    signed = name.startswith("calibration_")
    low, high = (0.0, 2.0 if signed else 1.0) if gap else (-1.0 if signed else 0.0, 1.0)
    return None if math.isnan(value) or low <= value <= high else f"{value!r} is outside [{low:g}, {high:g}]"


def _check_level(where: str, entry: Any) -> None:
    """One level's counts and figures: known names only, no small real count, a figure only where
    the level has the rows for it (:mod:`fedsynth.evaluation.site_fairness`)."""
    if not isinstance(entry, dict) or not set(entry) <= {*COUNTS, *FIGURES} or not set(COUNTS) <= set(entry):
        raise ValueError(f"{where}: a level holds its counts {list(COUNTS)} and figures {list(FIGURES)} only")
    for key in COUNTS:
        count = entry[key]
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ValueError(f"{where}.{key}: {count!r} is not a count")
        if key in REAL_COUNTS and count is not None and count < MIN_CELL_ROWS:
            raise ValueError(f"{where}.{key}: a count under {MIN_CELL_ROWS} real rows is withheld, not sent")
    for figure in set(entry) & set(FIGURES):
        problem = _figure_problem(figure, entry[figure])
        if problem:
            raise ValueError(f"{where}.{figure}: {problem}")
        rows = entry["n_train" if figure == "event_rate_real" else "n_holdout"]
        if figure != "event_rate_synthetic" and rows is not None and rows < MIN_GROUP_ROWS:
            raise ValueError(f"{where}.{figure}: a figure of fewer than {MIN_GROUP_ROWS} real rows")
    if "event_rate_real" in entry and entry["n_train"] is not None:
        events = round(entry["event_rate_real"] * entry["n_train"])
        if min(events, entry["n_train"] - events) < MIN_CELL_ROWS:
            raise ValueError(f"{where}.event_rate_real: fewer than {MIN_CELL_ROWS} rows with or without an event")


def check_fairness_result(part: Any, schema: Schema) -> None:
    """The subgroup fairness part of an evaluation reply, field by field: per binary or categorical
    feature of the schema, scalars under its declared levels and the figures' names, and no real
    count under ``MIN_CELL_ROWS`` nor a single withheld one its level's totals would give back."""
    if not isinstance(part, dict):
        raise ValueError("result.fairness: not a mapping of sensitive columns")
    for column, entry in part.items():
        where = f"result.fairness.{column}"
        try:
            check_sensitive_column(schema, column)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if isinstance(entry, dict) and set(entry) == {"error"} and isinstance(entry["error"], str):
            continue
        if not isinstance(entry, dict) or set(entry) != set(ENTRY_KEYS):
            raise ValueError(f"{where}: holds {list(ENTRY_KEYS)} (or an error) only")
        if isinstance(entry["horizon"], bool) or not isinstance(entry["horizon"], int | float):
            raise ValueError(f"{where}.horizon: not a number")
        labels = set(schema.column(column).labels)
        for key, names in (("overall", OVERALL), ("gaps", FIGURES)):
            values = entry[key]
            if not isinstance(values, dict) or not set(values) <= set(names):
                raise ValueError(f"{where}.{key}: holds {list(names)} only")
            bad = {k: p for k, v in values.items() if v is not None and (p := _figure_problem(k, v, key == "gaps"))}
            if bad:
                raise ValueError(f"{where}.{key}: {bad}")
        levels, reasons = entry["levels"], entry["not_estimable"]
        if not isinstance(levels, dict) or not isinstance(reasons, dict) or not set(levels) | set(reasons) <= labels:
            raise ValueError(f"{where}: levels and reasons only under the column's declared levels {sorted(labels)}")
        for level, entry_reasons in reasons.items():
            if (
                not isinstance(entry_reasons, dict)
                or not set(entry_reasons) <= set(FIGURES)
                or not all(isinstance(r, str) for r in entry_reasons.values())
            ):
                raise ValueError(f"{where}.not_estimable.{level}: a reason (text) per figure name only")
        for level, level_entry in levels.items():
            _check_level(f"{where}.levels.{level}", level_entry)
        for key in REAL_COUNTS:
            withheld = [level for level, e in levels.items() if e[key] is None]
            if len(withheld) == 1 and len(levels) > 1:
                raise ValueError(f"{where}: one level's {key} withheld alone; the totals would give it back")


def site_horizons(site: Site, requested: list[float] | None) -> list[float]:
    """The horizons this site answers at: those asked for, if the site declared every one of them.

    Raises AuditRefusedError (which reaches the coordinator with its text) otherwise.
    """
    declared = site.config.privacy.evaluation_horizons
    if requested is None:
        if declared is not None:
            return [float(h) for h in declared]
        bound = site.schema.column(site.schema.time_column).upper
        return [float(bound) / 4.0]
    undeclared = [h for h in requested if declared is None or float(h) not in {float(d) for d in declared}]
    if undeclared or not 1 <= len(requested) <= MAX_HORIZONS:
        raise AuditRefusedError(
            f"site '{site.config.name}' answers only at the evaluation horizons it declares "
            f"(privacy.evaluation_horizons = {declared}); {undeclared or requested} not among them"
        )
    return [float(h) for h in requested]


def site_fairness_columns(site: Site, model: AnyGenerator, requested: list[str] | None) -> list[str]:
    """The sensitive columns this site reports subgroup fairness on: the model's own
    ``fairness_column`` and those the coordinator names, each a binary or categorical feature of
    the public schema. Raises AuditRefusedError (its text reaches the coordinator) otherwise."""
    columns = sensitive_columns(getattr(model.config, "fairness_column", None), requested)
    for column in columns:
        try:
            check_sensitive_column(site.schema, str(column))
        except ValueError as exc:
            raise AuditRefusedError(f"site '{site.config.name}' refuses the evaluation: {exc}") from None
    return [str(column) for column in columns]


def run_site_evaluation(
    site: Site,
    model: AnyGenerator,
    seed: int = 0,
    horizons: list[float] | None = None,
    n: int | None = None,
    fairness_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Every survival-utility evaluation of ``model`` at ``site``; a JSON-able dict of aggregates.

    The synthetic rows are the site's own unconditional draw of ``n`` rows (default: its training
    size; the coordinator asks for the release's size), named in the result's ``sample``. Subgroup
    fairness figures (``fairness``) across the model's ``fairness_column`` and ``fairness_columns``
    (:func:`site_fairness_columns`)."""
    horizons = site_horizons(site, horizons)
    columns = site_fairness_columns(site, model, fairness_columns)  # refused before the query counts
    digest, number, synthetic = start_site_query(site, model, seed, "evaluation", n=n)
    result = {
        "site": site.config.name,
        "query_number": number,
        "model_sha256": digest,
        "sample": {"seed": seed, "n": len(synthetic)},
        **evaluate_synthetic(
            site.train,
            site.holdout,
            synthetic,
            site.schema,
            horizons,
            conditional_sampler=lambda n, conditions, s: model.sample(n, conditions, seed=s),
            seed=seed,
            fairness_columns=columns,
        ),
    }
    check_evaluation_result(result, site.schema)
    return result
