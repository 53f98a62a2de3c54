"""The report's subgroup fairness section (issue 24): per level of each sensitive column, the
pooled real and synthetic event rates, C-indices and calibration-in-the-large of the Cox models
trained on real, synthetic and real + synthetic rows, their gaps between levels, each site's gaps,
and a note for every level a site withheld figures or counts for (small cells)."""

from __future__ import annotations

from typing import Any

from fedsynth.release.html import Html, note, number, section, table, tag
from fedsynth.release.report_parts import site_query_notes
from fedsynth.release.rules import Document
from fedsynth.suppression import MIN_CELL_ROWS

# The figures in table order, with their column headers.
FIGURE_HEADERS = (
    ("event_rate_real", "event rate real"),
    ("event_rate_synthetic", "event rate synthetic"),
    ("cindex_trtr", "C TRTR"),
    ("cindex_tstr", "C TSTR"),
    ("cindex_augmented", "C augmented"),
    ("calibration_trtr", "calibration TRTR"),
    ("calibration_tstr", "calibration TSTR"),
    ("calibration_augmented", "calibration augmented"),
)
HEADERS = dict(FIGURE_HEADERS)
SITE_GAPS = ("cindex_tstr", "cindex_augmented", "calibration_tstr", "event_rate_synthetic", "event_rate_real")
TOO_FEW = "too few rows"
HOW = "`fedsynth evaluate RUN_DIR --fairness-column NAME`"
EXPLAINED = (
    "Per level of the sensitive column, on that level's real rows at each site: the share of rows with an event "
    "(real training rows and synthetic rows); Harrell's C-index on the real holdout of a Cox model trained on the "
    "real rows (TRTR, the reference), on the synthetic rows (TSTR) and on both (augmented); calibration-in-the-large "
    "at the horizon (observed minus mean predicted risk, signed). Pooled over sites as means weighted by the rows "
    "each figure was measured on; a gap is the largest minus the smallest level's figure. A gap the TRTR model shows "
    "too is in the real data, not made by the synthetic rows."
)


def _option_note(column: str, model: dict[str, Any]) -> Html | None:
    """What the generator was trained with for this column, from run.json's model config."""
    if model.get("fairness_column") != column:
        return None
    weight = float(model.get("fairness_weight") or 0.0)
    shares = model.get("fairness_shares")
    if weight == 0:
        return note(f"The generator declares {column} as its fairness column with weight 0: trained as without "
                    "the fairness option.")  # fmt: skip
    return note(f"The generator was trained with the fairness option on {column}: fairness_weight = {weight:g}"
                + (f", declared level shares {shares}" if shares else "") + ".")  # fmt: skip


def _rows_cell(figures: dict[str, Any]) -> str:
    """A level's real training rows: the (pooled) count, and where a site withheld its small count."""
    count, withheld = figures.get("n_train"), (figures.get("counts_withheld") or {}).get("n_train")
    if count is None:
        return "withheld"
    return f"{count} + withheld at {withheld} site(s)" if withheld else str(count)


def _level_table(entry: dict[str, Any]) -> Html:
    """One row per level, then the gaps; a figure no site could give reads 'too few rows'."""
    rows: list[list[object]] = []
    for level, figures in entry["levels"].items():
        rows.append([
            level,
            _rows_cell(figures),
            number(figures.get("share_real")),
            number(figures.get("share_synthetic")),
            *(number(figures[key]) if key in figures else TOO_FEW for key, _ in FIGURE_HEADERS),
        ])  # fmt: skip
    gaps = entry.get("gaps") or {}
    rows.append(["gap (max − min)", "", "", "", *(number(gaps.get(key)) for key, _ in FIGURE_HEADERS)])
    headers = ["level", "real rows", "share real", "share synthetic", *(header for _, header in FIGURE_HEADERS)]
    return table(headers, rows, numeric=tuple(range(1, len(headers))))


def withheld_notes(column: str, sites: list[dict[str, Any]]) -> list[Html]:
    """Per level: the figures each site gave a reason for instead of a number, and the real counts
    it withheld (small cells), grouped by reason."""
    grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
    for site in sites:
        entry = (site.get("fairness") or {}).get(column) or {}
        name = str(site.get("site", "?"))
        if "error" in entry:
            grouped.setdefault(("all levels", f"not computed: {entry['error']}"), {}).setdefault(name, [])
            continue
        for level, reasons in (entry.get("not_estimable") or {}).items():
            for figure, reason in reasons.items():
                grouped.setdefault((level, reason), {}).setdefault(name, []).append(HEADERS.get(figure, figure))
        for level, figures in (entry.get("levels") or {}).items():
            counts = [what for key, what in (("n_train", "training"), ("n_holdout", "holdout"))
                      if key in figures and figures[key] is None]  # fmt: skip
            if counts:
                reason = (f"real {' and '.join(counts)} row count withheld (under {MIN_CELL_ROWS} rows, or withheld "
                          "with such a level, which the total less this one would give back)")  # fmt: skip
                grouped.setdefault((level, reason), {}).setdefault(name, [])
    notes = []
    for (level, reason), by_site in grouped.items():
        where = "; ".join(site + (f" ({', '.join(figures)})" if figures else "") for site, figures in by_site.items())
        notes.append(note(f"{column} = {level}: {reason}, at {where}"))
    return notes


def _site_gaps(column: str, sites: list[dict[str, Any]]) -> Html:
    rows = []
    for site in sites:
        entry = (site.get("fairness") or {}).get(column) or {}
        gaps = entry.get("gaps") or {}
        rows.append([site.get("site", "?"), number(entry.get("horizon")), *(number(gaps.get(k)) for k in SITE_GAPS)])
    return table(["site", "horizon", *(f"gap {HEADERS[key]}" for key in SITE_GAPS)], rows,
                 numeric=tuple(range(1, 2 + len(SITE_GAPS))))  # fmt: skip


def _columns(evaluation: dict[str, Any]) -> list[str]:
    sites = evaluation.get("sites") or []
    return list(dict.fromkeys(column for site in sites for column in site.get("fairness") or {}))


def fairness_section(evaluation: Document, run: dict[str, Any] | None) -> Html | None:
    """The section, or None where there is no evaluation (the utility section says so)."""
    if evaluation.data is None:
        return None
    model = ((run or {}).get("config") or {}).get("model") or {}
    columns = _columns(evaluation.data)
    if not columns:
        declared = model.get("fairness_column")
        why = (f"the sites' replies carry none for {declared} (an older fedsynth evaluated this run)" if declared
               else "the model declares no fairness_column and the evaluation named no sensitive column")  # fmt: skip
        return section("Subgroup fairness", note(f"No subgroup fairness figures: {why}; {HOW} adds them."),
                       id_="fairness")  # fmt: skip
    sites = evaluation.data.get("sites") or []
    pooled_all = (evaluation.data.get("worst") or {}).get("fairness") or {}
    parts: list[object] = [*site_query_notes(evaluation), note(EXPLAINED)]
    for column in columns:
        parts.append(tag("h3", f"Across the levels of {column}"))
        option = _option_note(column, model)
        if option is not None:
            parts.append(option)
        pooled = pooled_all.get(column)
        if pooled and pooled.get("levels"):
            horizon = pooled.get("horizon")
            at = f", calibrated at t = {horizon:g}" if horizon else ""
            caption = f"pooled over {pooled.get('sites')} site(s){at}"
            parts += [tag("p", caption, class_="meta"), _level_table(pooled)]
            if pooled.get("note"):
                parts.append(note(pooled["note"], "warn"))
            if pooled.get("sites_without"):
                parts.append(note(f"no figures for {column} from {', '.join(pooled['sites_without'])}", "warn"))
            parts += [tag("p", "each site's own gaps between the levels", class_="meta"), _site_gaps(column, sites)]
        else:  # an incomplete evaluation: no pooled figures, each site's own
            for site in sites:
                entry = (site.get("fairness") or {}).get(column) or {}
                if entry.get("levels"):
                    parts += [tag("p", f"{site.get('site', '?')}", class_="meta"), _level_table(entry)]
        parts += withheld_notes(column, sites)
    return section("Subgroup fairness", *parts, id_="fairness")
