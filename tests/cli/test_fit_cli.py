"""`fedsynth fit`: too few rows and a config with an unknown table or key exit 2, writing nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.data.datasets import bundled_schema, raw_dataset

runner = CliRunner()


@pytest.fixture()
def inputs(tmp_path) -> dict[str, Path]:
    raw_dataset("whas500").iloc[:100].to_csv(tmp_path / "data.csv", index=False)
    raw_dataset("whas500").iloc[:99].to_csv(tmp_path / "few.csv", index=False)
    (tmp_path / "schema.toml").write_text(bundled_schema("whas500").to_toml())
    return {"root": tmp_path, "data": tmp_path / "data.csv", "few": tmp_path / "few.csv"}


def _fit(inputs: dict[str, Path], data: Path, *extra: str):
    root = inputs["root"]
    args = ["fit", str(data), "--schema", str(root / "schema.toml"), "-o", str(root / "model"), "--epochs", "1"]
    return runner.invoke(app, [*args, *extra])


def _refused(inputs: dict[str, Path], result, *patterns: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    for pattern in patterns:
        assert pattern in result.output, result.output
    assert not (inputs["root"] / "model").exists()


def test_fewer_rows_than_the_minimum_are_refused_with_the_reason(inputs) -> None:
    result = _fit(inputs, inputs["few"])
    _refused(inputs, result, "few.csv: 99 row(s) are below the minimum of 100", "near-copies")
    assert _fit(inputs, inputs["data"]).exit_code == 0  # 100 rows: enough


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("[modle]\nhidden = 8\n", ["unknown section(s) ['modle']", "allowed: model"]),
        ("[model]\nhidn = 8\n", ["model.hidn: Extra inputs are not permitted", "known keys in [model]:", "hidden"]),
        ("[model\n", ["not valid TOML"]),
    ],
    ids=["unknown-table", "unknown-key", "bad-toml"],
)
def test_a_config_with_an_unknown_table_or_key_is_refused_naming_the_known_ones(inputs, text, patterns) -> None:
    config = inputs["root"] / "model.toml"
    config.write_text(text)
    _refused(inputs, _fit(inputs, inputs["data"], "--config", str(config)), *patterns)


def test_generator_medvae_trains_a_med_vae_labelled_not_dp(inputs) -> None:
    import json

    from fedsynth.model.medvae import MedVAE

    result = _fit(inputs, inputs["data"], "--generator", "medvae")
    assert result.exit_code == 0, result.output
    assert "Not differentially private" in result.output
    model_dir = inputs["root"] / "model"
    assert json.loads((model_dir / "model.json").read_text())["generator"] == "medvae"
    assert len(MedVAE.load(model_dir).sample(20, ["chf=1"], seed=0)) == 20
    rows = inputs["root"] / "rows.csv"
    sampled = runner.invoke(app, ["sample", str(model_dir), "-n", "5", "--where", "chf=1", "-o", str(rows)])
    assert sampled.exit_code == 0 and "NOT DIFFERENTIALLY PRIVATE" in sampled.output, sampled.output
    record = json.loads(rows.with_name("rows.csv.provenance.json").read_text())
    assert record["generator"] == "fedsynth Med-VAE" and record["differentially_private"] is False
    assert len(pd.read_csv(rows)) == 5 and (pd.read_csv(rows)["chf"] == 1).all()


@pytest.mark.parametrize(
    ("extra", "config", "patterns"),
    [
        (["--generator", "vae"], None, ["'vae' is not one of", "mcm", "medvae"]),
        (["--generator", "medvae"], "[model]\nmask_min = 0.2\n", ["model.mask_min: Extra inputs", "latent"]),
    ],
    ids=["unknown-generator", "mcm-key-for-medvae"],
)
def test_an_unknown_generator_or_another_generators_key_is_refused(inputs, extra, config, patterns) -> None:
    if config is not None:
        (inputs["root"] / "model.toml").write_text(config)
        extra = [*extra, "--config", str(inputs["root"] / "model.toml")]
    result = _fit(inputs, inputs["data"], *extra)
    assert result.exit_code == 2, result.output
    for pattern in patterns:
        assert pattern in result.output, result.output
    assert not (inputs["root"] / "model").exists()
