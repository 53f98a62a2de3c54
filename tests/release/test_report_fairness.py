"""The report's subgroup fairness section: the pooled figures per level and their gaps, each site's
gaps, a note for every withheld figure or count, the fairness option the model was trained with,
and a note saying how to get the figures where the evaluation has none."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from fedsynth.evaluation.pooled_fairness import pool_fairness
from fedsynth.release.report import write_report
from fedsynth.release.report_fairness import fairness_section
from fedsynth.release.rules import EVALUATION, Document


def _text(markup: str) -> str:
    """The words a reader sees: tags dropped (cells separated by |), entities decoded."""
    return html.unescape(re.sub(r"\|+", "|", re.sub(r"<[^>]+>", "|", markup)))


def _entry(levels: dict[str, dict[str, Any]], not_estimable: dict | None = None) -> dict[str, Any]:
    gaps = {"cindex_tstr": 0.1, "event_rate_synthetic": 0.05}
    return {"horizon": 365.0, "overall": {"cindex_tstr": 0.7}, "levels": levels,
            "not_estimable": not_estimable or {}, "gaps": gaps}  # fmt: skip


MEN = {"n_train": 120, "n_holdout": 60, "n_synthetic": 150, "event_rate_real": 0.4, "event_rate_synthetic": 0.45,
       "cindex_trtr": 0.78, "cindex_tstr": 0.74, "cindex_augmented": 0.77, "calibration_tstr": 0.03}  # fmt: skip
WOMEN = {"n_train": 80, "n_holdout": 40, "n_synthetic": 50, "event_rate_real": 0.55, "event_rate_synthetic": 0.5,
         "cindex_trtr": 0.7, "cindex_tstr": 0.64, "cindex_augmented": 0.69, "calibration_tstr": -0.02}  # fmt: skip
SMALL = {"n_train": None, "n_holdout": None, "n_synthetic": 9}
TOO_FEW = {figure: "fewer than 20 holdout rows" for figure in ("cindex_tstr", "cindex_augmented")}


def _sites() -> list[dict[str, Any]]:
    return [
        {"site": "site-0", "n_holdout": 100, "fairness": {"gender": _entry({"0": MEN, "1": WOMEN})}},
        {"site": "site-1", "n_holdout": 60,
         "fairness": {"gender": _entry({"0": {**MEN, "n_train": None, "n_holdout": None}, "1": SMALL},
                                       {"1": TOO_FEW})}},
    ]  # fmt: skip


def test_the_section_shows_the_pooled_figures_gaps_and_what_each_site_withheld() -> None:
    sites = _sites()
    document = Document(
        EVALUATION, {"sites": sites, "complete": True, "worst": {"fairness": pool_fairness(sites)}}, None
    )
    run = {"config": {"model": {"fairness_column": "gender", "fairness_weight": 1.0, "fairness_shares": [0.5, 0.5]}}}
    markup = fairness_section(document, run)
    assert markup is not None and markup.startswith('<section id="fairness"><h2>Subgroup fairness</h2>')
    text = _text(markup)
    assert "Across the levels of gender" in text and "pooled over 2 site(s), calibrated at t = 365" in text
    assert "trained with the fairness option on gender: fairness_weight = 1, declared level shares [0.5, 0.5]" in text
    # site-1 withheld its counts (its level 1 is small), so its level-0 figures have no weight and
    # its real shares are unknown: site-0's figures and real shares alone; synthetic counts are summed.
    assert "|0|120 + withheld at 1 site(s)|0.6|0.836|0.4|0.45|0.78|0.74|0.77|too few rows|0.03|too few rows|" in text
    assert "|1|80 + withheld at 1 site(s)|0.4|0.164|0.55|0.5|0.7|0.64|0.69|too few rows|-0.02|too few rows|" in text
    assert "|gap (max − min)|0.15|0.05|0.08|0.1|0.08|n/a|0.05|n/a|" in text  # empty cells: one | here
    assert "|site-0|365|0.1|n/a|n/a|0.05|n/a|" in text  # each site's own gaps
    assert "gender = 1: fewer than 20 holdout rows, at site-1 (C TSTR, C augmented)" in text
    assert "gender = 0: real training and holdout row count withheld (under 5 rows, or withheld with" in text
    assert text.count("row count withheld") == 2  # one note per level, not one per count


def test_an_incomplete_evaluation_shows_each_sites_own_figures() -> None:
    sites = _sites()
    document = Document(EVALUATION, {"sites": sites, "complete": False, "worst": None, "failures": []}, None)
    text = _text(fairness_section(document, None) or "")
    assert "evaluation.json is incomplete" in text and "pooled over" not in text
    assert "|site-0|" in text and "|site-1|" in text and "|1|withheld|n/a|n/a|too few rows|" in text


def test_without_figures_the_section_says_how_to_get_them() -> None:
    document = Document(EVALUATION, {"sites": [{"site": "site-0"}], "complete": True, "worst": {}}, None)
    text = _text(fairness_section(document, None) or "")
    assert "the model declares no fairness_column and the evaluation named no sensitive column" in text
    assert "`fedsynth evaluate RUN_DIR --fairness-column NAME` adds them" in text
    older = _text(fairness_section(document, {"config": {"model": {"fairness_column": "gender"}}}) or "")
    assert "carry none for gender (an older fedsynth evaluated this run)" in older
    assert fairness_section(Document(EVALUATION, None, "evaluation.json is missing"), None) is None


def test_the_report_carries_the_section_after_survival_utility(demo_run: Path) -> None:
    from fedsynth.server.evaluation import worst_over_sites

    evaluation = json.loads((demo_run / "evaluation.json").read_text())
    for site in evaluation["sites"]:
        site["fairness"] = {"gender": _entry({"0": MEN, "1": WOMEN})}
    evaluation["worst"] = worst_over_sites(evaluation["sites"])
    (demo_run / "evaluation.json").write_text(json.dumps(evaluation))
    text = write_report(demo_run, demo_run / "report.html", None).read_text()
    assert text.index("<h2>Survival utility") < text.index("<h2>Subgroup fairness") < text.index("<h2>What was")
    assert "pooled over 3 site(s)" in text and "|0|360|" in _text(text)  # 3 sites × 120 real rows
