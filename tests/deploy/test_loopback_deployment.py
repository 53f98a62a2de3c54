"""Flower's real deployment engine on loopback: `fedsynth train` over flower-superlink + 3
flower-supernodes (TLS, SuperNode authentication), then `fedsynth audit` of that run.
`fedsynth evaluate` on this engine is the same query with another task (``query_on_loopback``):
the ServerApp's evaluation over a deployment runs in the runbook rehearsal (test_rehearsal.py).
A site lost mid-round is tested across hosts of their own in tests/deploy/test_multi_host.py.
"""

from __future__ import annotations

import json
import re

import pytest
import tomli_w

from fedsynth.deploy.processes import running_with_env
from fedsynth.model.mcm import MCM

pytestmark = pytest.mark.integration


def test_train_then_audit_over_the_deployment_engine(tmp_path) -> None:
    """`fedsynth train` on the deployment engine, then `fedsynth audit` of that run: the question
    travels to the sites as QUERY messages over TLS (no simulation engine), and every site
    answers with aggregates."""
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.model.generators import generator_digest

    document = {
        "federation": {"engine": "deployment", "rounds": 2, "min_sites": 3, "round_timeout": 300, "run_dir": "run"},
        "simulation": {"dataset": "whas500", "sites": 3},
        "site": {"privacy": {"target_epsilon": 3.0}, "training": {"local_epochs": 1}},
        "model": {"hidden": 16, "n_bins": 16},
    }
    config_path = tmp_path / "federation.toml"
    config_path.write_text(tomli_w.dumps(document))
    run_dir = tmp_path / "run"
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--config", str(config_path)])
    assert trained.exit_code == 0, trained.output
    logs = run_dir / "deployment" / "logs"
    before = {p.name: p.stat().st_size for p in logs.glob("supernode-*.log")}
    assert sorted(before) == ["supernode-site-0.log", "supernode-site-1.log", "supernode-site-2.log"]
    # Each site's long-lived ClientApp process answered both rounds (warm, as a simulation actor is).
    for site in ("site-0", "site-1", "site-2"):
        rounds = re.findall(rf"site {site} round (\d+): process (\d+),", (logs / f"superexec-{site}.log").read_text())
        assert sorted({r for r, _ in rounds}) == ["1", "2"] and len({pid for _, pid in rounds}) == 1, rounds

    audited = runner.invoke(app, ["audit", str(run_dir), "--seed", "4"])  # auto: the run's engine
    assert audited.exit_code == 0, audited.output
    audit = json.loads((run_dir / "audit.json").read_text())
    assert audit["complete"] and audit["seed"] == 4 and not audit["failures"]
    assert [s["site"] for s in audit["sites"]] == ["site-0", "site-1", "site-2"]
    assert audit["model_sha256"] == generator_digest(MCM.load(run_dir / "model"))  # the published, calibrated model
    assert 0.0 <= audit["worst"]["dcr_share_pooled"] <= 1.0 and audit["worst"]["mia_auc_upper_ci"] <= 1.0
    # Each site's SuperNode ran the query (its log grew): the answers came over the deployment engine.
    assert all((logs / name).stat().st_size > size for name, size in before.items())

    # Every process the commands started (SuperLink, SuperNodes, their SuperExec, ServerApp and
    # ClientApp processes, orphans included) inherited the federation's FLWR_HOME: none survives.
    left = running_with_env("FLWR_HOME", str(run_dir.resolve() / "deployment" / "flwr-home"))
    assert not left, f"processes of the federation outlived the command: {left}"
