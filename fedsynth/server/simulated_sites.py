"""The simulated sites: partitioned from one table, and checked before any of them is written.

``fedsynth train`` on the simulation engine, and its loopback rehearsal of the deployment
engine, start every site from one table the coordinator holds. Whatever would only fail (or
hang) once Ray or the SuperNodes run is refused here first, before a file is written:

* ``federation.min_sites`` above the number of sites: Flower would wait for the missing sites
  for ever;
* the ``[site]`` defaults, each site's data (the table, and a resumed run's site files) against
  the public schema, and each site's training records against the DP minimum
  (:mod:`fedsynth.data.minimum`) and its delta;
* a resumed run whose model or schema changed.

The table is the coordinator's own file here, so its errors name rows and values as
``fedsynth schema check`` does; a site's own errors reach the coordinator without them
(:mod:`fedsynth.client.site_errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.client.app import SCHEMA_FILE
from fedsynth.client.config import SiteConfig
from fedsynth.client.ledger import check_delta, default_delta
from fedsynth.data.datasets import load_dataset
from fedsynth.data.io import read_table
from fedsynth.data.minimum import min_dp_training_records, rows_for_training_records, training_records
from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame
from fedsynth.model.config import ModelConfigError
from fedsynth.model.fairness import check_fairness
from fedsynth.server.config import FederationConfig, FederationConfigError
from fedsynth.server.resume import check_resumable
from fedsynth.server.run import RunDirectory

SITES = "sites"
SITE_DATA = "data.parquet"


@dataclass(frozen=True)
class SimulatedSites:
    """The checked set-up of the simulated sites: the schema, each site's document and table."""

    schema: Schema
    documents: list[dict]
    tables: list[pd.DataFrame]  # as read: written to a new site's data file unchanged


def load_simulation_table(config: FederationConfig) -> tuple[pd.DataFrame, Schema]:
    sim = config.simulation
    if sim.data is not None:
        return read_table(sim.data), Schema.from_toml(sim.schema_path)
    return load_dataset(sim.dataset)


def partition(frame: pd.DataFrame, n_sites: int, how: str, seed: int) -> list[pd.DataFrame]:
    """IID: a seeded shuffle cut into equal parts. ``column:<name>``: every row with one value of
    the column on one site (an institution code stays one hospital), the values in sorted order
    cut into ``n_sites`` runs of about equal row counts, so sites also differ in that column."""
    if not how.startswith("column:"):
        order = np.random.default_rng(seed).permutation(len(frame))
        return [frame.iloc[np.sort(part)].reset_index(drop=True) for part in np.array_split(order, n_sites)]
    column = how.split(":", 1)[1]
    site_of_row = _sites_by_value(frame, column, n_sites)
    return [frame[site_of_row == site].reset_index(drop=True) for site in range(n_sites)]


def _sites_by_value(frame: pd.DataFrame, column: str, n_sites: int) -> np.ndarray:
    """Each row's site: the column's sorted distinct values cut into contiguous runs, a cut placed
    at the value boundary nearest each equal share of the rows, every site at least one value."""
    where = f"simulation.partition = 'column:{column}'"
    if column not in frame.columns:
        raise FederationConfigError(f"{where}: column '{column}' is not in the data; use one of {list(frame.columns)}")
    values = frame[column]
    if values.isna().any():
        raise FederationConfigError(
            f"{where}: {int(values.isna().sum())} row(s) have no '{column}', so no site can be chosen for them; "
            "fill or drop those rows, or partition by another column"
        )
    levels, inverse, counts = np.unique(values.astype(str) if values.dtype == object else values,
                                        return_inverse=True, return_counts=True)  # fmt: skip
    if len(levels) < n_sites:
        raise FederationConfigError(
            f"{where}: '{column}' has {len(levels)} distinct value(s) and each value's rows go to one site, so it "
            f"cannot make {n_sites} sites; set simulation.sites (or --sites) to at most {len(levels)}"
        )
    cumulative, cuts = np.cumsum(counts), []
    for k in range(1, n_sites):
        nearest = int(np.argmin(np.abs(cumulative - k * len(frame) / n_sites)))
        lowest = cuts[-1] + 1 if cuts else 0
        cuts.append(min(max(nearest, lowest), len(levels) - (n_sites - k) - 1))
    site_of_level = np.searchsorted(np.asarray(cuts), np.arange(len(levels)), side="left")
    return site_of_level[inverse]


def partition_summary(parts: list[pd.DataFrame], how: str) -> list[str]:
    """One line per site: its rows, and for ``column:<name>`` the values it holds."""
    column = how.split(":", 1)[1] if how.startswith("column:") else None
    lines = []
    for index, part in enumerate(parts):
        line = f"site-{index}: {len(part)} rows"
        if column is not None and len(part):
            held = sorted(part[column].unique().tolist(), key=str)
            shown = ", ".join(map(str, held[:8])) + (f", ... ({len(held)} values)" if len(held) > 8 else "")
            line += f", {column} = {shown}"
        lines.append(line)
    return lines


def check_min_sites(config: FederationConfig, source: str) -> None:
    sites = config.simulation.sites
    if config.min_sites > sites:
        raise FederationConfigError(
            f"{source}: federation.min_sites = {config.min_sites} but the run starts {sites} site(s), so no "
            f"round could ever start (Flower would wait for the missing sites for ever); fix: set min_sites to "
            f"at most {sites} in [federation], or start more sites (simulation.sites or --sites)"
        )


def site_document(config: FederationConfig, index: int) -> tuple[dict, SiteConfig]:
    """A simulated site's ``site.toml`` (the federation's ``[site]`` defaults) and its parsed form."""
    unknown = set(config.site) - {"privacy", "training"}
    if unknown:
        raise FederationConfigError(f"[site] may hold privacy and training only, not {sorted(unknown)}")
    defaults = {section: config.site.get(section, {}) for section in ("privacy", "training")}
    document = {"site": {"name": f"site-{index}", "data": SITE_DATA, "schema": SCHEMA_FILE}, **defaults}
    return document, SiteConfig.from_dict(document, source=f"[site] of the federation config for site-{index}")


def _largest_site_count(n_rows: int, holdout_fraction: float, minimum: int) -> int:
    """The most equal parts of ``n_rows`` that each still leave ``minimum`` training records."""
    count = n_rows // max(1, rows_for_training_records(minimum, holdout_fraction))
    while count > 0 and training_records(n_rows // count, holdout_fraction) < minimum:
        count -= 1
    return count


def check_simulated_sites(config: FederationConfig, source: str = "the federation config") -> SimulatedSites:
    """Every check the coordinator can make before it writes a site or starts a process."""
    check_min_sites(config, source)
    sim = config.simulation
    frame, schema = load_simulation_table(config)
    table_name = str(sim.data) if sim.data is not None else f"the bundled dataset {sim.dataset}"
    canonical, _ = validate_frame(frame, schema, source=table_name)
    try:  # the [model] fields that name a column of the schema
        check_fairness(config.model, schema)
    except ModelConfigError as exc:
        raise FederationConfigError(f"{source}: [model] {exc}") from None
    if (config.run_dir / "run.json").exists():
        check_resumable(RunDirectory(config.run_dir), config, schema)
    parts = partition(frame, sim.sites, sim.partition, sim.seed)
    documents, tables = [], []
    for index, part in enumerate(parts):
        document, site = site_document(config, index)
        existing = site_directory(config.run_dir, index) / SITE_DATA
        if existing.exists():  # a resumed run's site keeps its file
            table, table_source = read_table(existing), str(existing)
        else:
            table, table_source = part, f"site-{index}'s part of {table_name}"
        rows = len(validate_frame(table, schema, source=table_source)[0]) if len(table) else 0
        training = site.training
        minimum = min_dp_training_records(training.batch_size)
        n_train = training_records(rows, training.holdout_fraction)
        if n_train < minimum:
            fits = _largest_site_count(len(canonical), training.holdout_fraction, minimum)
            needed = rows_for_training_records(minimum, training.holdout_fraction)
            raise FederationConfigError(
                f"{source}: {len(canonical)} rows of {table_name} over simulation.sites = {sim.sites} leave "
                f"site-{index} with {n_train} training record(s) ({rows} row(s) less the "
                f"{training.holdout_fraction:g} holdout), below the minimum of {minimum} for DP training (each "
                f"site needs at least {needed} rows; see fedsynth.data.minimum); fix: "
                + (f"set simulation.sites (or --sites) to at most {fits}, or " if fits else "")
                + "use a larger table"
            )
        delta = site.privacy.target_delta or default_delta(n_train)
        check_delta(delta, n_train)
        documents.append(document)
        tables.append(table)
    return SimulatedSites(schema, documents, tables)


def site_directory(run_dir: Path, index: int) -> Path:
    return run_dir / SITES / f"site-{index}"
