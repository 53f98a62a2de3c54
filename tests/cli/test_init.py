"""`fedsynth init`: a reviewed-draft project for your own CSV, refused whole when anything is wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.client.config import SiteConfig
from fedsynth.data.schema import Schema
from fedsynth.server.config import FederationConfig


def _extract(path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "inst": rng.integers(1, 9, n), "time": rng.integers(5, 1000, n), "status": rng.integers(0, 2, n),
        "age": rng.integers(39, 83, n), "meal.cal": np.where(rng.random(n) < 0.2, np.nan, rng.integers(96, 2600, n)),
    })  # fmt: skip
    frame.to_csv(path, index=False)
    return path


def test_init_writes_a_draft_schema_a_federation_and_a_site_config(tmp_path: Path) -> None:
    data = _extract(tmp_path / "lung.csv")
    project = tmp_path / "project"
    result = CliRunner().invoke(
        app,
        [
            "init",
            str(data),
            "--time",
            "time",
            "--event",
            "status",
            "-o",
            str(project),
            "--partition",
            "column:inst",
            "--epsilon",
            "2",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in project.iterdir()) == ["federation.toml", "schema.toml", "site.toml"]
    schema = Schema.from_toml(project / "schema.toml")
    assert schema.name == "lung" and "inst" not in schema.names and schema.time_column == "time"
    assert "DRAFT schema" in (project / "schema.toml").read_text()
    output = " ".join(result.output.split())
    assert "inst (left out): its name says it is an identifier" in output
    # meal.cal is missing in 20% of the rows: modelled (rows kept), and the review says so.
    assert "meal.cal:" in output and "values missing" in output and 'missing = "model" keeps those rows' in output
    assert schema.column("meal.cal").missing == "model"
    federation = FederationConfig.from_toml(project / "federation.toml")
    assert (
        federation.simulation.data == data.resolve()
        and federation.simulation.schema_path == (project / "schema.toml").resolve()
    )
    assert federation.simulation.partition == "column:inst" and federation.site["privacy"]["target_epsilon"] == 2
    assert federation.run_dir == (project / "runs" / "lung").resolve()
    site = tomllib.loads((project / "site.toml").read_text())
    assert SiteConfig.from_dict(site).privacy.target_epsilon == 2


def test_init_refuses_whole_and_writes_nothing(tmp_path: Path) -> None:
    data = _extract(tmp_path / "lung.csv")
    project = tmp_path / "project"
    runner = CliRunner()
    wrong_time = runner.invoke(app, ["init", str(data), "--time", "days", "--event", "status", "-o", str(project)])
    assert wrong_time.exit_code == 2 and "--time column 'days' is not in the data" in wrong_time.output
    bad_partition = runner.invoke(
        app, ["init", str(data), "--time", "time", "--event", "status", "-o", str(project), "--partition", "site"]
    )
    assert bad_partition.exit_code == 2 and 'use "iid" or "column:NAME"' in bad_partition.output
    assert not project.exists()
    project.mkdir()
    (project / "site.toml").write_text("# mine\n")
    exists = runner.invoke(app, ["init", str(data), "--time", "time", "--event", "status", "-o", str(project)])
    assert exists.exit_code == 2 and "site.toml already exists" in exists.output and "--force" in exists.output
    assert sorted(p.name for p in project.iterdir()) == ["site.toml"]
