"""Figures of a federated evaluation, drawn from the aggregates the sites returned.

The coordinator never holds a real row, so every figure here is drawn from
``evaluation.json`` alone: Kaplan-Meier curves real vs synthetic (the sites' fixed-grid curves)
and a hazard-ratio forest plot (real log-HR with its 95% CI, synthetic log-HR on top). Files are
PNGs under ``RUN_DIR/plots/`` for the report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def survival_curves(site: dict[str, Any], path: Path) -> Path:
    """One panel per compared group (overall first, at most 9): real vs synthetic KM curves."""
    curves = site["fidelity"]["survival"][:9]
    columns = min(3, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, curve in zip(axes.flat, curves, strict=False):
        axis.step(curve["grid"], curve["real_survival"], where="post", label=f"real (n={curve['n_real']})")
        axis.step(
            curve["grid"], curve["synthetic_survival"], where="post", label=f"synthetic (n={curve['n_synthetic']})"
        )
        axis.set_title(f"{curve['group']}: max gap {curve['max_gap']:.2f}, log-rank p {curve['logrank_p']:.2g}")
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("time")
        axis.set_ylabel("survival")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(curves) :]:
        axis.axis("off")
    figure.suptitle(f"Kaplan-Meier, real vs synthetic at {site['site']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def hazard_ratio_forest(site: dict[str, Any], path: Path) -> Path:
    """Real log-HR with its 95% CI per covariate, the synthetic log-HR marked on the same row."""
    covariates = site["hazard_ratios"]["covariates"]
    names = list(covariates)
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    for row, name in enumerate(names):
        entry = covariates[name]
        axis.plot([entry["real_lower"], entry["real_upper"]], [row, row], color="tab:blue", linewidth=2)
        axis.plot(entry["real_log_hr"], row, "o", color="tab:blue", label="real (95% CI)" if row == 0 else None)
        if entry["synthetic_log_hr"] is not None and math.isfinite(entry["synthetic_log_hr"]):
            colour = "tab:green" if entry["inside_real_ci"] else "tab:red"
            axis.plot(entry["synthetic_log_hr"], row, "D", color=colour, label="synthetic" if row == 0 else None)
    axis.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("log hazard ratio")
    fraction = site["hazard_ratios"]["hr_in_ci_fraction"]
    axis.set_title(f"Cox hazard ratios at {site['site']}: {fraction:.0%} of synthetic inside the real CI")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def evaluation_figures(document: dict[str, Any], directory: Path) -> list[Path]:
    """Every figure for every site that answered; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for site in document["sites"]:
        written.append(survival_curves(site, directory / f"km_{site['site']}.png"))
        if "covariates" in site["hazard_ratios"]:
            written.append(hazard_ratio_forest(site, directory / f"hazard_ratios_{site['site']}.png"))
    return written
