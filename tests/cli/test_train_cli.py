"""`fedsynth train` never exits 0 on failure: refused up front (exit 2, nothing written, no Ray),
or, when sites fail inside the run, exit 2 with their reasons and no model; Ray stays in its log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.client.config import SiteConfig
from fedsynth.client.site import Site
from fedsynth.data.datasets import bundled_schema, raw_dataset
from fedsynth.data.io import write_table
from fedsynth.server.config import FederationConfig
from fedsynth.server.simulation import prepare_sites

runner = CliRunner()


def _listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def _write_config(root: Path, federation: str, simulation: str = 'dataset = "whas500"\nsites = 2') -> Path:
    path = root / "fed.toml"
    path.write_text(
        f'[federation]\nrounds = 1\nrun_dir = "run"\n{federation}\n[simulation]\n{simulation}\n'
        "[site]\ntraining = { local_epochs = 1 }\n[model]\nhidden = 16\nn_bins = 16\n"
    )
    return path


def _table(root: Path, rows: int, broken: bool = False) -> str:
    frame = raw_dataset("whas500").iloc[:rows].copy()
    if broken:
        frame["bmi"] = frame["bmi"].astype(object)
        frame.loc[3, "bmi"] = "heavy"
    frame.to_csv(root / "data.csv", index=False)
    (root / "schema.toml").write_text(bundled_schema("whas500").to_toml())
    return 'data = "data.csv"\nschema = "schema.toml"'


@pytest.mark.parametrize(
    ("federation", "table", "sites", "patterns"),
    [
        ("min_sites = 2", (500, True), 2, ["data.csv does not match the schema", "column 'bmi'", "'heavy'"]),
        ("min_sites = 2", (5, False), 10, ["5 rows of", "over simulation.sites = 10", "minimum of 100"]),
        ("min_sites = 2", (5, False), 2, ["leave site-0 with 2 training record(s)", "minimum of 100"]),
        ("min_sites = 5", None, 2, ["fed.toml: federation.min_sites = 5", "at most 2 in [federation]"]),
        ('min_sites = 5\nengine = "deployment"', None, 2, ["federation.min_sites = 5"]),
    ],
    ids=["bad-table", "5-rows-over-10-sites", "5-rows-over-2-sites", "min-sites", "min-sites-deployment"],
)
def test_what_the_coordinator_can_see_is_refused_before_anything_starts(
    tmp_path, federation: str, table: tuple[int, bool] | None, sites: int, patterns: list[str]
) -> None:
    simulation = (_table(tmp_path, *table) if table else 'dataset = "whas500"') + f"\nsites = {sites}"
    config = _write_config(tmp_path, federation, simulation)
    before = _listing(tmp_path)
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    for pattern in patterns:
        assert pattern in result.output, result.output
    assert _listing(tmp_path) == before, "a refused run wrote files"


def test_min_sites_above_the_sites_exits_2_at_once_instead_of_waiting_for_ever(tmp_path) -> None:
    config = _write_config(tmp_path, "min_sites = 3")
    done = subprocess.run(
        [sys.executable, "-m", "fedsynth.cli", "train", "--config", str(config)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and "federation.min_sites = 3" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_sites_that_all_fail_inside_the_run_exit_2_with_their_reasons_and_no_model(tmp_path) -> None:
    """Both sites' data were changed after their split (each got the other's rows): valid rows the
    coordinator cannot tell from good ones, refused at each site when it opens."""
    config_path = _write_config(tmp_path, "min_sites = 2")
    config = FederationConfig.from_toml(config_path)
    schema, root = prepare_sites(config)
    for site_dir in (root / "site-0", root / "site-1"):
        Site(SiteConfig.from_toml(site_dir / "site.toml"), schema, site_dir / "state").close()  # writes the split
    first, second = (pd.read_parquet(root / f"site-{i}" / "data.parquet") for i in (0, 1))
    write_table(second, root / "site-0" / "data.parquet")
    write_table(first, root / "site-1" / "data.parquet")

    done = subprocess.run(
        [sys.executable, "-m", "fedsynth.cli", "train", "--config", str(config_path)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    terminal = done.stdout + done.stderr
    assert done.returncode == 2, terminal
    # The error comes after any warning (this run's sites are small: a low-power warning first).
    assert "\nerror: training ended without a model: no site returned weights." in "\n" + done.stderr, terminal
    for site in ("site-0", "site-1"):
        assert f"  - {site} (round 1): SiteError at the site; details are in the site's own log (not sent)" in terminal
    log = config.run_dir / "logs" / "train.log"
    assert f"Flower's and Ray's log: {log}" in terminal and "SiteError" in log.read_text()
    for noise in ("global model", "Traceback", "ray::", "RayTaskError", "INFO", "Aggregated"):
        assert noise not in terminal, (noise, terminal)
    assert not (config.run_dir / "model").exists() and not (config.run_dir / "budget.json").exists()
