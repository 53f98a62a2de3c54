"""Flower's simulation engine (Ray backend) with virtual sites partitioned from one table.

Each virtual site gets a directory like a real hospital's: its partition of the data,
its ``site.toml`` (the federation's ``[site]`` defaults) and the public schema. The sites
then run exactly the ClientApp code the deployment engine runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tomli_w
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from fedsynth.client.app import SCHEMA_FILE, SITE_FILE, make_client_app
from fedsynth.client.config import SiteConfig
from fedsynth.data.datasets import load_dataset
from fedsynth.data.io import read_table, write_table, write_text
from fedsynth.data.schema import Schema
from fedsynth.server.app import check_resumable, make_server_app
from fedsynth.server.config import FederationConfig, FederationConfigError
from fedsynth.server.run import RunDirectory

SITES = "sites"


def load_simulation_table(config: FederationConfig) -> tuple[pd.DataFrame, Schema]:
    sim = config.simulation
    if sim.data is not None:
        return read_table(sim.data), Schema.from_toml(sim.schema_path)
    return load_dataset(sim.dataset)


def partition(frame: pd.DataFrame, n_sites: int, how: str, seed: int) -> list[pd.DataFrame]:
    """IID: a seeded shuffle cut into equal parts. ``column:<name>``: rows sorted by the
    column (ties shuffled) and cut into equal parts, so sites differ in that column."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    if how.startswith("column:"):
        column = how.split(":", 1)[1]
        if column not in frame.columns:
            raise FederationConfigError(
                f"simulation.partition: column '{column}' is not in the data; use one of {list(frame.columns)}"
            )
        shuffled = frame.iloc[order]
        order = order[np.argsort(shuffled[column].to_numpy(), kind="stable")]
    parts = np.array_split(order, n_sites)
    return [frame.iloc[np.sort(part)].reset_index(drop=True) for part in parts]


def prepare_sites(config: FederationConfig) -> tuple[Schema, Path]:
    """Write one directory per virtual site under RUN_DIR/sites; return the schema and that root."""
    frame, schema = load_simulation_table(config)
    root = config.run_dir / SITES
    defaults = {section: config.site.get(section, {}) for section in ("privacy", "training")}
    unknown = set(config.site) - {"privacy", "training"}
    if unknown:
        raise FederationConfigError(f"[site] may hold privacy and training only, not {sorted(unknown)}")
    for index, part in enumerate(
        partition(frame, config.simulation.sites, config.simulation.partition, config.simulation.seed)
    ):
        site_dir = root / f"site-{index}"
        site_dir.mkdir(parents=True, exist_ok=True)
        data_path = site_dir / "data.parquet"
        if not data_path.exists():
            write_table(part, data_path)
        document = {"site": {"name": f"site-{index}", "data": "data.parquet", "schema": SCHEMA_FILE}, **defaults}
        SiteConfig.from_dict(document, source=f"[site] of the federation config for site-{index}")
        write_text(site_dir / SITE_FILE, tomli_w.dumps(document))
        write_text(site_dir / SCHEMA_FILE, schema.to_toml())
    return schema, root


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


def simulate(config: FederationConfig) -> Path:
    """Run the federation on Flower's simulation engine; returns the run directory."""
    schema, sites_root = prepare_sites(config)
    if (config.run_dir / "run.json").exists():
        check_resumable(RunDirectory(config.run_dir), config, schema)  # before any site trains
    run_on_ray(
        make_server_app(config, schema), make_client_app(sites_root), config.simulation.sites,
        config.simulation.cpus_per_site,
    )  # fmt: skip
    return config.run_dir
