"""The federated audit and evaluation of a simulation run, on Flower's simulation engine.

The ServerApp side of each query (:mod:`fedsynth.server.audit`, :mod:`fedsynth.server.evaluation`)
is the same on either engine; this module runs it over a simulation run's virtual sites.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid, ServerApp

from fedsynth.server.audit import AUDIT_FILE, run_audit
from fedsynth.server.evaluation import EVALUATION_FILE, run_evaluation
from fedsynth.server.simulation import run_on_ray
from fedsynth.server.site_queries import ON_SEPARATE_MACHINES, require_model


def on_simulated_sites(run_dir: Path, output: str, main: Callable[[Grid, int], None]) -> dict[str, Any]:
    """Run ``main(grid, n_sites)`` on Flower's simulation engine over a simulation run's virtual
    sites; return the JSON document it wrote to ``RUN_DIR/output``."""
    from fedsynth.client.app import make_client_app

    run_dir = Path(run_dir)
    site_dirs = sorted((run_dir / "sites").glob("site-*"))
    if not site_dirs:
        raise FileNotFoundError(
            f"{run_dir}/sites holds no site-* directories: the simulation engine asks a run's virtual sites. "
            + ON_SEPARATE_MACHINES
        )
    require_model(run_dir)
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Any) -> None:
        main(grid, len(site_dirs))

    run_on_ray(server_app, make_client_app(run_dir / "sites"), len(site_dirs))
    path = run_dir / output
    if not path.exists():
        raise RuntimeError(f"the federated run wrote no {path}; see the log above")
    return json.loads(path.read_text())


def audit_simulated_run(
    run_dir: Path, seed: int = 0, n: int | None = None, conditions: list[str] | None = None
) -> dict[str, Any]:
    """Run the federated audit on Flower's simulation engine over a simulation run's virtual sites."""
    return on_simulated_sites(
        run_dir,
        AUDIT_FILE,
        lambda grid, sites: run_audit(grid, run_dir, seed, expected_sites=sites, n=n, conditions=conditions),
    )


def evaluate_simulated_run(
    run_dir: Path, seed: int = 0, horizons: list[float] | None = None, fairness_columns: list[str] | None = None
) -> dict[str, Any]:
    """Run the federated evaluation on Flower's simulation engine over a simulation run's sites."""
    return on_simulated_sites(
        run_dir,
        EVALUATION_FILE,
        lambda grid, n: run_evaluation(
            grid, run_dir, seed, horizons, expected_sites=n, fairness_columns=fairness_columns
        ),
    )
