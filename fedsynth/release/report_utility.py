"""The report's survival-utility section: the worst-site figures a policy tests, each site's
scores, and each site's evaluation figures (a note for each one its data lacks)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fedsynth.release.html import Html, figure, note, number, section, table, tag
from fedsynth.release.report_parts import short, site_query_notes
from fedsynth.release.rules import EVALUATION, HOW_TO_MAKE, Document
from fedsynth.suppression import MIN_CELL_ROWS, MIN_GROUP_ROWS

# evaluation_figures' files, the document field each needs, and the caption.
EVALUATION_FIGURES = (
    ("km", None, "Kaplan-Meier curves, real vs synthetic"),
    ("hazard_ratios", "hazard_ratios.covariates", "Cox hazard ratios: real 95% CI and synthetic estimate"),
    ("correlations", "fidelity.correlation_matrices", "Correlation heatmaps: real, synthetic, difference"),
    ("calibration", "models.*.calibration[].overall.curve", "Calibration curves on the real holdout"),
)
WORST_ROWS = (
    ("tstr_uno_c_shortfall", "TSTR C-index shortfall (TRTR − TSTR Uno C), worst site"),
    ("hr_in_ci_fraction", "hazard ratios inside the real 95% CI (fraction), worst site"),
    ("hr_in_ci_pooled_fraction", "the same, every site's covariates pooled"),
    ("tstr_ici", "TSTR calibration ICI, worst site"),
)


def _has_calibration_curves(site: dict[str, Any]) -> bool:
    return any(
        (entry.get("overall") or {}).get("curve")
        for model in site.get("models", {}).values()
        for entry in model.get("calibration", [])
    )


def withheld_labels(site: dict[str, Any]) -> dict[str, str]:
    """Per figure, what the site withheld for its small groups, as the caption says it."""
    from fedsynth.evaluation.utility import SMALL_LEVEL

    labels: dict[str, str] = {}
    cut = [f"{c.get('group')} from t = {c['real_cut_at']:g}" for c in (site.get("fidelity") or {}).get("survival", [])
           if c.get("real_cut_at") is not None]  # fmt: skip
    if cut:
        labels["km"] = f"real curve withheld: fewer than {MIN_GROUP_ROWS} real rows at risk ({'; '.join(cut)})"
    excluded = (site.get("hazard_ratios") or {}).get("excluded_covariates") or {}
    small = [name for name, why in excluded.items() if why == SMALL_LEVEL]
    if small:
        labels["hazard_ratios"] = f"withheld: {', '.join(small)}: fewer than {MIN_CELL_ROWS} real rows in a level"
    columns = ((site.get("fidelity") or {}).get("correlation_matrices") or {}).get("real_withheld") or {}
    if columns:
        reasons = sorted(set(columns.values()))
        labels["correlations"] = f"real withheld (grey): {', '.join(columns)}: {'; '.join(reasons)}"
    points = sum(
        (entry.get("overall") or {}).get("curve_withheld") or 0
        for model in (site.get("models") or {}).values()
        for entry in model.get("calibration", [])
    )
    if points:
        labels["calibration"] = (
            f"{points} curve points withheld: fewer than {MIN_CELL_ROWS} real holdout rows near them"
        )
    return labels


def _site_figures(site: dict[str, Any], directory: Path, schema: Any) -> list[object]:
    """One site's evaluation figures, each one its data lacks replaced by a note."""
    from fedsynth.evaluation.plots import evaluation_figures

    name = str(site.get("site", "?"))
    # evaluation_figures names its files after the site: a name that is not a safe file name
    # (it comes from a site's config) is drawn under a sanitised one.
    safe = re.sub(r"[^\w.-]", "_", name)
    try:
        # The marginal histograms are the fidelity section's: not drawn twice.
        fidelity = {k: v for k, v in (site.get("fidelity") or {}).items() if k != "histograms"}
        drawn = evaluation_figures({"sites": [{**site, "site": safe, "fidelity": fidelity}]}, directory, schema)
        written = {p.name.removesuffix(f"_{safe}.png"): p for p in drawn}
    except (KeyError, TypeError, ValueError, IndexError, OSError) as exc:
        return [note(f"{name}: figures not drawn ({short(exc)}); {HOW_TO_MAKE[EVALUATION]} with this version", "warn")]
    if not _has_calibration_curves(site):
        written.pop("calibration", None)  # drawn with the diagonal alone: an empty panel, not a figure
    parts: list[object] = []
    labels = withheld_labels(site)
    for key, field, caption in EVALUATION_FIGURES:
        if key in written:
            label = f"; {labels[key]}" if key in labels else ""
            parts.append(figure(written[key], f"{name}: {caption}{label}"))
        else:
            parts.append(note(f"{name}: {caption.split(':')[0].lower()} skipped: evaluation.json has no {field} "
                              f"(an older fedsynth wrote it); {HOW_TO_MAKE[EVALUATION]} to draw it"))  # fmt: skip
    return parts


def _uno(site: dict[str, Any], model: str) -> str:
    return number(site.get("models", {}).get(model, {}).get("discrimination", {}).get("uno_c"))


def utility_section(evaluation: Document, schema: Any, workdir: Path) -> Html:
    if evaluation.data is None:
        return section("Survival utility", note(evaluation.problem, "warn"), id_="utility")
    sites = evaluation.data.get("sites") or []
    parts: list[object] = site_query_notes(evaluation)
    size = (evaluation.data.get("sample") or {}).get("n")
    if size is not None:
        parts.append(note(f"Each site fitted and scored its own model-only sample of {size} rows, the release's size."))
    worst = evaluation.data.get("worst") or {}
    if worst:
        parts.append(table(["over sites", "value"], [[label, number(worst.get(key))] for key, label in WORST_ROWS],
                           numeric=(1,)))  # fmt: skip
        if worst.get("sites_not_scored"):
            parts.append(note(f"no TSTR scores at {', '.join(worst['sites_not_scored'])} (a fit failed there)", "warn"))
    rows = []
    for s in sites:
        calibration = s.get("models", {}).get("tstr", {}).get("calibration") or [{}]
        ici = (calibration[0].get("overall") or {}).get("ici")
        rows.append([s["site"], number(s.get("fidelity", {}).get("mean_ks")),
                     number(s.get("hazard_ratios", {}).get("hr_in_ci_fraction")), _uno(s, "trtr"), _uno(s, "tstr"),
                     _uno(s, "augmented"), number(ici)])  # fmt: skip
    parts.append(table(["site", "mean KS", "HR in real CI", "Uno C TRTR", "Uno C TSTR", "Uno C augmented",
                        "ICI TSTR"], rows, numeric=(1, 2, 3, 4, 5, 6)))  # fmt: skip
    for index, site in enumerate(sites):
        parts += [tag("h3", f"{site.get('site', '?')}"), *_site_figures(site, workdir / f"site{index}", schema)]
    return section("Survival utility", *parts, id_="utility")
