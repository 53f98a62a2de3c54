"""`fedsynth budget RUN_DIR`: the report is exactly what the sites recorded, with refusals."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.data.datasets import bundled_schema
from fedsynth.server.run import RunDirectory


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
        "noise-multiplier": 1.5,
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
