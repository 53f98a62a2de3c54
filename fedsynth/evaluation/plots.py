"""Figures of a federated evaluation, drawn from the aggregates the sites returned.

The coordinator never holds a real row, so every figure here is drawn from
``evaluation.json`` alone: Kaplan-Meier curves real vs synthetic (the sites' fixed-grid curves),
a hazard-ratio forest plot (real log-HR with its 95% CI, synthetic log-HR on top), each column's
histogram real vs synthetic on the public bins, the two correlation matrices and their
difference, and calibration curves (smoothed observed vs predicted risk on the public risk grid)
of every model at every horizon. Files are PNGs under ``RUN_DIR/plots/`` for the report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.data.schema import Schema
from fedsynth.evaluation.calibration import RISK_GRID
from fedsynth.evaluation.fidelity import histogram_edges
from fedsynth.evaluation.utility import SMALL_LEVEL
from fedsynth.figures import drawn_once, panel_grid, plt, save_figure
from fedsynth.suppression import MIN_CELL_ROWS, MIN_GROUP_ROWS

MODEL_LABELS = {
    "trtr": "real only (TRTR)",
    "tstr": "synthetic only (TSTR)",
    "augmented": "real + synthetic",
    "conditional": "real + conditional (rare subgroups)",
}


@drawn_once
def survival_curves(site: dict[str, Any], path: Path) -> Path:
    """One panel per compared group (overall first, at most 9): real vs synthetic KM curves; the
    real curve stops where the site cut it (fewer than ``MIN_GROUP_ROWS`` real rows at risk)."""
    curves = site["fidelity"]["survival"][:9]
    figure, axes = panel_grid(len(curves), 3, 4, 3)
    for axis, curve in zip(axes, curves, strict=True):
        real = _nan_for_none(curve["real_survival"])
        axis.step(curve["grid"], real, where="post", label=f"real (n={curve['n_real']})")
        cut = curve.get("real_cut_at")
        if cut is not None:
            axis.axvspan(cut, curve["grid"][-1], **WITHHELD_STYLE,
                         label=f"real withheld: fewer than {MIN_GROUP_ROWS} at risk")  # fmt: skip
        axis.step(
            curve["grid"], curve["synthetic_survival"], where="post", label=f"synthetic (n={curve['n_synthetic']})"
        )
        axis.set_title(f"{curve['group']}: max gap {curve['max_gap']:.2f}, log-rank p {curve['logrank_p']:.2g}")
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("time")
        axis.set_ylabel("survival")
        axis.legend(fontsize=7)
    figure.suptitle(f"Kaplan-Meier, real vs synthetic at {site['site']}")
    return save_figure(figure, path)


@drawn_once
def hazard_ratio_forest(site: dict[str, Any], path: Path) -> Path:
    """Real log-HR with its 95% CI per covariate, the synthetic log-HR marked on the same row; the
    covariates the site withheld (a level under ``MIN_CELL_ROWS`` real rows) are named under the axis."""
    covariates = site["hazard_ratios"]["covariates"]
    names = list(covariates)
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    labelled: set[str] = set()  # each marker kind once in the legend
    for row, name in enumerate(names):
        entry = covariates[name]
        axis.plot([entry["real_lower"], entry["real_upper"]], [row, row], color="tab:blue", linewidth=2)
        axis.plot(entry["real_log_hr"], row, "o", color="tab:blue", label="real (95% CI)" if row == 0 else None)
        if entry["synthetic_log_hr"] is not None and math.isfinite(entry["synthetic_log_hr"]):
            inside = bool(entry["inside_real_ci"])
            label = "synthetic, inside the real CI" if inside else "synthetic, outside the real CI"
            colour = "tab:green" if inside else "tab:red"
            axis.plot(entry["synthetic_log_hr"], row, "D", color=colour, label=None if label in labelled else label)
            labelled.add(label)
    axis.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    axis.set_yticks(range(len(names)), names)
    withheld = [name for name, why in (site["hazard_ratios"].get("excluded_covariates") or {}).items()
                if why == SMALL_LEVEL]  # fmt: skip
    note = f"\nwithheld: {', '.join(withheld)} (fewer than {MIN_CELL_ROWS} real rows in a level)" if withheld else ""
    axis.set_xlabel(f"log hazard ratio{note}")
    fraction = site["hazard_ratios"]["hr_in_ci_fraction"]
    axis.set_title(f"Cox hazard ratios at {site['site']}: {fraction:.0%} of synthetic inside the real CI")
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def _nan_for_none(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


WITHHELD_STYLE = {"facecolor": "none", "edgecolor": "grey", "hatch": "///", "linewidth": 0.0}
STATISTIC_LABELS = {"ks": "KS", "tv": "TVD"}


def _axis_name(name: str, schema: Schema | None) -> str:
    """A column's name as a reader knows it; the time and event columns say which they are."""
    if schema is None:
        return name
    if name == schema.time_column:
        return f"{name} (time)"
    return f"{name} (event)" if name == schema.event_column else name


def _withheld(axis: Any, lefts: np.ndarray, widths: np.ndarray, mask: np.ndarray) -> None:
    """Hatched full-height spans over the cells whose real share is withheld: unknown, not zero."""
    for left, width in zip(lefts[mask], widths[mask], strict=True):
        axis.axvspan(left, left + width, **WITHHELD_STYLE)


@drawn_once
def marginal_histograms(site: dict[str, Any], path: Path, schema: Schema | None = None) -> Path:
    """One panel per column (every column the site reported): real vs synthetic shares per public
    bin or level; a real cell withheld for its small count is hatched, never drawn as zero."""
    histograms = site["fidelity"]["histograms"]
    distances = site["fidelity"].get("marginals") or {}
    figure, axes = panel_grid(len(histograms), 4, 3.6, 2.9)
    any_withheld = False
    for axis, (name, entry) in zip(axes, histograms.items(), strict=True):
        real, synthetic = _nan_for_none(entry["real"]), _nan_for_none(entry["synthetic"])
        hidden = np.isnan(real)
        any_withheld = any_withheld or bool(hidden.any())
        if entry["kind"] == "bins":
            edges = histogram_edges(schema.column(name)) if schema is not None else np.arange(len(real) + 1.0)
            centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
            axis.bar(centres, real, width=width, alpha=0.5, label="real")
            axis.step(edges, np.append(synthetic, synthetic[-1]), where="post", color="tab:orange", label="synthetic")
            _withheld(axis, edges[:-1], width, hidden)
        else:
            positions = np.arange(len(real))
            axis.bar(positions - 0.2, real, width=0.4, label="real")
            axis.bar(positions + 0.2, synthetic, width=0.4, label="synthetic")
            _withheld(axis, positions - 0.4, np.full(len(real), 0.4), hidden)
            axis.set_xticks(positions, entry["levels"], fontsize=7)
        distance = distances.get(name) or {}
        statistic = STATISTIC_LABELS.get(distance.get("statistic", ""))
        value = distance.get("value")
        shown = f" {statistic} {value:.2f}" if statistic and isinstance(value, int | float) else ""
        cells = entry["withheld_cells"]
        withheld = f", {cells} real cells < {MIN_CELL_ROWS} withheld" if cells else ""
        axis.set_title(f"{name}:{shown}{withheld}", fontsize=8)
        axis.set_xlabel(_axis_name(name, schema), fontsize=7)
        axis.set_ylabel("share of rows", fontsize=7)
        axis.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    if any_withheld:
        from matplotlib.patches import Patch

        handles.append(Patch(**WITHHELD_STYLE, label=f"real share withheld (< {MIN_CELL_ROWS} rows)"))
    axes[0].legend(handles=handles, fontsize=7)
    figure.suptitle(f"Marginals, real vs synthetic at {site['site']}, every column (share of rows)")
    return save_figure(figure, path, dpi=90)


@drawn_once
def correlation_heatmaps(site: dict[str, Any], path: Path, schema: Schema | None = None) -> Path:
    """Real, synthetic and |difference| Pearson correlation matrices side by side; the real entries
    the site withheld (a small site, a rare level's indicator) are grey and the title says why."""
    matrices = site["fidelity"]["correlation_matrices"]
    # The survival target's internal names (_time, _event) as a reader knows them.
    target = {"_time": "time", "_event": "event"}
    if schema is not None:
        target = {"_time": _axis_name(schema.time_column, schema), "_event": _axis_name(schema.event_column, schema)}
    names = [target.get(name, name) for name in matrices["columns"]]
    real, synthetic = (np.array([_nan_for_none(r) for r in matrices[k]]) for k in ("real", "synthetic"))
    figure, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    withheld = matrices.get("real_withheld") or {}
    real_title = "real"
    if withheld and len(withheld) == len(names):
        real_title = f"real: withheld, fewer than {MIN_GROUP_ROWS} real rows"
    elif withheld:
        real_title = f"real: {len(withheld)} columns withheld (grey), fewer than {MIN_CELL_ROWS} real rows"
    panels = ((real_title, real, "coolwarm", -1), ("synthetic", synthetic, "coolwarm", -1),
              ("|real - synthetic|", np.abs(real - synthetic), "viridis", 0))  # fmt: skip
    for axis, (title, matrix, colours, low) in zip(axes, panels, strict=True):
        palette = plt.get_cmap(colours).with_extremes(bad="lightgrey")  # withheld or undefined: grey, not a value
        image = axis.imshow(matrix, cmap=palette, vmin=low, vmax=1)
        axis.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        axis.set_yticks(range(len(names)), names, fontsize=6)
        axis.set_title(title)
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(f"Correlations at {site['site']}")
    return save_figure(figure, path, dpi=90)


@drawn_once
def calibration_curves(site: dict[str, Any], path: Path) -> Path | None:
    """One panel per horizon: each model's smoothed observed risk against predicted risk; the
    points the site withheld (too few holdout rows near them) are gaps, counted in the legend."""
    horizons = site.get("horizons", [])
    models = {name: m for name, m in site["models"].items() if "calibration" in m}
    if not horizons or not models:
        return None
    figure, axes = plt.subplots(1, len(horizons), figsize=(5 * len(horizons), 4.5), squeeze=False)
    for index, (axis, horizon) in enumerate(zip(axes.flat, horizons, strict=True)):
        axis.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=0.8, label="ideal")
        for name, model in models.items():
            overall = model["calibration"][index].get("overall")
            if overall and overall.get("curve"):
                label = f"{MODEL_LABELS.get(name, name)}: ICI {overall['ici']:.3f}"
                if overall.get("curve_withheld"):
                    label += f"; {overall['curve_withheld']} points withheld: fewer than {MIN_CELL_ROWS} real rows"
                axis.plot(RISK_GRID, _nan_for_none(overall["curve"]), marker=".", label=label)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel(f"predicted risk of an event by t = {horizon:g}")
        axis.set_ylabel("observed risk (smoothed)")
        axis.legend(fontsize=7)
    figure.suptitle(f"Calibration on the real holdout at {site['site']}")
    return save_figure(figure, path)


def evaluation_figures(document: dict[str, Any], directory: Path, schema: Schema | None = None) -> list[Path]:
    """Every figure for every site that answered; returns the files written.

    ``schema`` (the run's public schema) places numeric histograms on their real scale.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for site in document["sites"]:
        name = site["site"]
        written.append(survival_curves(site, directory / f"km_{name}.png"))
        if "covariates" in site["hazard_ratios"]:
            written.append(hazard_ratio_forest(site, directory / f"hazard_ratios_{name}.png"))
        fidelity = site["fidelity"]
        if "histograms" in fidelity:
            written.append(marginal_histograms(site, directory / f"marginals_{name}.png", schema))
        if "correlation_matrices" in fidelity:
            written.append(correlation_heatmaps(site, directory / f"correlations_{name}.png", schema))
        curves = calibration_curves(site, directory / f"calibration_{name}.png")
        if curves is not None:
            written.append(curves)
    return written
