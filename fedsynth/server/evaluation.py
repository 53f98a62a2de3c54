"""The coordinator's half of the federated survival-utility evaluation: ask every site, combine.

Same protocol as the audit (:mod:`fedsynth.server.site_queries`): each site samples from the
global model (its own draw, of the release's size), evaluates against its own rows and returns
aggregates. The coordinator keeps the per-site results and, for the figures a sign-off policy
tests, the worst site: the largest TSTR C-index shortfall against TRTR, the smallest share of
hazard ratios inside the real CI, the largest calibration error and subgroup gap of the
synthetic-trained model; and the share of hazard ratios inside the real CI over every site's
comparisons together; and the sites' per-column KS / TVD pooled with their noise floors
(:mod:`fedsynth.evaluation.pooled_fidelity`); and the subgroup fairness figures across the levels
of the model's ``fairness_column`` and of any column the coordinator names, pooled over the sites
(:mod:`fedsynth.evaluation.pooled_fairness`). Written to ``RUN_DIR/evaluation.json``.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from fedsynth.client.app import EVALUATION_RECORD, FAIRNESS_COLUMNS
from fedsynth.client.evaluation import check_evaluation_result
from fedsynth.data.io import write_text
from fedsynth.evaluation.pooled_fairness import pool_fairness
from fedsynth.evaluation.pooled_fidelity import pool_fidelity
from fedsynth.evaluation.site_fairness import check_sensitive_column, sensitive_columns
from fedsynth.model.generators import load_generator
from fedsynth.server.audit import pooled_training_size
from fedsynth.server.site_queries import query_sites, site_query_document

EVALUATION_FILE = "evaluation.json"


def _worst(values: list[float], pick: Any) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return pick(finite) if finite else None


def worst_over_sites(sites: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures a sign-off policy tests: each at its worst site (None where no site has it), and
    the marginal fidelity (``fidelity``) and subgroup fairness figures (``fairness``) pooled over sites."""
    gaps, harrell, hr_in_ci, ici, subgroup_gap, unscored = [], [], [], [], [], []
    inside, compared = 0, 0
    for site in sites:
        models = site["models"]
        hr = site["hazard_ratios"]
        hr_in_ci.append(hr.get("hr_in_ci_fraction"))
        verdicts = [bool(c["inside_real_ci"]) for c in hr.get("covariates", {}).values()]
        inside, compared = inside + sum(verdicts), compared + len(verdicts)
        trtr, tstr = models["trtr"].get("discrimination", {}), models["tstr"].get("discrimination", {})
        if "error" in models["tstr"] or "uno_c" not in tstr or "uno_c" not in trtr or "error" in hr:
            # The worst case must not quietly drop the worst site: it is named instead.
            unscored.append(site["site"])
            continue
        gaps.append(trtr["uno_c"] - tstr["uno_c"])
        harrell.append(trtr["harrell_c"] - tstr["harrell_c"])
        for entry in models["tstr"]["calibration"]:
            if entry["overall"] is not None:
                ici.append(entry["overall"]["ici"])
            subgroup_gap.append(entry["subgroups"].get("worst_group_gap"))
    return {
        "sites_not_scored": unscored,
        "tstr_uno_c_shortfall": _worst(gaps, max),
        "tstr_harrell_c_shortfall": _worst(harrell, max),
        "hr_in_ci_fraction": _worst(hr_in_ci, min),
        # Every site's covariate comparisons together: one site has only as many as covariates
        # (14 for WHAS500), so its fraction moves in steps of 0.07 and its worst is mostly chance.
        "hr_in_ci_pooled_fraction": inside / compared if compared and not unscored else None,
        "hr_in_ci_compared": compared,
        "tstr_ici": _worst(ici, max),
        "tstr_worst_subgroup_ici_gap": _worst(subgroup_gap, max),
        "fidelity": pool_fidelity(sites),
        "fairness": pool_fairness(sites),
    }


def _size_problem(site: dict[str, Any], n: int) -> str | None:
    """Why a site's evaluation is not of a sample of ``n`` rows (None if it is)."""
    evaluated = (site.get("sample") or {}).get("n")
    if evaluated != n:
        return f"evaluated {evaluated or 'an unnamed number of'} synthetic rows, not the {n} asked (an older fedsynth)"
    return None


def run_evaluation(
    grid: Grid,
    run_dir: Path,
    seed: int = 0,
    horizons: list[float] | None = None,
    timeout: float = 3600.0,
    expected_sites: int = 1,
    n: int | None = None,
    fairness_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate the run's global model at every connected site; write and return evaluation.json.

    ``fairness_columns``: binary or categorical features of the public schema each site reports
    subgroup fairness figures across, besides the model's own ``fairness_column`` (which every
    site reports unasked).

    Each site evaluates its own draw of ``n`` rows (default: the pooled training size, the size of
    the release `fedsynth audit` covers): a figure read on fewer rows than researchers get would
    add sampling noise the release does not have (a Cox fit on a third of the rows scatters its
    hazard ratios sqrt(3) times wider), and the sign-off checks that the sizes agree.
    """
    model = load_generator(Path(run_dir) / "model")
    for column in fairness_columns or []:  # refused here, before any site spends a query on it
        check_sensitive_column(model.schema_, column)
    size = pooled_training_size(run_dir) if n is None else int(n)
    extra: dict[str, Any] = {"sample": {"n": size}} | ({"horizons": horizons} if horizons else {})
    if fairness_columns:
        extra[FAIRNESS_COLUMNS] = list(fairness_columns)
    columns = sensitive_columns(getattr(model.config, "fairness_column", None), fairness_columns)
    sites, failures = query_sites(
        grid,
        model,
        "evaluate",
        EVALUATION_RECORD,
        partial(check_evaluation_result, schema=model.schema_),
        seed=seed,
        extra=extra,
        timeout=timeout,
        expected_sites=expected_sites,
    )
    kept = [site for site in sites if _size_problem(site, size) is None]
    failures += [{"node_id": None, "reason": f"{s['site']}: {_size_problem(s, size)}"} for s in sites if s not in kept]
    document = site_query_document(
        kept,
        failures,
        seed,
        worst_over_sites,
        horizons=horizons,
        sample={"seed": seed, "n": size},
        **({"fairness_columns": columns} if columns else {}),
    )
    write_text(Path(run_dir) / EVALUATION_FILE, json.dumps(document, indent=2))
    return document
