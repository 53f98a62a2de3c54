"""A site's survival-utility evaluation of the global model: its own rows in, aggregates out.

The site half of the federated evaluation (same protocol as the audit): the site samples a
synthetic set from the global model itself, of the size the coordinator names (the release's:
the judged figures must describe data of the size researchers get), evaluates it against its
own train and holdout rows (:func:`fedsynth.evaluation.site_evaluation.evaluate_synthetic`) and
returns aggregates only —
per-column statistics, hazard ratios per covariate, C-indices, calibration figures, and survival
curves on a fixed 50-point grid for groups of at least 20 patients. Counted against the site's
``privacy.max_audits`` before anything runs (evaluation results are not DP either).
"""

from __future__ import annotations

from typing import Any

from fedsynth.client.audit import check_audit_result, start_site_query
from fedsynth.client.audit_log import AuditRefusedError
from fedsynth.client.site import Site
from fedsynth.data.schema import ColumnKind, Schema
from fedsynth.evaluation.calibration import RISK_GRID
from fedsynth.evaluation.fidelity import CURVE_POINTS, HISTOGRAM_BINS
from fedsynth.evaluation.site_evaluation import evaluate_synthetic
from fedsynth.model.generators import AnyGenerator

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
    """The aggregate-only contract of an evaluation reply (see :func:`check_audit_result`)."""
    check_audit_result(
        result,
        max_rows=int(result["n_train"]) + int(result["n_holdout"]),
        allowed_lengths=evaluation_list_lengths(schema),
    )


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


def run_site_evaluation(
    site: Site, model: AnyGenerator, seed: int = 0, horizons: list[float] | None = None, n: int | None = None
) -> dict[str, Any]:
    """Every survival-utility evaluation of ``model`` at ``site``; a JSON-able dict of aggregates.

    The synthetic rows are the site's own unconditional draw of ``n`` rows (default: its training
    size; the coordinator asks for the release's size), named in the result's ``sample``."""
    horizons = site_horizons(site, horizons)
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
        ),
    }
    check_evaluation_result(result, site.schema)
    return result
