"""Audit and budget figures drawn from a recorded real run's aggregates alone."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import matplotlib.image
import pytest

from fedsynth.privacy.plots import audit_figures, budget_figure

RECORDED = Path(__file__).parents[1] / "release" / "data" / "demo_run.tar.gz"


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("recorded")
    with tarfile.open(RECORDED) as archive:
        archive.extractall(root, filter="data")
    return {name: json.loads((root / "demo_run" / f"{name}.json").read_text()) for name in ("audit", "budget")}


def _drawn(path: Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_audit_figures_for_every_site(documents: dict[str, dict], tmp_path: Path) -> None:
    written = audit_figures(documents["audit"], tmp_path)
    assert [p.name for p in written] == ["audit_dcr.png", "audit_roc.png", "audit_anonymeter.png"]
    for path in written:
        _drawn(path)


def test_roc_with_measured_tprs_and_no_site(documents: dict[str, dict], tmp_path: Path) -> None:
    # A large site measures its TPRs (marked on the curve); an audit no site answered draws nothing.
    audit = json.loads(json.dumps(documents["audit"]))
    for attack in audit["sites"][0]["attacks"]:
        attack |= {"tpr_at_1pct_fpr": 0.02, "tpr_at_0_1pct_fpr": 0.0, "n_non_members": 1000}
    _drawn(audit_figures(audit, tmp_path)[1])
    assert audit_figures({"sites": [], "complete": False}, tmp_path / "none") == []


def test_budget_figure(documents: dict[str, dict], tmp_path: Path) -> None:
    _drawn(budget_figure(documents["budget"], tmp_path / "budget.png"))
