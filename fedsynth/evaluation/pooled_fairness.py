"""The sites' subgroup fairness figures pooled at the coordinator (issue 24).

Each site sends, per sensitive column and level, its real and synthetic row counts (small real
counts withheld) and its figures (:mod:`fedsynth.evaluation.site_fairness`). Per column and level
the coordinator pools:

* each figure as the mean over the sites that have it, weighted by the rows it was measured on:
  the level's real training rows for the real event rate, its synthetic rows for the synthetic
  one, its real holdout rows for the C-indices and calibration-in-the-large. A site whose weight
  was withheld is left out of that figure (``sites_pooled`` counts those kept). A weighted mean of
  per-site C-indices is not the C-index of the pooled rows (pairs across sites are never
  compared), but it is what the sites' aggregates allow;
* calibration only where every site calibrated at one horizon (the coordinator names it with
  ``--horizon``; sites answering at their own declared horizons are not averaged);
* the counts summed over the sites that released them (``counts_withheld``: at how many sites
  each was withheld; None where no site released it), and the level's share of the real training
  rows and of the synthetic rows, over the sites that released every level's count;

and each figure's gap, max - min over the levels, of the pooled figures.
"""

from __future__ import annotations

import math
from typing import Any

from fedsynth.evaluation.fairness import FIGURES, figure_gap

WEIGHTS = {figure: "n_holdout" for figure in FIGURES} | {
    "event_rate_real": "n_train",
    "event_rate_synthetic": "n_synthetic",
}
MIXED_HORIZONS = "the sites calibrated at different horizons: evaluate with --horizon"


def _weighted_mean(pairs: list[tuple[float, int]]) -> float | None:
    pairs = [(v, w) for v, w in pairs if math.isfinite(v) and w > 0]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def _shares(entries: list[dict[str, Any]], levels: list[str], key: str) -> dict[str, float | None]:
    """Each level's share of ``key`` rows, over the sites that released every level's count."""
    complete = [e["levels"] for e in entries if all((e["levels"].get(lv) or {}).get(key) is not None for lv in levels)]
    sums = {level: sum(site[level][key] for site in complete) for level in levels}
    total = sum(sums.values())
    return {level: sums[level] / total if total else None for level in levels}


def pool_column(entries: list[dict[str, Any]], site_holdouts: list[int]) -> dict[str, Any]:
    """One sensitive column's pooled figures from the sites' entries (each with ``horizon``,
    ``overall``, ``levels``); ``site_holdouts``: each site's holdout rows, weighing ``overall``."""
    horizons = sorted({float(e["horizon"]) for e in entries})
    levels = list(dict.fromkeys(level for e in entries for level in e["levels"]))
    shares = {key: _shares(entries, levels, key) for key in ("n_train", "n_synthetic")}
    pooled_levels: dict[str, dict[str, Any]] = {}
    for level in levels:
        parts = [e["levels"][level] for e in entries if level in e["levels"]]
        pooled: dict[str, Any] = {}
        for key in ("n_train", "n_holdout", "n_synthetic"):
            released = [p[key] for p in parts if p.get(key) is not None]
            pooled[key] = sum(released) if released else None
            if len(released) < len(parts):
                pooled.setdefault("counts_withheld", {})[key] = len(parts) - len(released)
        pooled["share_real"], pooled["share_synthetic"] = shares["n_train"][level], shares["n_synthetic"][level]
        kept: dict[str, int] = {}
        for figure in FIGURES:
            if figure.startswith("calibration_") and len(horizons) > 1:
                continue
            pairs = [(float(p[figure]), int(p[WEIGHTS[figure]])) for p in parts
                     if figure in p and p.get(WEIGHTS[figure]) is not None]  # fmt: skip
            value = _weighted_mean(pairs)
            if value is not None:
                pooled[figure], kept[figure] = value, len(pairs)
        pooled["sites_pooled"] = kept
        pooled_levels[level] = pooled
    overall = {
        key: _weighted_mean(
            [
                (float(e["overall"][key]), n)
                for e, n in zip(entries, site_holdouts, strict=True)
                if e["overall"].get(key) is not None
            ]
        )  # fmt: skip
        for key in sorted({k for e in entries for k in e["overall"]})
    }
    return {
        "sites": len(entries),
        "horizon": horizons[0] if len(horizons) == 1 else None,
        **({"note": MIXED_HORIZONS} if len(horizons) > 1 else {}),
        "overall": overall,
        "levels": pooled_levels,
        "gaps": {f: figure_gap([p[f] for p in pooled_levels.values() if f in p]) for f in FIGURES},
    }


def pool_fairness(sites: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per sensitive column any site reported figures for, :func:`pool_column` over those sites
    (the sites without figures for it, an error or an older fedsynth, under ``sites_without``)."""
    columns = list(dict.fromkeys(column for site in sites for column in site.get("fairness") or {}))
    out: dict[str, dict[str, Any]] = {}
    for column in columns:
        reported = [(site, (site.get("fairness") or {}).get(column)) for site in sites]
        usable = [(site, entry) for site, entry in reported if entry is not None and "error" not in entry]
        failed = [str(site.get("site")) for site, entry in reported if entry is None or "error" in entry]
        if usable:
            out[column] = pool_column([e for _, e in usable], [int(s.get("n_holdout") or 0) for s, _ in usable])
        else:
            out[column] = {"sites": 0}
        out[column]["sites_without"] = failed
    return out
