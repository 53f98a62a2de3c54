"""The report's fidelity section: does each column of the synthetic data look like the real one?

One row per column with its real-vs-synthetic distance pooled over sites (KS for numeric
columns, total-variation distance for binary and categorical ones), the noise floor a sample of
the real distribution itself would read at the sites' sizes, and, when a verdict is at hand, the
policy's threshold and where the column stands against it (judged as the fidelity rules judge:
:mod:`fedsynth.release.quality_rules`). Then the means and worst columns, each site's column pair
whose correlation the synthetic rows miss most, and each site's real-vs-synthetic histogram of
every column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fedsynth.release.html import Html, figure, note, number, section, table, tag
from fedsynth.release.report_parts import load_schema, short, site_query_notes
from fedsynth.release.rules import EVALUATION, HOW_TO_MAKE, Document
from fedsynth.release.signoff import Verdict
from fedsynth.suppression import MIN_CELL_ROWS

# pooled statistic -> (the rule whose threshold a column is held to, the rule of the mean)
RULES = {"ks": ("fidelity_column_ks", "fidelity_mean_ks"), "tvd": ("fidelity_column_tvd", "fidelity_mean_tvd")}
HEADERS = ["column", "kind", "statistic", "real vs synthetic", "noise floor (expected)", "noise floor (95%)",
           "threshold", "against the policy", "real cells withheld"]  # fmt: skip
EXPLANATION = (
    "Each column's distance between the real rows and the synthetic rows, pooled over sites (each site weighted by "
    "its real rows): KS, the largest gap between the two cumulative distributions, for numeric columns; TVD, the "
    "share of rows that would have to change category, for binary and categorical ones. 0 means identical. Two "
    "samples of one distribution still differ: the noise floor is what a sample of the real distribution itself "
    "would read at these sizes (expected, and its 95th percentile). A value under the floor cannot be told from "
    "noise; a floor over the threshold means the sites are too small for the policy to decide."
)
MARKS = {
    "within": ("within", "ok"),
    "over": ("over: beyond the noise floor", "bad"),
    "unsure": ("cannot tell: noise floor over the threshold", "unsure"),
}


def thresholds(verdict: Verdict | None) -> dict[str, float]:
    """Each fidelity rule's threshold as the verdict recorded it (``<= 0.15`` -> 0.15)."""
    found: dict[str, float] = {}
    for rule in verdict.rules if verdict is not None else []:
        match = re.fullmatch(r"<=\s*([0-9.eE+-]+)", rule.threshold.strip())
        if rule.name.startswith("fidelity_") and match:
            found[rule.name] = float(match.group(1))
    return found


def mark(value: float, floor: float, threshold: float | None) -> Html | str:
    """A column against its threshold, as the fidelity rule judges it."""
    if threshold is None:
        return "no verdict"
    if value > threshold and value > floor:
        key = "over"
    elif floor > threshold:
        key = "unsure"
    else:
        key = "within"
    text, css = MARKS[key]
    return tag("span", text, class_=css)


def _kind(name: str, statistic: str, schema: Any) -> str:
    if schema is not None:
        try:
            column = schema.column(name)
        except (KeyError, ValueError):
            return "not in schema.toml"
        role = "" if column.role.value == "feature" else f" ({column.role.value})"
        return f"{column.kind.value}{role}"
    return "numeric" if statistic == "ks" else "binary or categorical"


def _withheld(sites: list[dict[str, Any]], name: str) -> str:
    cells = [((s.get("fidelity") or {}).get("histograms") or {}).get(name, {}).get("withheld_cells") for s in sites]
    known = [c for c in cells if isinstance(c, int)]
    return str(sum(known)) if known else "n/a"


def _column_rows(pooled: dict[str, Any], sites: list[dict[str, Any]], limits: dict[str, float], schema: Any) -> list:
    rows = []
    for name, column in pooled["columns"].items():
        statistic = column["statistic"]
        threshold = limits.get(RULES.get(statistic, ("", ""))[0])
        rows.append([
            name, _kind(name, statistic, schema), statistic.upper(), number(column["value"]),
            number(column["noise_expected"]), number(column["noise_critical"]),
            "n/a" if threshold is None else f"<= {threshold:g}",
            mark(column["value"], column["noise_critical"], threshold), _withheld(sites, name),
        ])  # fmt: skip
    return rows


def _missing_rows(pooled: dict[str, Any]) -> list[list[object]]:
    """Per missing = "model" column: its pooled missing share, real and synthetic, and their gap."""
    rows: list[list[object]] = []
    for name, column in pooled["columns"].items():
        share = column.get("missing")
        if share is None:
            continue
        real, synthetic = share.get("real"), share.get("synthetic")
        gap = "n/a" if real is None or synthetic is None else number(synthetic - real)
        rows.append([name, "withheld" if real is None else number(real), number(synthetic), gap])
    return rows


def _dependence_rows(sites: list[dict[str, Any]]) -> list[list[object]]:
    """Per site: the column pair whose correlation the synthetic rows miss most, and the mean miss."""
    from fedsynth.evaluation.fidelity import correlation_gaps

    rows: list[list[object]] = []
    for site in sites:
        matrices = (site.get("fidelity") or {}).get("correlation_matrices")
        gaps = correlation_gaps(matrices) if matrices else []
        if not gaps:
            continue
        gap, i, j = max(gaps)
        columns, mean = matrices["columns"], sum(g for g, _, _ in gaps) / len(gaps)
        rows.append([str(site.get("site", "?")), f"{columns[i]} / {columns[j]}", number(matrices["real"][i][j]),
                     number(matrices["synthetic"][i][j]), number(gap), number(mean)])  # fmt: skip
    return rows


def _summary_rows(pooled: dict[str, Any], limits: dict[str, float]) -> list[list[object]]:
    rows: list[list[object]] = []
    for statistic, (column_rule, mean_rule) in RULES.items():
        mean, worst = pooled.get(f"mean_{statistic}"), pooled.get(f"worst_{statistic}")
        if mean is not None:
            threshold = limits.get(mean_rule)
            rows.append([f"mean {statistic.upper()} over {mean['columns']} columns", number(mean["value"]),
                         number(mean["noise_critical"]), "n/a" if threshold is None else f"<= {threshold:g}",
                         mark(mean["value"], mean["noise_critical"], threshold)])  # fmt: skip
        if worst is not None:
            threshold = limits.get(column_rule)
            rows.append([f"worst column by {statistic.upper()}: {worst['column']}", number(worst["value"]),
                         number(worst["noise_critical"]), "n/a" if threshold is None else f"<= {threshold:g}",
                         mark(worst["value"], worst["noise_critical"], threshold)])  # fmt: skip
    return rows


def _site_marginals(site: dict[str, Any], directory: Path, schema: Any) -> Html:
    """One site's histogram of every column, or a note saying why there is none."""
    from fedsynth.evaluation.plots import marginal_histograms

    name = str(site.get("site", "?"))
    caption = f"{name}: Marginal histograms on the public bins, real vs synthetic, every column"
    if "histograms" not in (site.get("fidelity") or {}):
        return note(f"{name}: marginal histograms skipped: evaluation.json has no fidelity.histograms "
                    f"(an older fedsynth wrote it); {HOW_TO_MAKE[EVALUATION]} to draw it")  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return figure(marginal_histograms(site, directory / "marginals.png", schema), caption)
    except (KeyError, TypeError, ValueError, IndexError, OSError) as exc:
        return note(f"{name}: marginal histograms not drawn ({short(exc)}); {HOW_TO_MAKE[EVALUATION]} again", "warn")


def fidelity_section(evaluation: Document, verdict: Verdict | None, run_dir: Path, workdir: Path) -> Html:
    """Every column's pooled real-vs-synthetic distance against its noise floor and the policy."""
    if evaluation.data is None:
        return section("Fidelity", note(evaluation.problem, "warn"), id_="fidelity")
    sites = evaluation.data.get("sites") or []
    parts: list[object] = site_query_notes(evaluation)
    schema, problem = load_schema(run_dir)
    if problem is not None:
        parts.append(note(problem, "warn"))
    pooled = (evaluation.data.get("worst") or {}).get("fidelity")
    limits = thresholds(verdict)
    if pooled is None:
        parts.append(note(f"evaluation.json has no pooled fidelity (an older fedsynth wrote it); "
                          f"{HOW_TO_MAKE[EVALUATION]} to compute it", "warn"))  # fmt: skip
    elif pooled.get("problem"):
        parts.append(note(f"fidelity not pooled over sites: {pooled['problem']}", "warn"))
    else:
        parts += [
            table(
                ["over all columns", "value", "noise floor (95%)", "threshold", "against the policy"],
                _summary_rows(pooled, limits),
                numeric=(1, 2),
            ),  # fmt: skip
            table(HEADERS, _column_rows(pooled, sites, limits, schema), numeric=(3, 4, 5, 8)),
            note(EXPLANATION),
        ]
        missing = _missing_rows(pooled)
        if missing:
            parts += [
                tag("h3", "Missing values"),
                table(["column", "real missing share", "synthetic", "synthetic - real"], missing, numeric=(1, 2, 3)),
                note('Columns with missing = "model": the generator learns whether each value is missing, and the '
                     "distances above compare present values only. Shares are pooled over sites by their rows; the "
                     f"real share is withheld when a site has fewer than {MIN_CELL_ROWS} missing (or present) "
                     "values."),
            ]  # fmt: skip
        dependence = _dependence_rows(sites)
        if dependence:
            parts += [
                tag("h3", "Dependence between columns"),
                table(["site", "pair missed most", "real r", "synthetic r", "|real - synthetic|",
                       "mean over pairs"], dependence, numeric=(2, 3, 4, 5)),  # fmt: skip
                note("Pearson correlations of every pair of columns (covariates, time, event) at each site, real "
                     "against synthetic: the distances above compare one column at a time and cannot show two "
                     "columns that vary together in the real rows and apart in the synthetic ones. No rule of "
                     "the policy reads these figures; the heatmaps are in the survival utility section."),
            ]  # fmt: skip
        if verdict is None:
            parts.append(note("No verdict: the columns are not marked against a policy's thresholds."))
    parts.append(tag("h3", "Each column, real vs synthetic"))
    parts.append(note("Real rows' shares (bars) against the synthetic rows' (orange) on the schema's public bins, per "
                      f"site. A real cell with fewer than {MIN_CELL_ROWS} rows is withheld by the site and drawn "
                      "hatched: unknown, not zero."))  # fmt: skip
    parts += [_site_marginals(site, workdir / f"fidelity{index}", schema) for index, site in enumerate(sites)]
    return section("Fidelity", *parts, id_="fidelity")
