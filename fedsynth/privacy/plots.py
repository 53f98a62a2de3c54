"""Figures of the privacy budget and of a federated audit, drawn from the aggregates alone.

The coordinator holds no real row, so every figure is drawn from what the sites returned
(``budget.json``, ``audit.json``): cumulative epsilon per round, DCR histograms on the public
edges, membership-attack ROC curves and Anonymeter risks with their CIs. PNG files, for
``budget.png``, ``RUN_DIR/plots/`` and the HTML report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from fedsynth.figures import drawn_once, panel_grid, plt, save_figure
from fedsynth.suppression import MIN_CELL_ROWS

# The FPRs a privacy officer reads (Carlini et al. 2022): the attack's power where it would be used.
LOW_FPRS = ((0.01, "tpr_at_1pct_fpr", "1%"), (0.001, "tpr_at_0_1pct_fpr", "0.1%"))
DCR_CURVES = (("dcr_synthetic_histogram", "synthetic to train"), ("dcr_holdout_histogram", "holdout to train"))
ROC_FLOOR = 1e-4  # the ROC grid's smallest positive FPR; zero cannot sit on a log axis


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


@drawn_once
def budget_figure(report: dict[str, Any], path: Path) -> Path:
    """Cumulative epsilon after each round, per site, with each site's target dotted.

    Round 0 is the DP marginal tables' release where a site made one; the survival head's slope
    release, after the last round, is drawn one round after it. Sites often spend alike,
    so each has its own marker and line style: overlapping lines stay distinguishable. The y-axis
    starts at 0, so the spend reads as a share of the target.
    """
    figure, axis = plt.subplots(figsize=(6, 3.5))
    count = len(report["sites"])
    for index, site in enumerate(report["sites"]):
        points = [(0, m["epsilon"]) for m in site.get("marginals") or []]
        points += [(r["round"], r["epsilon"]) for r in site["rounds"]]
        after = max((p[0] for p in points), default=0) + 1
        points += [(after, s["epsilon"]) for s in site.get("head_slope") or []]
        dodge = (index - (count - 1) / 2) * 0.06  # equal spends side by side, not one on top of another
        style = {"marker": MARKERS[index % len(MARKERS)], "linestyle": LINESTYLES[index % len(LINESTYLES)]}
        rounds, epsilons = [p[0] + dodge for p in points], [p[1] for p in points]
        line = axis.plot(rounds, epsilons, label=site["site"], markersize=5, **style)[0]
        axis.axhline(site["target_epsilon"], color=line.get_color(), linestyle=":", linewidth=1)
    releases = [(k, label) for k, label in (("marginals", "0: DP marginal tables"), ("head_slope", "last: head slope"))
                if any(s.get(k) for s in report["sites"])]  # fmt: skip
    axis.set_xlabel(f"round ({'; '.join(label for _, label in releases)})" if releases else "round")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylim(bottom=0)
    axis.set_ylabel("epsilon spent (cumulative)")
    axis.set_title("Privacy budget per site (dotted: target)")
    if report["sites"]:
        axis.legend(fontsize=8)
    return save_figure(figure, path, dpi=120)


def withheld_holdout_cells(nn: dict[str, Any]) -> int:
    """Holdout DCR cells not drawn: withheld by the site, or under ``MIN_CELL_ROWS`` in an older document."""
    return sum(1 for c in nn["dcr_holdout_histogram"] if c is None or c < MIN_CELL_ROWS)


@drawn_once
def dcr_histograms(sites: list[dict[str, Any]], path: Path) -> Path:
    """Per site: distances to the closest training row of synthetic rows and of holdout rows.

    Shares, not counts (the synthetic set is larger than the holdout). A synthetic curve shifted
    left of the holdout's means the model's rows sit closer to its training patients than unseen
    patients do: memorisation. The first public bin starts at 0, drawn at half the next edge. A
    holdout cell the site withheld (under ``MIN_CELL_ROWS`` real rows) is hatched, not drawn as 0.
    """
    figure, axes = panel_grid(len(sites), 3, 4.6, 3.2)
    for axis, site in zip(axes, sites, strict=True):
        nn = site["nearest_neighbour"]
        edges = np.array(nn["histogram_edges"], dtype=float)
        edges[0] = edges[1] / 2
        for key, label in DCR_CURVES:
            counts = np.array([np.nan if c is None else c for c in nn[key]], dtype=float)
            withheld = np.isnan(counts)
            if key == "dcr_holdout_histogram":  # an older site sent its small cells: not drawn either
                withheld |= counts < MIN_CELL_ROWS
                counts[withheld] = np.nan
            total = nn.get("n_holdout") if withheld.any() and key == "dcr_holdout_histogram" else None
            total = total or np.nansum(counts)
            shares = counts / total if total else counts
            axis.stairs(shares, edges, label=f"{label} (n={int(total)})", linewidth=1.5)
            for left, right in zip(edges[:-1][withheld], edges[1:][withheld], strict=True):
                axis.axvspan(left, right, facecolor="none", edgecolor="grey", hatch="///", linewidth=0.0)
        handles, _ = axis.get_legend_handles_labels()
        if withheld_holdout_cells(nn):
            handles.append(Patch(facecolor="none", edgecolor="grey", hatch="///",
                                 label=f"holdout withheld: fewer than {MIN_CELL_ROWS} real rows"))  # fmt: skip
        axis.set_xscale("log")
        axis.set_xlabel("distance to closest training row (encoded)")
        axis.set_ylabel("share of rows")
        low, high = nn["dcr_share_ci"]
        axis.set_title(f"{site['site']}: DCR share {nn['dcr_share']:.2f} [{low:.2f}, {high:.2f}]", fontsize=9)
        axis.legend(handles=handles, fontsize=7)
    figure.suptitle("Distance to closest record (public edges)")
    return save_figure(figure, path)


@drawn_once
def roc_curves(sites: list[dict[str, Any]], path: Path) -> Path:
    """Per site: every membership attack's ROC on log-log axes, TPR at 1% and 0.1% FPR marked.

    Log axes show the low-FPR regime where an attack would be used against individuals, which a
    linear ROC (and the AUC) hides. FPRs below one non-member cannot be resolved: shaded, and no
    curve is drawn there (a curve on the grid would read as a measured TPR). A withheld TPR (too
    few non-members to measure it) is written on the panel, never drawn as 0.
    """
    figure, axes = panel_grid(len(sites), 3, 4.6, 4.0)
    for axis, site in zip(axes, sites, strict=True):
        unmeasured: dict[str, list[str]] = {}  # FPR -> attacks whose TPR there is withheld (or 0: off a log axis)
        for attack in site["attacks"]:
            fpr, tpr = np.array(attack["roc_fpr"], dtype=float), np.array(attack["roc_tpr"], dtype=float)
            resolvable = 1 / attack["n_non_members"] if attack.get("n_non_members") else ROC_FLOOR
            shown = (fpr >= resolvable * (1 - 1e-9)) & (tpr > 0)
            line = axis.plot(fpr[shown], tpr[shown], label=f"{attack['attack']} (AUC {attack['auc']:.2f})")[0]
            for fpr_mark, key, text in LOW_FPRS:
                value = attack.get(key)
                if value is not None and value > 0:
                    axis.plot(fpr_mark, value, "o", color=line.get_color(), markersize=6)
                else:
                    state = "withheld" if value is None else "0"
                    unmeasured.setdefault(f"TPR@{text} FPR {state}", []).append(attack["attack"])
        grid = np.geomspace(ROC_FLOOR, 1, 50)
        axis.plot(grid, grid, linestyle="--", color="black", linewidth=0.8, label="chance")
        for fpr_mark, _, _ in LOW_FPRS:
            axis.axvline(fpr_mark, color="grey", linestyle=":", linewidth=0.8)
        n_non_members = min((a["n_non_members"] for a in site["attacks"]), default=0)
        if n_non_members:
            unresolved = f"< 1 of {n_non_members} non-members"
            axis.axvspan(ROC_FLOOR, 1 / n_non_members, color="grey", alpha=0.15, label=unresolved)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(ROC_FLOOR, 1)
        axis.set_ylim(ROC_FLOOR, 1.05)
        axis.set_xlabel("false-positive rate")
        axis.set_ylabel("true-positive rate")
        axis.set_title(f"{site['site']} (dotted: 1% and 0.1% FPR)", fontsize=9)
        axis.legend(fontsize=7, loc="lower right")
        if unmeasured:
            lines = [f"{what}: {', '.join(attacks)}" for what, attacks in unmeasured.items()]
            axis.text(0.02, 0.98, "\n".join(lines), transform=axis.transAxes, fontsize=7, va="top")
    figure.suptitle("Membership inference ROC (log-log)")
    return save_figure(figure, path)


@drawn_once
def anonymeter_risks(sites: list[dict[str, Any]], path: Path) -> Path:
    """Every Anonymeter risk with its 95% CI, one row per attack and site."""
    rows = [(site["site"], risk) for site in sites for risk in site["anonymeter"]]
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.4))
    for row, (_, risk) in enumerate(rows):
        low, high = risk["ci"]
        axis.plot([low, high], [row, row], color="tab:blue", linewidth=2)
        axis.plot(risk["risk"], row, "o", color="tab:blue")
    axis.set_yticks(range(len(rows)), [f"{site}: {risk['attack']}" for site, risk in rows], fontsize=7)
    axis.set_xlim(-0.05, 1.05)
    axis.invert_yaxis()
    axis.set_xlabel("risk (excess success over the holdout control), 95% CI")
    axis.set_title("Anonymeter re-identification risks")
    return save_figure(figure, path)


def audit_figures(document: dict[str, Any], directory: Path) -> list[Path]:
    """Every audit figure of the sites that answered; returns the files written (none: no site)."""
    sites = document.get("sites") or []
    if not sites:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    written = [
        dcr_histograms(sites, directory / "audit_dcr.png"),
        roc_curves(sites, directory / "audit_roc.png"),
    ]
    if any(site["anonymeter"] for site in sites):
        written.append(anonymeter_risks(sites, directory / "audit_anonymeter.png"))
    return written
