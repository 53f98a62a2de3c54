"""The report in a real browser: Debian's headless Chromium, driven by Playwright, fully offline.

Chromium comes from the project's set-up script (`scripts/install-system-packages.sh`, which
`make test` and CI run); Playwright never downloads a browser here. The test fails, and says
how to fix it, when Chromium is missing: a skipped browser test would let CI pass without it.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedsynth.release.bundle import sign_off
from fedsynth.release.keys import load_private_key
from fedsynth.release.policy import load_policy
from fedsynth.release.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
SETUP = "run scripts/install-system-packages.sh (`make test` does it first)"
# Headless, and nothing that would reach for a network this machine does not have.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 900}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: {SETUP}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: .venv/bin/pip install -c constraints.txt -e '.[dev]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def _signed_recorded_run(recorded_run: Path, board_keys: tuple[Path, Path], policy: Path, tmp_path: Path) -> Path:
    run = Path(shutil.copytree(recorded_run, tmp_path / "run"))
    verdict, _ = sign_off(run, load_policy(policy), policy.read_text(), load_private_key(board_keys[0]))
    assert verdict.passed
    return run


def _empty_run(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.fixture(params=["recorded-signed", "current-evaluation", "missing-inputs"])
def report(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Reports of real runs: the recorded DP demo signed off (an older evaluation.json), one with a
    current evaluation (every utility figure) and an empty run directory (only notes)."""
    if request.param == "recorded-signed":
        run = _signed_recorded_run(
            request.getfixturevalue("recorded_run"),
            request.getfixturevalue("board_keys"),
            request.getfixturevalue("demo_policy_path"),
            tmp_path,
        )
    elif request.param == "current-evaluation":
        run = request.getfixturevalue("current_evaluation_run")
    else:
        run = _empty_run(tmp_path)
    return write_report(run, tmp_path / "report.html", None)


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)


def check_in_browser(browser: Any, report: Path) -> None:
    """Open ``report`` in Chromium; raise AssertionError on a console error, a fetch, or a figure not drawn."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    fetched: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: fetched.append(request.url))
    try:
        page.goto(report.as_uri(), wait_until="load")
        assert errors == []
        # Self-contained: the page itself and its embedded figures, nothing fetched from anywhere.
        assert all(url == report.as_uri() or url.startswith("data:") for url in fetched), fetched

        expected = report.read_text().count("<img ")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
        assert len(images) == expected
        assert all(complete and width > 0 and height > 0 for complete, width, height in images), images
        for element in page.query_selector_all("img"):  # each figure on screen, as a reader sees it
            pixels = _decode(element.screenshot())
            assert pixels.shape[0] > 100 and pixels.shape[1] > 300 and pixels.std() > 10

        shot = _decode(page.screenshot(full_page=True))
        height, width, _ = shot.shape
        assert width == VIEWPORT["width"] and height >= VIEWPORT["height"]
        assert shot.std() > 10  # text, tables and banners drawn: not a blank page
        if expected:
            assert height > 3000  # every section and figure laid out, not just the banner
    finally:
        page.close()


def test_report_renders_in_chromium_without_errors_and_every_figure_drawn(browser: Any, report: Path) -> None:
    check_in_browser(browser, report)


@pytest.mark.parametrize(
    "fault",
    [
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="truncated PNG">',
        '<img src="file:///nonexistent/figure.png" alt="not embedded">',
        "<script>undefinedFunction();</script>",
    ],
    ids=["broken-figure", "external-figure", "script-error"],
)
def test_the_browser_check_catches_a_broken_report(browser: Any, tmp_path: Path, fault: str) -> None:
    """The check above is not vacuous: a figure that does not decode, a figure fetched from outside
    the file, or a script error each fail it."""
    path = write_report(_empty_run(tmp_path), tmp_path / "report.html", None)
    path.write_text(path.read_text().replace("</body>", fault + "</body>"))
    with pytest.raises(AssertionError):
        check_in_browser(browser, path)


def _real_rows() -> tuple[Any, Any, Any]:
    """The real rows current_evaluation_run's site evaluated (its fixture's split)."""
    from fedsynth.data.datasets import load_dataset
    from fedsynth.data.split import train_holdout_split

    frame, schema = load_dataset("whas500")
    train, holdout = train_holdout_split(frame, 0.2, seed=0)
    return train, holdout, schema


def _group(rows: Any, name: str) -> Any:
    if name == "all":
        return rows
    column, level = name.split("=")
    return rows[rows[column].astype(str) == level]


def small_groups_in_evaluation(site: dict[str, Any], run: Path) -> list[str]:
    """Every released real aggregate of a figure that rests on fewer real rows than the minimum."""
    import pandas as pd

    from fedsynth.evaluation.calibration import RISK_CELL_EDGES, predicted_risk
    from fedsynth.evaluation.fidelity import small_indicator_columns
    from fedsynth.evaluation.utility import design_matrix, utility_report
    from fedsynth.suppression import MIN_CELL_ROWS, MIN_GROUP_ROWS

    train, holdout, schema = _real_rows()
    found = []
    fidelity = site["fidelity"]
    for curve in fidelity["survival"]:  # KM: every released point has >= MIN_GROUP_ROWS at risk
        times = _group(train, curve["group"])[schema.time_column].to_numpy(float)
        for t, value in zip(curve["grid"], curve["real_survival"], strict=True):
            if value is not None and (times >= t).sum() < MIN_GROUP_ROWS:
                found.append(f"KM {curve['group']} at t={t:g}: {(times >= t).sum()} at risk")
    for name, entry in fidelity["histograms"].items():  # marginal cells
        found += [f"histogram {name} cell {i}" for i, share in enumerate(entry["real"])
                  if share is not None and round(share * len(train)) < MIN_CELL_ROWS]  # fmt: skip
    design = design_matrix(train, schema)
    small = set(small_indicator_columns(design))
    matrices = fidelity["correlation_matrices"]
    for i, row in enumerate(matrices["real"]):  # correlations: no rare indicator's entry released
        for j, value in enumerate(row):
            if value is not None and {matrices["columns"][i], matrices["columns"][j]} & small:
                found.append(f"correlation {matrices['columns'][i]} x {matrices['columns'][j]}")
    found += [f"hazard ratio {name}" for name in site["hazard_ratios"]["covariates"] if name in small]
    # Calibration: the real-only model refitted as the site fits it; each released point's cell.
    synthetic = pd.read_csv(run / "synthetic.csv")
    risk = predicted_risk(utility_report(train, holdout, synthetic, schema).real_model,
                          design_matrix(holdout, schema), site["horizons"][0])  # fmt: skip
    cells = np.histogram(risk, RISK_CELL_EDGES)[0]
    curve = site["models"]["trtr"]["calibration"][0]["overall"]["curve"]
    found += [f"calibration point {i}" for i, (value, count) in enumerate(zip(curve, cells, strict=True))
              if value is not None and count < MIN_CELL_ROWS]  # fmt: skip
    return found


@pytest.mark.slow
def test_no_real_data_figure_shows_a_group_under_the_minimum_and_the_withheld_labels_appear(
    browser: Any, current_evaluation_run: Path, tmp_path: Path
) -> None:
    import json

    from fedsynth.privacy.plots import withheld_holdout_cells
    from fedsynth.release.report_utility import withheld_labels

    document = json.loads((current_evaluation_run / "evaluation.json").read_text())
    site = document["sites"][0]
    assert small_groups_in_evaluation(site, current_evaluation_run) == []
    # The check is not vacuous: the cut tail of the KM curve put back is found.
    leaked = json.loads(json.dumps(site))
    leaked["fidelity"]["survival"][0]["real_survival"][-1] = 0.5
    assert [f for f in small_groups_in_evaluation(leaked, current_evaluation_run) if f.startswith("KM all")]
    labels = withheld_labels(site)
    # WHAS500 train (400 rows): the KM grid ends past the last 20 at risk; the holdout (100 rows)
    # leaves some calibration points with fewer than 5 rows near them; some histogram cells are small.
    assert "fewer than 20 real rows at risk" in labels["km"]
    assert "curve points withheld: fewer than 5 real holdout rows near them" in labels["calibration"]
    assert any(entry["withheld_cells"] for entry in site["fidelity"]["histograms"].values())
    audit = json.loads((current_evaluation_run / "audit.json").read_text())
    assert sum(withheld_holdout_cells(s["nearest_neighbour"]) for s in audit["sites"]) > 0

    report = write_report(current_evaluation_run, tmp_path / "report.html", None)
    check_in_browser(browser, report)
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(report.as_uri(), wait_until="load")
        text = page.inner_text("body")
    finally:
        page.close()
    for label in labels.values():  # each figure's caption says what its site withheld, as a reader sees it
        assert label in text, label
    assert "holdout cells withheld (hatched): fewer than 5 rows" in text
    assert "A real cell with fewer than 5 rows is withheld by the site and drawn hatched" in text
