"""`fedsynth deploy certs` / `node-key` / `app`: files where promised, clear errors, exit 2."""

from __future__ import annotations

import io
import tomllib
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk
from typer.testing import CliRunner

from fedsynth.cli import app

runner = CliRunner()


def test_deploy_certs_then_node_key(tmp_path) -> None:
    target = tmp_path / "certs"
    result = runner.invoke(app, ["deploy", "certs", str(target), "--node", "site-0", "--host", "10.1.2.3"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in target.iterdir()} == {"ca.crt", "ca.key", "server.pem", "server.key", "nodes"}
    assert "keep it offline" in result.output
    result = runner.invoke(app, ["deploy", "node-key", str(target), "site-1"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (target / "nodes").iterdir())
    assert names == ["site-0.key", "site-0.pub", "site-1.key", "site-1.pub"]


def test_deploy_certs_refuses_to_replace_a_set(tmp_path) -> None:
    target = tmp_path / "certs"
    assert runner.invoke(app, ["deploy", "certs", str(target)]).exit_code == 0
    result = runner.invoke(app, ["deploy", "certs", str(target)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    result = runner.invoke(app, ["deploy", "node-key", str(target), "bad name"])
    assert result.exit_code == 2 and "not a safe file name" in result.output


def test_deploy_renew_server_replaces_the_pair_and_names_a_missing_ca_key(tmp_path) -> None:
    target = tmp_path / "certs"
    assert runner.invoke(app, ["deploy", "certs", str(target), "--host", "10.1.2.3"]).exit_code == 0
    before = {name: (target / name).read_bytes() for name in ("ca.crt", "server.pem", "server.key")}
    result = runner.invoke(app, ["deploy", "renew-server", str(target), "--days", "90"])
    assert result.exit_code == 0, result.output
    assert "valid until" in result.output and "sites keep their ca.crt" in result.output
    assert (target / "ca.crt").read_bytes() == before["ca.crt"]
    assert all((target / name).read_bytes() != before[name] for name in ("server.pem", "server.key"))
    (target / "ca.key").unlink()
    result = runner.invoke(app, ["deploy", "renew-server", str(target)])
    assert result.exit_code == 2 and "ca.key is missing" in result.output


def test_audit_and_evaluate_name_a_bad_engine_and_a_run_not_trained_on_the_deployment_engine(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = runner.invoke(app, ["audit", str(run_dir), "--engine", "grpc"])
    assert result.exit_code == 2
    assert "--engine must be one of auto, simulation, deployment" in " ".join(result.output.split())
    result = runner.invoke(app, ["evaluate", str(run_dir), "--engine", "deployment"])
    message = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "deployment/federation.toml is missing" in message and "--engine simulation" in message
    assert list(run_dir.iterdir()) == []  # nothing written


def test_deploy_app_writes_an_app_naming_the_installed_server_and_client_apps(tmp_path) -> None:
    result = runner.invoke(app, ["deploy", "app", str(tmp_path / "app")])
    assert result.exit_code == 0, result.output
    written = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    checkout = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert written["components"] == checkout["components"] and set(written["config"]) == set(checkout["config"])
    # The FAB that `flwr run` submits carries the app's declaration and no code of ours.
    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(tmp_path / "app"))) as fab:
        assert not [name for name in fab.namelist() if name.endswith(".py")]
        assert "pyproject.toml" in fab.namelist()


def test_deploy_app_names_a_file_in_the_way(tmp_path) -> None:
    (tmp_path / "app").write_text("not a directory")
    result = runner.invoke(app, ["deploy", "app", str(tmp_path / "app")])
    assert result.exit_code == 2 and "is a file" in result.output
