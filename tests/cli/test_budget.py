"""`fedsynth budget RUN_DIR`: the report is exactly what the sites recorded, with refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.data.datasets import bundled_schema
from fedsynth.server.budget import budget_report
from fedsynth.server.run import RunDirectory
from tests.cli.fresh_interpreter import run_in_fresh_interpreter


def _record(site: str, round_: int, epsilon: float, status: str = "ok") -> dict:
    return {
        "round": round_,
        "node_id": 7,
        "time": "t",
        "status": status,
        "site": site,
        "num-examples": 100,
        "epsilon": epsilon,
        "target-epsilon": 2.0,
        "delta": 1e-3,
        "noise-multiplier": 3.0,
        "sample-rate": 0.25,
        "steps": 8,
        "train-loss": 2.0,
    }


def test_budget_report_from_recorded_rounds(tmp_path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", bundled_schema("whas500"), {})
    run.append_budget([_record("a", 1, 1.2), _record("b", 1, 0.9)])
    run.append_budget(
        [
            _record("a", 2, 1.9),
            {
                "round": 2,
                "node_id": 9,
                "time": "t",
                "status": "error",
                "reason": "refused: round 2 of run 'r1' would raise ...",
            },
        ]
    )
    result = CliRunner().invoke(app, ["budget", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "budget.json").read_text())
    a, b = report["sites"]
    assert (a["site"], a["epsilon_spent"], a["steps"], a["remaining_epsilon"]) == ("a", 1.9, 16, 2.0 - 1.9)
    assert [r["epsilon"] for r in a["rounds"]] == [1.2, 1.9]
    assert (b["epsilon_spent"], b["steps"]) == (0.9, 8)
    assert report["refusals"][0]["reason"].startswith("refused: round 2")
    assert (tmp_path / "run" / "budget.png").stat().st_size > 1000
    assert "refused: round 2" in result.output


def test_budget_of_a_non_run_directory_is_a_clear_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["budget", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a fedsynth run directory" in result.output


def test_a_site_whose_ledger_was_reset_mid_run_is_reported_at_its_largest_and_out_of_budget(tmp_path) -> None:
    """The defect as found: a deleted ledger restarted its figures and the run read 'within budget'."""
    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", bundled_schema("whas500"), {})
    # Rounds of (noise 3.0, q 0.25, 8 steps) compose to 0.76, 1.10, 1.36, 1.59, 1.80, 2.00, 2.18.
    before_reset = [0.7622, 1.0952, 1.3623, 1.5946]
    after_reset = [0.7622, 1.0952, 1.3623]  # the site's ledger was deleted after round 4
    run.append_budget([_record("a", i + 1, eps) for i, eps in enumerate(before_reset + after_reset)])
    run.append_budget([_record("b", 1, 0.7622)])
    result = CliRunner().invoke(app, ["budget", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "budget.json").read_text())
    a, b = report["sites"]
    assert a["epsilon_max_reported"] == 1.5946
    # Seven rounds were trained: they compose to 2.18 > 2, whatever the reset ledger says.
    assert a["epsilon_spent"] == a["epsilon_composed_from_record"] == pytest.approx(2.179, abs=1e-3)
    assert a["within_budget"] is False and a["remaining_epsilon"] == 0.0
    assert "fell at round(s) 5" in a["problems"][0] and "exceeds the target 2" in a["problems"][1]
    assert b["within_budget"] is True and b["problems"] == []
    assert report["within_budget"] is False
    assert "a: NOT within budget" in result.output


def test_the_largest_epsilon_ever_reported_is_spent_even_if_the_record_composes_to_less(tmp_path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", bundled_schema("whas500"), {})
    # A site whose ledger holds earlier runs reports more than this run's rounds compose to.
    run.append_budget([_record("a", 1, 2.5), _record("b", 1, 1.0)])
    report = budget_report(tmp_path / "run")
    a, b = report["sites"]
    assert (a["epsilon_spent"], a["within_budget"], b["within_budget"]) == (2.5, False, True)
    assert a["problems"] == ["epsilon 2.5000 exceeds the target 2"]
    assert report["within_budget"] is False


def test_the_marginal_release_is_composed_into_the_sites_epsilon(tmp_path) -> None:
    """Round 0 (mechanism "marginals", one step at q = 1) counts in the composed epsilon, not in the DP-SGD figures."""
    from fedsynth.client.rdp import rdp_epsilon
    from tests.client.rdp_reference import independent_epsilon

    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", bundled_schema("whas500"), {})
    marginal = (6.0, 1.0, 1)
    after_marginal = rdp_epsilon([marginal], 1e-3)
    release = {
        "round": 0, "mechanism": "marginals", "node_id": 7, "time": "t", "status": "ok", "site": "a",
        "epsilon": after_marginal, "epsilon-step": after_marginal, "target-epsilon": 2.0, "delta": 1e-3,
        "noise-multiplier": 6.0, "sample-rate": 1.0, "steps": 1,
    }  # fmt: skip
    # The site's ledger reports everything composed; here too little, so the report must compose itself.
    run.append_budget([release, _record("a", 1, after_marginal)])
    result = CliRunner().invoke(app, ["budget", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    (a,) = json.loads((tmp_path / "run" / "budget.json").read_text())["sites"]
    expected = independent_epsilon([marginal, (3.0, 0.25, 8)], 1e-3)
    assert a["epsilon_composed_from_record"] == pytest.approx(expected, abs=1e-6)
    assert a["epsilon_spent"] == pytest.approx(expected, abs=1e-6)
    assert (a["noise_multiplier"], a["sample_rate"], a["steps"], a["records"]) == (3.0, 0.25, 8, 100)
    assert a["marginals"] == [{"noise_multiplier": 6.0, "epsilon_step": after_marginal, "epsilon": after_marginal}]
    assert [r["round"] for r in a["rounds"]] == [1]  # the training rounds; the release is listed apart
    assert "marginal tables: one Gaussian step (noise 6.000" in result.output


def test_budget_reads_a_run_without_loading_torch_and_reports_what_it_reports_in_process(tmp_path) -> None:
    # A privacy officer asks for it often; reading the records needs no model, so no torch start-up.
    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", bundled_schema("whas500"), {})
    run.append_budget([_record("a", 1, 1.2), _record("b", 1, 0.9)])
    output, imported = run_in_fresh_interpreter(["budget", str(tmp_path / "run")])
    assert imported == [], f"`fedsynth budget` imported {imported}"
    assert "NOT within budget" not in output
    assert json.loads((tmp_path / "run" / "budget.json").read_text()) == json.loads(
        json.dumps(budget_report(tmp_path / "run"))
    )
