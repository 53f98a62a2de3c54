"""Flower's real deployment engine on loopback: flower-superlink + 3 flower-supernodes over TLS
with SuperNode authentication, `flwr run`, a site killed with SIGKILL in the middle of a round.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest
import tomli_w

from fedsynth.client.app import open_site
from fedsynth.deploy.local import LoopbackFederation, _children, is_running
from fedsynth.model.mcm import MCM
from fedsynth.server.config import FederationConfig
from fedsynth.server.run import RunDirectory
from fedsynth.server.simulation import prepare_sites
from tests.client.rdp_reference import independent_epsilon

pytestmark = pytest.mark.integration

ROUNDS = 2  # the kill lands in the last round; the run still completes with the two live sites


def _ledger_rounds(site_dir: Path) -> list[int]:
    path = site_dir / "state" / "ledger.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            # The training rounds; round 0 is the run's marginal release, made before round 1.
            return [r[0] for r in db.execute("SELECT round FROM spend WHERE round > 0 ORDER BY id")]
        except sqlite3.OperationalError:  # the site has not created its tables yet
            return []


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def federation_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deployment")
    document = {
        "federation": {
            "engine": "deployment",
            "rounds": ROUNDS,
            "min_sites": 2,
            # The killed site's round-2 reply never comes: the round ends at this timeout (or when
            # the SuperLink marks the node offline, after two missed 30-s heartbeats).
            "round_timeout": 45,
            "run_dir": "run",
            "schema": "run/sites/site-0/schema.toml",
        },
        "simulation": {"dataset": "whas500", "sites": 3},
        "site": {"privacy": {"target_epsilon": 3.0}, "training": {"local_epochs": 1}},
        "model": {"hidden": 16, "n_bins": 16},
    }
    path = root / "federation.toml"
    path.write_text(tomli_w.dumps(document))
    prepare_sites(FederationConfig.from_toml(path))  # three site directories, one per SuperNode
    return path


def test_tls_node_auth_and_a_site_killed_mid_round(federation_config, tmp_path) -> None:
    config = FederationConfig.from_toml(federation_config)
    sites = config.run_dir / "sites"
    with LoopbackFederation(tmp_path / "deployment") as federation:
        for i in range(3):
            federation.start_node(f"site-{i}", sites / f"site-{i}")
        # A node whose key was never registered is refused and exits; it never comes online.
        intruder = federation.start_node("intruder", sites / "site-0", register=False, max_retries=1)
        federation.wait_online(["site-0", "site-1", "site-2"])
        assert intruder.process.wait(timeout=60) != 0
        assert "Failed to activate SuperNode" in intruder.log_path.read_text()
        assert len(federation.online_nodes()) == 3

        run_id = federation.submit(federation_config)
        # Kill site-2 with SIGKILL once it has reserved its round-2 spend, i.e. mid-round.
        _wait_for(lambda: _ledger_rounds(sites / "site-2") == [1, 2], 300, "site-2 to start round 2")
        federation.kill_node("site-2")
        status = federation.wait(run_id, timeout=600)
        assert status["status"] == "finished:completed", federation.logs(run_id)
        executors = [node.executor for node in federation.nodes.values() if node.executor is not None]
        assert len(executors) == 4  # one warm SuperExec per SuperNode, the intruder's included
        spawned = [p for e in executors for p in [e.pid, *_children(e.pid)]]
        assert len(spawned) > len(executors), "the SuperExecs' forkserver and ClientApp processes were not found"
    assert not [pid for pid in spawned if is_running(pid)], "a process outlived the federation"
    assert all(node.process.poll() is not None for node in federation.nodes.values())

    run = RunDirectory(config.run_dir)
    assert run.latest_checkpoint().round == ROUNDS
    records = run.budget_records()
    by_round = {r: {x["site"]: x["status"] for x in records if x["round"] == r} for r in range(1, ROUNDS + 1)}
    assert by_round[1] == {"site-0": "ok", "site-1": "ok", "site-2": "ok"}
    for later in range(2, ROUNDS + 1):  # the run went on with the two live sites
        assert by_round[later].get("site-0") == "ok" and by_round[later].get("site-1") == "ok"
        assert by_round[later].get("site-2") != "ok"
    # The killed site's ledger still holds its round-2 reservation: spend is never under-counted.
    assert _ledger_rounds(sites / "site-2") == [1, 2]
    # Restart the killed site: it reports round 1 plus the whole interrupted round 2 (at least
    # what it actually spent), recomputed by Opacus' RDP from the stored history.
    restarted = open_site(sites / "site-2")
    entries = restarted.ledger.entries()
    assert restarted.ledger.epsilon() == pytest.approx(
        independent_epsilon(restarted.ledger.history(), restarted.ledger.target_delta), abs=1e-6
    )
    assert restarted.ledger.epsilon() == pytest.approx(entries[-1].epsilon_after)
    assert entries[-1].epsilon_after > entries[0].epsilon_after
    assert _ledger_rounds(sites / "site-0") == list(range(1, ROUNDS + 1))
    model = MCM.load(config.run_dir / "model")
    assert model.differentially_private_ and len(model.sample(20, seed=3)) == 20


def test_train_then_audit_and_evaluate_over_the_deployment_engine(tmp_path) -> None:
    """`fedsynth train` on the deployment engine, then `fedsynth audit` / `evaluate` of that run:
    the questions travel to the sites as QUERY messages over TLS (no simulation engine), and
    every site answers with aggregates."""
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.model.mcm import generator_digest

    document = {
        "federation": {"engine": "deployment", "rounds": 1, "min_sites": 3, "round_timeout": 300, "run_dir": "run"},
        "simulation": {"dataset": "whas500", "sites": 3},
        # A site answers only at horizons it declares: the evaluation below asks for this one.
        "site": {"privacy": {"target_epsilon": 3.0, "evaluation_horizons": [365.0]}, "training": {"local_epochs": 1}},
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

    audited = runner.invoke(app, ["audit", str(run_dir), "--seed", "4"])  # auto: the run's engine
    assert audited.exit_code == 0, audited.output
    audit = json.loads((run_dir / "audit.json").read_text())
    assert audit["complete"] and audit["seed"] == 4 and not audit["failures"]
    assert [s["site"] for s in audit["sites"]] == ["site-0", "site-1", "site-2"]
    assert audit["model_sha256"] == generator_digest(MCM.load(run_dir / "model"))  # the published, calibrated model
    assert 0.0 <= audit["worst"]["dcr_share_pooled"] <= 1.0 and audit["worst"]["mia_auc_upper_ci"] <= 1.0
    # Each site's SuperNode ran the query (its log grew): the answers came over the deployment engine.
    assert all((logs / name).stat().st_size > size for name, size in before.items())

    evaluated = runner.invoke(app, ["evaluate", str(run_dir), "--engine", "deployment", "--horizon", "365"])
    assert evaluated.exit_code == 0, evaluated.output
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["complete"] and evaluation["horizons"] == [365.0]
    assert [s["site"] for s in evaluation["sites"]] == ["site-0", "site-1", "site-2"]
    # Every process the commands started (SuperLink, SuperNodes, their SuperExec, ServerApp and
    # ClientApp processes, orphans included) inherited the federation's FLWR_HOME: none survives.
    home = f"FLWR_HOME={run_dir.resolve() / 'deployment' / 'flwr-home'}".encode()
    started = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and home in (entry / "environ").read_bytes().split(b"\0"):
                started.append(int(entry.name))
    assert not [pid for pid in started if is_running(pid)], "a process of the federation outlived the command"
