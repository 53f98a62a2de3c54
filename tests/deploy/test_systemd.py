"""systemd units for the coordinator and a site: valid for systemd, the runbook's own commands."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.deploy.certs import make_credentials

RUNBOOK = Path(__file__).parents[2] / "deploy" / "README.md"
runner = CliRunner()


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    files = make_credentials(tmp_path / "certs", nodes=["site-a"])
    for name in ("state", "site-a"):
        (tmp_path / name).mkdir()
    return {"root": tmp_path, "certs": tmp_path / "certs", "ca": files.ca_cert, "key": files.node_key("site-a")}


def _write(layout: dict[str, Path], *extra: str) -> tuple[int, str]:
    out, certs = layout["root"] / "units", layout["certs"]
    coordinator = [
        "deploy",
        "systemd-coordinator",
        str(out),
        "--certs",
        str(certs),
        "--state",
        str(layout["root"] / "state"),
        *extra,
    ]
    first = runner.invoke(app, coordinator)
    if first.exit_code:
        return first.exit_code, first.output
    site = [
        "deploy",
        "systemd-site",
        str(out),
        "--name",
        "site-a",
        "--site-dir",
        str(layout["root"] / "site-a"),
        "--superlink",
        "fed.example.org:9092",
        "--root-certificates",
        str(layout["ca"]),
        "--auth-key",
        str(layout["key"]),
        *extra,
    ]
    second = runner.invoke(app, site)
    return second.exit_code, first.output + second.output


def _service(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _flags(command: str) -> set[str]:
    return {word for word in shlex.split(command) if word.startswith("--")}


def _runbook_block(program: str) -> str:
    """The runbook's command for ``program``, its continuation lines joined."""
    text = RUNBOOK.read_text()
    match = re.search(rf"^{re.escape(program)} \\\n(?:    .*\n)+", text, flags=re.MULTILINE)
    assert match, f"{program} is not in the runbook"
    return match.group(0).replace("\\\n", " ")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_every_unit_is_valid_for_systemd(layout) -> None:
    code, output = _write(layout, "--user", "root")
    assert code == 0, output
    units = sorted((layout["root"] / "units").glob("*.service"))
    assert [u.name for u in units] == [
        "fedsynth-gateway.service",
        "fedsynth-superlink.service",
        "fedsynth-supernode-site-a.service",
    ]
    checked = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    # and a unit with a typo is not: the check can fail
    broken = units[0].with_name("fedsynth-broken.service")
    broken.write_text(
        units[0]
        .read_text()
        .replace("Restart=on-failure", "Restart=sometimes")
        .replace("ExecStart=", "ExecStart=/nonexistent/")
    )
    assert subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True).returncode != 0


def test_the_units_run_the_runbooks_commands_hardened(layout) -> None:
    code, output = _write(layout)
    assert code == 0, output
    units = layout["root"] / "units"
    superlink = _service(units / "fedsynth-superlink.service")
    gateway = _service(units / "fedsynth-gateway.service")
    site = _service(units / "fedsynth-supernode-site-a.service")
    assert _flags(superlink["ExecStart"]) == _flags(_runbook_block("flower-superlink"))
    assert _flags(site["ExecStart"]) == _flags(_runbook_block("flower-supernode"))
    assert "--host 127.0.0.1 --port 9093" in superlink["ExecStart"]
    assert f"--database {layout['root'] / 'state' / 'superlink.db'}" in superlink["ExecStart"]
    assert gateway["ExecStart"].endswith(
        f"deploy gateway {layout['certs']} --listen 0.0.0.0:9092 --superlink 127.0.0.1:9093"
    )
    assert gateway["Requires"] == gateway["After"] == gateway["PartOf"] == "fedsynth-superlink.service"
    # The site's pre-flight checks the very connection the SuperNode then uses.
    check = shlex.split(site["ExecStartPre"])
    assert check[1:4] == ["site", "check", str(layout["root"] / "site-a")]
    connection = ["--superlink", "fed.example.org:9092", "--root-certificates", str(layout["ca"])]
    assert " ".join(connection) in site["ExecStartPre"] and " ".join(connection) in site["ExecStart"]
    assert f"--auth-key {layout['key']}" in site["ExecStartPre"]
    assert f"--auth-supernode-private-key {layout['key']}" in site["ExecStart"]
    assert f"site-dir='{layout['root'] / 'site-a'}'" in shlex.split(site["ExecStart"])
    for unit, writable in ((superlink, "state"), (gateway, None), (site, "site-a")):
        assert unit["User"] == "fedsynth" and unit["NoNewPrivileges"] == "yes" and unit["ProtectSystem"] == "strict"
        assert unit["Environment"] == "FLWR_TELEMETRY_ENABLED=0"  # Flower's usage events never leave
        assert unit.get("ReadWritePaths") == (str(layout["root"] / writable) if writable else None)
        assert Path(shlex.split(unit["ExecStart"])[0]).is_file()  # this installation's own executables


def test_bad_input_exits_2_naming_the_option_and_writes_nothing(layout, tmp_path: Path) -> None:
    spaced = tmp_path / "my state"
    spaced.mkdir()
    missing = [
        "deploy",
        "systemd-coordinator",
        str(tmp_path / "units"),
        "--certs",
        str(tmp_path / "nope"),
        "--state",
        str(spaced),
    ]
    result = runner.invoke(app, missing)
    assert result.exit_code == 2 and "--certs" in result.output and "no such directory" in result.output
    result = runner.invoke(app, [*missing[:4], str(layout["certs"]), "--state", str(spaced)])
    assert result.exit_code == 2 and "--state" in result.output and "without them" in result.output
    assert not (tmp_path / "units").exists()
    code, _ = _write(layout)
    assert code == 0
    unit = layout["root"] / "units" / "fedsynth-superlink.service"
    before = unit.read_text()
    code, output = _write(layout, "--user", "other")
    assert code == 2 and "already exist" in output and "--force" in output
    assert unit.read_text() == before
    code, _ = _write(layout, "--user", "other", "--force")
    assert code == 0 and "User=other" in unit.read_text()
