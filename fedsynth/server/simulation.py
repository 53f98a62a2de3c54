"""Flower's simulation engine (Ray backend) with virtual sites partitioned from one table.

Each virtual site gets a directory like a real hospital's: its partition of the data,
its ``site.toml`` (the federation's ``[site]`` defaults) and the public schema. The sites
then run exactly the ClientApp code the deployment engine runs.
"""

from __future__ import annotations

from pathlib import Path

import tomli_w
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from fedsynth.client.app import SCHEMA_FILE, SITE_FILE, make_client_app
from fedsynth.data.io import write_table, write_text
from fedsynth.data.schema import Schema
from fedsynth.server.app import make_server_app
from fedsynth.server.config import FederationConfig
from fedsynth.server.library_output import library_output_to
from fedsynth.server.simulated_sites import (  # noqa: F401 (partition and the table loader: used from here)
    SITE_DATA,
    SITES,
    check_simulated_sites,
    load_simulation_table,
    partition,
    site_directory,
)

TRAIN_LOG = "logs/train.log"


def prepare_sites(config: FederationConfig, source: str = "the federation config") -> tuple[Schema, Path]:
    """Write one directory per virtual site under RUN_DIR/sites; return the schema and that root.

    Everything is checked first (:func:`check_simulated_sites`): a refused set-up writes nothing.
    """
    checked = check_simulated_sites(config, source)
    for index, (document, table) in enumerate(zip(checked.documents, checked.tables, strict=True)):
        site_dir = site_directory(config.run_dir, index)
        site_dir.mkdir(parents=True, exist_ok=True)
        data_path = site_dir / SITE_DATA
        if not data_path.exists():
            write_table(table, data_path)
        write_text(site_dir / SITE_FILE, tomli_w.dumps(document))
        write_text(site_dir / SCHEMA_FILE, checked.schema.to_toml())
    return checked.schema, config.run_dir / SITES


def run_on_ray(server_app: ServerApp, client_app: ClientApp, sites: int, cpus_per_site: float = 1.0) -> None:
    """Flower's simulation engine (Ray backend) with quiet workers: one launch for training and audits."""
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=sites,
        backend_name="ray",
        backend_config={
            "client_resources": {"num_cpus": cpus_per_site, "num_gpus": 0.0},
            "init_args": {"logging_level": "error", "log_to_driver": False},
        },
    )


def simulate(config: FederationConfig, source: str = "the federation config") -> Path:
    """Run the federation on Flower's simulation engine; returns the run directory.

    The set-up is checked before anything is written (``source`` names the config in refusals);
    Flower's and Ray's output goes to ``RUN_DIR/logs/train.log``, not the terminal.
    """
    schema, sites_root = prepare_sites(config, source)  # checks a resumed run's model and schema too
    with library_output_to(config.run_dir / TRAIN_LOG):
        run_on_ray(
            make_server_app(config, schema), make_client_app(sites_root), config.simulation.sites,
            config.simulation.cpus_per_site,
        )  # fmt: skip
    return config.run_dir
