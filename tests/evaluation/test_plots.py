"""Figures drawn from the aggregates alone: KM panels, forest plot, marginals, correlations, calibration."""

from __future__ import annotations

import matplotlib.image

from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.plots import evaluation_figures
from fedsynth.evaluation.site_evaluation import evaluate_synthetic


def test_figures_are_drawn_from_the_evaluation_document(whas500, tmp_path) -> None:
    frame, schema = whas500
    train, holdout = train_holdout_split(frame, 0.5, 0)
    synthetic = holdout.assign(lenfol=holdout["lenfol"] * 1.5)  # visibly different curves
    document = {"sites": [{"site": "site-0", **evaluate_synthetic(train, holdout, synthetic, schema, [365.0])}]}
    written = evaluation_figures(document, tmp_path / "plots", schema)
    assert [p.name for p in written] == [
        "km_site-0.png",
        "hazard_ratios_site-0.png",
        "marginals_site-0.png",
        "correlations_site-0.png",
        "calibration_site-0.png",
    ]
    for path in written:
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas
