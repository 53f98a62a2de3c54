"""`fedsynth demo`: federated DP training over 3 sites, model-only samples, audits, evaluation,
sign-off under the default policy, a signed bundle on PASS, and the report."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import _demo_release, app, console, err_console
from fedsynth.release.keys import load_public_key
from fedsynth.release.policy import default_policy_path
from fedsynth.release.verify import verify_bundle

RECORDED = Path(__file__).parents[1] / "release" / "data" / "demo_run.tar.gz"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths and messages on one line each (rich wraps at 80 columns in a test runner)."""
    for printer in (console, err_console):
        monkeypatch.setattr(printer, "width", 1000)


@pytest.mark.integration
def test_demo_runs_the_whole_release_path(tmp_path: Path) -> None:
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
    # The release is the very sample every site audited (what `fedsynth signoff` requires).
    audited = json.loads((out / "audit.json").read_text())["sample"]
    assert {k: provenance[k] for k in ("n", "seed", "conditions")} == audited
    assert "chf all 1: True" in result.output

    # Audits and evaluation answered by every site, about this run's model.
    for name in ("audit.json", "evaluation.json"):
        document = json.loads((out / name).read_text())
        assert document["complete"] and [s["site"] for s in document["sites"]] == ["site-0", "site-1", "site-2"]
        assert str(out / name) in result.output
    # A demo board key, announced, private.
    key = out / "keys" / "board.key.pem"
    assert f"made a demo board key {key}" in result.output
    assert key.stat().st_mode & 0o777 == 0o600
    # The verdict under the default policy, each rule printed; a bundle that verifies on PASS.
    verdict = json.loads((out / "signoff.json").read_text())["verdict"]
    for rule in verdict["rules"]:
        assert rule["name"] in result.output
    if verdict["passed"]:
        assert verify_bundle(out / "release", load_public_key(out / "keys" / "board.pub.pem")).ok
        assert f"signed release bundle: {out / 'release'}" in result.output
    else:
        failed = ", ".join(r["name"] for r in verdict["rules"] if not r["passed"])
        assert f"rules that failed: {failed}" in result.output
        assert not (out / "release").exists()
    report = (out / "report.html").read_text()
    assert ("banner pass" if verdict["passed"] else "banner fail") in report
    assert report.count("<img ") >= 1 + 3 + 5 * 3  # budget, audit figures, five utility figures per site
    assert f"report: {out / 'report.html'}" in result.output


def test_demo_release_on_a_failed_verdict_names_the_rules_and_still_writes_the_report(tmp_path: Path) -> None:
    """The demo's closing steps on the recorded DP demo run, with a policy it fails (epsilon 4 > 1)."""
    with tarfile.open(RECORDED) as archive:
        archive.extractall(tmp_path, filter="data")
    run = tmp_path / "demo_run"
    policy = tmp_path / "strict.toml"
    policy.write_text(default_policy_path().read_text().replace("max_epsilon = 4.0", "max_epsilon = 1.0"))
    with console.capture() as captured:
        _demo_release(run, None, policy)
    output = captured.get()
    assert "rules that failed: max_epsilon" in output and "no release bundle was written" in output
    assert not (run / "release").exists() and (run / "keys" / "board.key.pem").exists()
    assert "banner fail" in (run / "report.html").read_text()
    # A second demo into the same directory reuses its key rather than failing on it.
    with console.capture() as captured:
        _demo_release(run, None, policy)
    assert "using the demo board key" in captured.get()
