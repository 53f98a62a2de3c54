"""Marginal fidelity pooled over sites, with the noise floor of each figure at the sites' sizes.

Each site reports, per column, the KS statistic (numeric) or the total-variation distance
(binary, categorical) between its training rows and a synthetic sample it drew
(:func:`fedsynth.evaluation.fidelity.marginal_distances`). The coordinator combines them here,
from those aggregates and the row counts alone:

* **per column**: the sites' statistics averaged with weights proportional to each site's real
  (training) rows. Each patient then counts once, whichever site holds them, so the figure
  describes the federation's patients rather than its sites; and a large site's statistic, whose
  sampling noise is smaller, counts for more than a handful of rows at a small one;
* **mean KS** over numeric columns, **mean TVD** over binary and categorical ones, and the
  **worst column** of each kind (name and value);
* for a missing = "model" column, its **missing share**, real and synthetic, pooled with the same
  weights, their gap and the gap's noise floor (the real one ``None`` when any site withheld its
  own: a small count).

A distance between two finite samples is positive even when both come from one distribution.
For every figure the **noise floor** is given: what it reads, in expectation
(``noise_expected``) and at its 95th percentile (``noise_critical``), when the synthetic rows are
a fresh sample of the site's own distribution at the same sizes. Only sizes and the public
number of levels enter it, never the data. For one site with ``n`` real and ``m`` synthetic rows,
``s = sqrt((n + m) / (n m))``:

* KS: the Kolmogorov distribution (continuous columns; ties only lower it): mean
  ``0.8687 s``, SD ``0.2603 s``;
* TVD on ``k`` levels: each level's share difference is about normal with SD
  ``sqrt(p (1 - p)) s``, and ``sum sqrt(p (1 - p)) <= sqrt(k - 1)`` whatever the shares, so
  mean ``<= sqrt((k - 1) / (2 pi)) s`` and SD ``<= 0.5 sqrt(1 - 2/pi) sqrt(k - 1) s``.

Pooled over independent sites, the floor's mean is the weighted mean of the sites' means and its
SD ``sqrt(sum w^2 sd^2)``; a mean over columns takes the mean of the columns' SDs (columns may be
dependent: this bounds the SD for any dependence). ``noise_critical = mean + 1.96 SD``: for a
single site this reproduces the exact 95% critical values (KS 1.379 s against c(0.05) = 1.358 s;
binary TVD 0.99 s against 0.98 s), and it narrows as sites are pooled.

If any site's result lacks what a figure needs, the figures are ``None`` and ``problem`` says
which site and what: a pooled figure that silently skipped a site would describe other patients.
"""

from __future__ import annotations

import math
from typing import Any

KOLMOGOROV_MEAN = math.sqrt(math.pi / 2) * math.log(2)  # E sup|Brownian bridge|
KOLMOGOROV_SD = math.sqrt(math.pi**2 / 12 - KOLMOGOROV_MEAN**2)
HALF_NORMAL_MEAN = math.sqrt(2 / math.pi)  # E|Z|
HALF_NORMAL_SD = math.sqrt(1 - 2 / math.pi)
Z_CRITICAL = 1.96  # mean + 1.96 SD matches one site's exact 95% KS and binary-TVD critical values
STATISTICS = {"ks": "ks", "tv": "tvd"}  # the site's name for a statistic -> the pooled figures' name


def _spread(n: int, m: int) -> float:
    return math.sqrt((n + m) / (n * m))


def null_moments(statistic: str, n: int, m: int, levels: int = 2) -> tuple[float, float]:
    """Mean and SD (an upper bound for TVD) of ``statistic`` between two samples of sizes ``n``
    and ``m`` drawn from one distribution (``levels``: a discrete column's declared levels)."""
    s = _spread(n, m)
    if statistic == "ks":
        return KOLMOGOROV_MEAN * s, KOLMOGOROV_SD * s
    root = math.sqrt(max(levels - 1, 0))
    return 0.5 * HALF_NORMAL_MEAN * root * s, 0.5 * HALF_NORMAL_SD * root * s


def _site_problem(site: dict[str, Any]) -> str | None:
    name = site.get("site", "a site")
    marginals = (site.get("fidelity") or {}).get("marginals")
    if not marginals:
        return f"{name} reported no per-column fidelity (re-run the evaluation with this fedsynth version)"
    for key in ("n_train", "n_synthetic"):
        if not isinstance(site.get(key), int) or site[key] < 1:
            return f"{name} reported no {key}, which the noise floor needs"
    return None


def _column_entries(sites: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], str | None]:
    total = sum(site["n_train"] for site in sites)
    columns: dict[str, dict[str, Any]] = {}
    names = list(sites[0]["fidelity"]["marginals"])
    for name in names:
        statistic = sites[0]["fidelity"]["marginals"][name].get("statistic")
        if statistic not in STATISTICS:
            return {}, f"{sites[0]['site']} reported an unknown statistic {statistic!r} for column {name}"
        value, mean, variance = 0.0, 0.0, 0.0
        for site in sites:
            entry = site["fidelity"]["marginals"].get(name) or {}
            figure = entry.get("value")
            if entry.get("statistic") != statistic or not isinstance(figure, int | float) or not math.isfinite(figure):
                return {}, f"{site['site']} reported no finite {STATISTICS[statistic]} for column {name}"
            levels = 2
            if statistic == "tv":
                declared = ((site["fidelity"].get("histograms") or {}).get(name) or {}).get("levels")
                if not declared:
                    return {}, f"{site['site']} reported no declared levels for column {name}"
                levels = len(declared)
            weight = site["n_train"] / total
            site_mean, site_sd = null_moments(statistic, site["n_train"], site["n_synthetic"], levels)
            value += weight * float(figure)
            mean += weight * site_mean
            variance += (weight * site_sd) ** 2
        sd = math.sqrt(variance)
        missing = _pooled_missing(sites, name, total)
        columns[name] = {
            "statistic": STATISTICS[statistic],
            "value": value,
            "noise_expected": mean,
            "noise_sd": sd,
            "noise_critical": mean + Z_CRITICAL * sd,
        } | ({"missing": missing} if missing is not None else {})
    return columns, None


def _pooled_missing(sites: list[dict[str, Any]], name: str, total: int) -> dict[str, Any] | None:
    """A missing = "model" column's pooled missing share, real and synthetic, with the gap's noise
    floor: the pooled gap ``sum w (synthetic - real)`` of a fresh sample of each site's own rows
    is about normal with SD ``sqrt(sum w^2 p (1 - p) s^2)`` (``p`` each site's real share), so its
    size's 95th percentile is 1.96 SD. The real share (and the gap) is None, and ``withheld_at``
    names the sites, where a site withheld its own (a small count)."""
    shares = [(site, site["n_train"] / total, site["fidelity"]["marginals"][name].get("missing")) for site in sites]
    if any(share is None for _, _, share in shares):
        return None
    synthetic = sum(w * float(share.get("synthetic", 0.0)) for _, w, share in shares)
    withheld = [str(site["site"]) for site, _, share in shares if share.get("real") is None]
    if withheld:
        return {"real": None, "synthetic": synthetic, "gap": None, "noise_critical": None, "withheld_at": withheld}
    real = sum(w * float(share["real"]) for _, w, share in shares)
    variance = sum(
        (w * _spread(site["n_train"], site["n_synthetic"])) ** 2 * float(share["real"]) * (1.0 - float(share["real"]))
        for site, w, share in shares
    )
    return {
        "real": real,
        "synthetic": synthetic,
        "gap": synthetic - real,
        "noise_critical": Z_CRITICAL * math.sqrt(variance),
        "withheld_at": [],
    }


def _summaries(
    columns: dict[str, dict[str, Any]], statistic: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    chosen = {name: c for name, c in columns.items() if c["statistic"] == statistic}
    if not chosen:
        return None, None
    count = len(chosen)
    mean = sum(c["noise_expected"] for c in chosen.values()) / count
    sd = sum(c["noise_sd"] for c in chosen.values()) / count
    summary = {
        "value": sum(c["value"] for c in chosen.values()) / count,
        "noise_expected": mean,
        "noise_critical": mean + Z_CRITICAL * sd,
        "columns": count,
    }
    worst_name = max(chosen, key=lambda name: chosen[name]["value"])
    worst = {"column": worst_name, **{k: chosen[worst_name][k] for k in ("value", "noise_expected", "noise_critical")}}
    return summary, worst


def pool_fidelity(sites: list[dict[str, Any]]) -> dict[str, Any]:
    """The pooled fidelity figures of the sites' evaluation results (module docstring)."""
    empty: dict[str, Any] = {"columns": None, "mean_ks": None, "mean_tvd": None, "worst_ks": None, "worst_tvd": None}
    if not sites:
        return {**empty, "problem": "no site answered"}
    problem = next((p for p in map(_site_problem, sites) if p), None)
    if problem is None:
        names = [sorted(site["fidelity"]["marginals"]) for site in sites]
        if any(n != names[0] for n in names):
            problem = "the sites reported different columns; they must share one schema"
    columns: dict[str, dict[str, Any]] = {}
    if problem is None:
        columns, problem = _column_entries(sites)
    if problem is not None:
        return {**empty, "problem": problem}
    mean_ks, worst_ks = _summaries(columns, "ks")
    mean_tvd, worst_tvd = _summaries(columns, "tvd")
    total = sum(site["n_train"] for site in sites)
    return {
        "weights": {site["site"]: site["n_train"] / total for site in sites},
        "rows": {site["site"]: {"real": site["n_train"], "synthetic": site["n_synthetic"]} for site in sites},
        "columns": columns,
        "mean_ks": mean_ks,
        "mean_tvd": mean_tvd,
        "worst_ks": worst_ks,
        "worst_tvd": worst_tvd,
        "problem": None,
    }
