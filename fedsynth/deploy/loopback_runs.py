"""Federated runs and site queries on a loopback deployment (:class:`LoopbackFederation`).

``fedsynth train`` / ``audit`` / ``evaluate`` with ``--engine deployment`` and the demo use these:
the [simulation] partition becomes real sites, each with a registered key and a SuperNode, and
every run goes through ``flwr run`` exactly as on separate machines.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from fedsynth.data.io import write_text
from fedsynth.deploy import DeploymentError
from fedsynth.deploy.local import FINISHED, LoopbackFederation
from fedsynth.server.config import FederationConfig


def run_on_loopback(config: FederationConfig, timeout: float = 3600.0) -> dict[str, Any]:
    """Rehearse a deployment: the [simulation] partition becomes real sites, one SuperNode each.

    Every site gets a registered key and its own SuperNode; the coordinator's run goes through
    ``flwr run`` exactly as on separate machines (the effective config, CLI overrides included,
    is written to ``RUN_DIR/deployment/federation.toml`` for the ServerApp to read). Returns
    the Flower run's final status.
    """
    from fedsynth.server.resume import check_resumable
    from fedsynth.server.run import RunDirectory
    from fedsynth.server.simulation import prepare_sites

    schema, sites_root = prepare_sites(config)
    if (config.run_dir / "run.json").exists():
        check_resumable(RunDirectory(config.run_dir), config, schema)  # before any site trains
    workdir = config.run_dir / "deployment"
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "federation.toml"
    write_text(config_path, tomli_w.dumps(config.to_document()))
    return _run_on_sites(workdir, config_path, sites_root, config.simulation.sites, {}, timeout)


def _run_on_sites(
    workdir: Path, config_path: Path, sites_root: Path, n_sites: int, run_config: dict[str, str | int], timeout: float
) -> dict[str, Any]:
    """Start the SuperLink and one SuperNode per site directory, submit one Flower run, stop all."""
    threads = max(1, (os.cpu_count() or 1) // n_sites)
    with LoopbackFederation(workdir, threads_per_node=threads) as federation:
        # Registering a key is a `flwr` CLI call each (seconds of start-up): the sites' run side by side.
        with ThreadPoolExecutor(max_workers=min(4, n_sites)) as pool:
            list(pool.map(lambda i: federation.start_node(f"site-{i}", sites_root / f"site-{i}"), range(n_sites)))
        federation.wait_online()
        run_id = federation.submit(config_path, run_config=run_config)
        status = federation.wait(run_id, timeout=timeout)
        if status["status"] != f"{FINISHED}:completed":
            # The ServerApp's log (a traceback, as a rule) goes to a file the message names, not the terminal.
            log_path = workdir / "logs" / f"serverapp-run-{run_id}.log"
            write_text(log_path, federation.logs(run_id))
            raise DeploymentError(
                f"Flower run {run_id} ended {status['status']}: {status.get('status-details')}; "
                f"the ServerApp's log: {log_path} (every process's log: {workdir / 'logs'})"
            )
        return status


def query_on_loopback(
    run_dir: Path,
    task: str,
    seed: int = 0,
    horizons: list[float] | None = None,
    timeout: float = 3600.0,
    fairness_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Audit (``task="audit"``) or evaluate (``"evaluate"``) a loopback deployment run's model
    over the deployment engine; return the JSON document the ServerApp wrote to RUN_DIR.

    The same SuperLink, SuperNodes and ``flwr run`` as the run's training, with the run config
    key ``task`` set: each site receives the global weights in a QUERY message over TLS and
    replies with aggregates only, as it would on separate machines (``deploy/README.md``).
    """
    from fedsynth.server.audit import AUDIT_FILE
    from fedsynth.server.evaluation import EVALUATION_FILE
    from fedsynth.server.site_queries import ON_SEPARATE_MACHINES, require_model

    outputs = {"audit": AUDIT_FILE, "evaluate": EVALUATION_FILE}
    if task not in outputs:
        raise ValueError(f"task must be 'audit' or 'evaluate', got {task!r}")
    run_dir = Path(run_dir).resolve()
    workdir = run_dir / "deployment"
    config_path = workdir / "federation.toml"
    if not config_path.exists():
        raise FileNotFoundError(
            f"{config_path} is missing: {run_dir} was not trained on the loopback deployment engine. "
            f"{ON_SEPARATE_MACHINES}; a simulation run with --engine simulation"
        )
    require_model(run_dir)
    # The ServerApp reads the model and writes its answer where its config says; a run directory
    # moved or copied since training must be asked about here, not at the recorded path.
    config = FederationConfig.from_toml(config_path, {"federation.run_dir": str(run_dir)})
    query_path = workdir / "query.toml"
    write_text(query_path, tomli_w.dumps(config.to_document()))
    n_sites = config.simulation.sites
    run_config: dict[str, str | int] = {"task": task, "seed": seed, "expected-sites": n_sites}
    if horizons:
        run_config["horizons"] = json.dumps(horizons)
    if fairness_columns:
        run_config["fairness-columns"] = json.dumps(fairness_columns)
    output = run_dir / outputs[task]
    started = datetime.now(UTC)
    _run_on_sites(workdir, query_path, run_dir / "sites", n_sites, run_config, timeout)
    document = json.loads(output.read_text()) if output.exists() else {}
    written = datetime.fromisoformat(document["time"]) if "time" in document else None
    if written is None or written < started or document.get("seed") != seed:
        raise DeploymentError(f"the {task} run finished without writing a new {output}; see {workdir / 'logs'}")
    return dict(document)
