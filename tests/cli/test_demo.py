"""`fedsynth demo`: federated DP training over 3 sites, model-only samples, audits, evaluation,
sign-off under the default policy, a signed bundle on PASS, and the report; quiet output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console

from fedsynth.release.keys import load_public_key
from fedsynth.release.policy import default_policy_path
from fedsynth.release.verify import verify_bundle
from fedsynth.workflows.demo import DEMO_MARKER, DemoDirectoryError, DemoOptions, prepare_run_dir
from fedsynth.workflows.demo_output import DemoReporter, verdict_line, verdict_table
from fedsynth.workflows.demo_steps import release_and_report

RECORDED = Path(__file__).parents[1] / "release" / "data" / "demo_run.tar.gz"
MAX_LINES = 60  # issue 22: `make demo` prints at most 60 lines
# What Flower, Ray, Opacus, anonymeter and Python's warnings print: none of it may reach the terminal.
LIBRARY_LINE = re.compile(
    r"\b(DEBUG|INFO|WARNING|ERROR)\b|Warning\b|warnings\.warn|DEPRECATED|cannot be trusted|\(pid=|raylet|Traceback"
)
VERDICT_LINE = re.compile(r"^verdict (PASS|FAIL|INCONCLUSIVE)\b")  # the outcome words as printed


@pytest.mark.integration
def test_demo_runs_the_whole_release_path_quietly_and_passes(tmp_path: Path) -> None:
    """A real run as `make demo` starts it (its defaults: FLChain, 3 sites, epsilon 4; a terminal
    80 columns wide). The default policy PASSes it and the signed bundle verifies."""
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "fedsynth.cli", "demo", "-o", str(out)]
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = output.splitlines()
    assert len(lines) <= MAX_LINES, output
    assert all(len(line) <= 80 for line in lines), output
    assert not [line for line in lines if LIBRARY_LINE.search(line)], output
    verdict_lines = [m.group(1) for m in map(VERDICT_LINE.match, lines) if m]
    assert len(verdict_lines) == 1, output

    budget = json.loads((out / "budget.json").read_text())
    assert [s["site"] for s in budget["sites"]] == ["site-0", "site-1", "site-2"]
    assert all(3.9 < s["epsilon_spent"] <= 4.0 for s in budget["sites"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["differentially_private"] is True and len(summary["sites"]) == 3
    assert 0.5 < summary["cindex_tstr_mean"] <= 1.0 and 0.0 <= summary["hr_in_ci_fraction"] <= 1.0
    synthetic = pd.read_csv(out / "synthetic.csv")
    assert len(synthetic) == summary["n_synthetic"] == sum(s["records"] for s in budget["sites"])
    provenance = json.loads((out / "synthetic.csv.provenance.json").read_text())
    assert provenance["differentially_private"] is True
    # The release is the very sample every site audited (what `fedsynth signoff` requires).
    assert {k: provenance[k] for k in ("n", "seed", "conditions")} == json.loads((out / "audit.json").read_text())[
        "sample"
    ]
    assert re.search(r"\w+ all \w+: True", output)  # the conditional sample held its condition
    for name in ("audit.json", "evaluation.json"):
        document = json.loads((out / name).read_text())
        assert document["complete"] and [s["site"] for s in document["sites"]] == ["site-0", "site-1", "site-2"]
    # Library output went to the run's log, and each phase's time was kept.
    assert "run_simulation" in (out / "logs" / "demo.log").read_text()
    timings = json.loads((out / "logs" / "demo-timings.json").read_text())
    assert set(timings) == {"training", "quality", "audit", "evaluation", "sign-off", "report"}
    key = out / "keys" / "board.key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    verdict = json.loads((out / "signoff.json").read_text())["verdict"]
    assert verdict_lines == ["PASS"] and verdict["passed"], output
    for rule in verdict["rules"]:
        assert rule["name"][:20] in output
    assert verify_bundle(out / "release", load_public_key(out / "keys" / "board.pub.pem")).ok
    report = (out / "report.html").read_text()
    assert report.count("<img ") >= 1 + 3 + 5 * 3  # budget, audit figures, five utility figures per site

    # A rerun into the same directory replaces the demo's own previous run (no "already exists"):
    # everything the run wrote goes, keys and signed bundle included, and a new marker is made.
    marker = (out / DEMO_MARKER).read_text()
    assert prepare_run_dir(out) is True
    assert [p.name for p in out.iterdir()] == [DEMO_MARKER] and (out / DEMO_MARKER).read_text() != marker


def test_the_demo_replaces_only_a_run_directory_it_made(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    assert prepare_run_dir(fresh) is False and (fresh / DEMO_MARKER).is_file()
    (fresh / "audit.json").write_text("{}")
    assert prepare_run_dir(fresh) is True and not (fresh / "audit.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_run_dir(empty) is False
    foreign = tmp_path / "someone-elses"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DemoDirectoryError, match="was not made by `fedsynth demo`"):
        prepare_run_dir(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_the_cli_refuses_a_foreign_directory_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedsynth.cli import app

    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "data.csv").write_text("a\n1\n")
    result = CliRunner().invoke(app, ["demo", "-o", str(foreign)])
    assert result.exit_code == 2 and "was not made by `fedsynth demo`" in result.output
    assert sorted(p.name for p in foreign.iterdir()) == ["data.csv"]


def _rule(name: str, value: object, outcome: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, value=value, threshold="<= 0.05 (a long threshold text)", outcome=outcome,
                           passed=outcome == "PASS", reason="why")  # fmt: skip


def test_the_verdict_fits_80_columns_and_names_each_outcome() -> None:
    rules = [_rule("fidelity_worst_column_ks_upper_limit", 0.1234567, "INCONCLUSIVE"),
             _rule("max_epsilon", 3.99, "PASS"), _rule("mean_ks", 0.3, "FAIL")]  # fmt: skip
    verdict = SimpleNamespace(policy="fedsynth default", rules=rules, outcome="FAIL", passed=False)
    console = Console(width=80, record=True)
    console.print(verdict_table(verdict))
    console.print(verdict_line(verdict))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "INCONCLUSIVE" in text and "verdict FAIL (mean_ks)" in text
    inconclusive = SimpleNamespace(policy="p", rules=rules[:2], outcome="INCONCLUSIVE", passed=False)
    console = Console(width=80, record=True)
    console.print(verdict_line(inconclusive))
    assert "verdict INCONCLUSIVE (fidelity_worst_column_ks_upper_limit)" in console.export_text()


def test_demo_release_on_a_failed_verdict_names_the_rules_and_still_writes_the_report(tmp_path: Path) -> None:
    """The demo's closing steps on the recorded DP demo run, with a policy it fails (epsilon 4 > 1)."""
    with tarfile.open(RECORDED) as archive:
        archive.extractall(tmp_path, filter="data")
    run = tmp_path / "demo_run"
    policy = tmp_path / "strict.toml"
    policy.write_text(default_policy_path().read_text().replace("max_epsilon = 4.0", "max_epsilon = 1.0"))
    documents = {name: json.loads((run / f"{name}.json").read_text()) for name in ("audit", "evaluation")}
    console = Console(width=80, record=True)
    options = DemoOptions(output=run, policy=policy)
    outcome, bundle, report = release_and_report(options, run, documents, DemoReporter(console))
    output = console.export_text()
    assert outcome == "FAIL" and bundle is None
    assert re.search(r"verdict FAIL \([^)]*max_epsilon", output) and "no release bundle" in output
    assert not (run / "release").exists() and (run / "keys" / "board.key.pem").exists()
    assert "banner fail" in report.read_text()
