"""`fedsynth demo`: federated DP training over 3 sites, then model-only samples and their quality."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app

pytestmark = pytest.mark.integration


def test_demo_trains_federated_with_dp_and_samples_from_the_global_model(tmp_path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--rounds", "2", "--epsilon", "3"])
    assert result.exit_code == 0, result.output
    budget = json.loads((out / "budget.json").read_text())
    assert [s["site"] for s in budget["sites"]] == ["site-0", "site-1", "site-2"]
    assert all(2.9 < s["epsilon_spent"] <= 3.0 for s in budget["sites"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["differentially_private"] is True and len(summary["sites"]) == 3
    assert 0.5 < summary["cindex_tstr_mean"] <= 1.0 and 0.0 <= summary["hr_in_ci_fraction"] <= 1.0
    synthetic = pd.read_csv(out / "synthetic.csv")
    assert len(synthetic) == summary["n_synthetic"] == sum(s["records"] for s in budget["sites"])
    provenance = json.loads((out / "synthetic.csv.provenance.json").read_text())
    assert provenance["differentially_private"] is True
    assert "chf all 1: True" in result.output
