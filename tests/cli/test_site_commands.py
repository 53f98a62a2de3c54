"""`fedsynth site status|check SITE_DIR`: what a site reports of itself, and its pre-flight, read only."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.client.audit_log import record_audit
from fedsynth.client.config import SiteConfig
from fedsynth.client.ledger_backup import STATE
from fedsynth.client.marginal_release import release_marginals
from fedsynth.client.site import Site
from fedsynth.deploy.certs import _certificate_authority, make_credentials
from fedsynth.deploy.site_check import check_auth_key, check_superlink
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from tests.cli.fresh_interpreter import run_in_fresh_interpreter
from tests.client.conftest import write_site

SITE_SECTIONS = "[privacy]\ntarget_epsilon = 2.0\n[training]\nlocal_epochs = 1\n"


def _cli(*args: object):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["site", *map(str, args)])


def _status(site_dir: Path) -> dict:
    result = _cli("status", site_dir, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _open(site_dir: Path, schema) -> Site:  # type: ignore[no-untyped-def]
    return Site(SiteConfig.from_toml(site_dir / "site.toml"), schema, site_dir / STATE)


@pytest.fixture()
def fresh_site(whas500, tmp_path) -> Path:
    """A site directory as set up, never opened: site.toml, schema.toml and 250 rows of data."""
    frame, schema = whas500
    return write_site(tmp_path / "site", frame.iloc[:250], schema, SITE_SECTIONS)


@pytest.fixture(scope="module")
def trained(whas500, tmp_path_factory) -> tuple[Path, float, int]:
    """A site after one real DP-SGD round and its run's marginal release; its ledger's epsilon and entries."""
    frame, schema = whas500
    site_dir = write_site(tmp_path_factory.mktemp("trained"), frame.iloc[:250], schema, SITE_SECTIONS)
    site = _open(site_dir, schema)
    model_config = MCMConfig(hidden=16, n_bins=16)
    state = MCM(model_config).build(schema).network_.state_dict()
    site.train_round(state, model_config, run_id="run-a", server_round=1, planned_rounds=3)
    release_marginals(site, run_id="run-a", planned_rounds=3, numeric_bins=8, time_bins=8)
    epsilon, entries = site.ledger.epsilon(), len(site.ledger.entries())
    site.close()
    return site_dir, epsilon, entries


@pytest.mark.slow
def test_status_after_a_dp_round_reports_the_ledgers_epsilon_and_runs_and_writes_nothing(trained, tmp_path) -> None:
    site_dir = Path(shutil.copytree(trained[0], tmp_path / "site"))
    epsilon, entries = trained[1:]
    before = _files(site_dir)
    status = _status(site_dir)
    ledger = status["ledger"]
    assert ledger["state"] == "verified" and ledger["entries"] == entries == 2  # the round and the marginal release
    assert ledger["epsilon"] == pytest.approx(epsilon, rel=1e-9) and 0 < epsilon < 2.0
    assert ledger["recorded_epsilon"] == pytest.approx(epsilon, rel=1e-9)
    assert status["remaining_epsilon"] == pytest.approx(2.0 - epsilon, rel=1e-9)
    (run,) = ledger["runs"]
    assert (run["run_id"], run["rounds"], run["last_round"]) == ("run-a", 1, 1)
    assert run["last_round_time"] and run["marginals_time"] and run["marginals_stored"]
    assert run["marginals_noise_multiplier"] > 0
    assert status["data"]["matches_split"] is True and status["data"]["n_rows"] == 250
    assert status["audits"] == {"answered": 0, "by_kind": {}, "cap": 10}
    # The same epsilon `fedsynth ledger verify` reports.
    verify = CliRunner().invoke(app, ["ledger", "verify", str(site_dir)])
    assert verify.exit_code == 0 and f"2 entries, epsilon {epsilon:.4f}" in " ".join(verify.output.split())
    human = _cli("status", site_dir)
    assert human.exit_code == 0, human.output
    assert "verified, 2 entries" in human.output and f"{epsilon:.4f}" in human.output
    assert "run-a" in human.output and "matches the data" in human.output
    assert _files(site_dir) == before  # status (and verify) only read


@pytest.mark.slow
@pytest.mark.parametrize("command", [["status", "--json"], ["check"]])
def test_status_and_check_answer_without_loading_torch_and_compose_the_same_epsilon(trained, command) -> None:
    """Both run at the site before its SuperNode starts (the systemd unit's pre-flight) and whenever
    an officer asks, so they answer without torch's seconds of start-up: the ledger's epsilon comes
    from Opacus' RDP analysis loaded on its own, and equals the ledger's own (Opacus imported)."""
    site_dir, epsilon, _ = trained
    args = ["site", command[0], str(site_dir), *command[1:]]
    output, imported = run_in_fresh_interpreter(args)
    assert imported == [], f"`fedsynth {' '.join(args)}` imported {imported}"
    if command[0] == "status":
        assert json.loads(output)["ledger"]["epsilon"] == epsilon  # bit for bit
    else:
        assert "checks passed" in output


@pytest.mark.slow
def test_check_passes_a_trained_site_and_fails_it_once_its_data_are_edited(trained, tmp_path) -> None:
    site_dir = Path(shutil.copytree(trained[0], tmp_path / "site"))
    result = _cli("check", site_dir)
    assert result.exit_code == 0, result.output
    assert re.search(r"^PASS ledger: verified: 2 entries, epsilon \d\.\d{4} spent of 2", result.output, re.M)
    assert "PASS split: the data are those split on" in result.output
    data = site_dir / "data.csv"
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join([*lines, lines[1]]))  # one patient twice: valid rows, not those split
    status = _status(site_dir)["data"]
    assert status["matches_split"] is False and status["rows_sha256"] != status["split_sha256"]
    assert status["n_rows"] == 251
    assert "DIFFERS from the data" in _cli("status", site_dir).output
    result = _cli("check", site_dir)
    assert result.exit_code == 2
    assert "FAIL split: the data's rows" in result.output and "restore the original data file" in result.output
    assert "1 of 5 checks failed (split)" in result.output and "Traceback" not in result.output


def test_a_fresh_site_reports_nothing_spent_and_its_whole_budget_and_creates_nothing(fresh_site) -> None:
    before = _files(fresh_site)
    status = _status(fresh_site)
    assert status["name"] == "hospital-a" and status["target_epsilon"] == 2.0 and status["target_delta"] is None
    assert status["ledger"]["state"] == "never trained"
    assert (status["ledger"]["epsilon"], status["ledger"]["entries"], status["ledger"]["runs"]) == (0.0, 0, [])
    assert status["remaining_epsilon"] == 2.0
    assert status["data"]["split_sha256"] is None and status["data"]["matches_split"] is None
    assert len(status["data"]["file_sha256"]) == 64 and status["data"]["n_rows"] == 250
    human = _cli("status", fresh_site)
    assert "never trained: no ledger yet" in human.output and "2.0000 of 2" in human.output
    result = _cli("check", fresh_site)
    assert result.exit_code == 0, result.output
    assert "PASS ledger: no ledger yet (never trained)" in result.output
    assert "PASS split: no split yet" in result.output and "all 5 checks passed" in result.output
    assert _files(fresh_site) == before and not (fresh_site / STATE).exists()


def test_audits_are_counted_against_the_cap(whas500, fresh_site) -> None:
    site = _open(fresh_site, whas500[1])  # opened, split, its ledger created; nothing spent
    record_audit(site, "a" * 64, seed=1)
    record_audit(site, "b" * 64, seed=2, kind="evaluation")
    site.close()
    status = _status(fresh_site)
    assert status["audits"] == {"answered": 2, "by_kind": {"audit": 1, "evaluation": 1}, "cap": 10}
    assert status["ledger"]["state"] == "verified" and status["ledger"]["entries"] == 0
    assert status["data"]["matches_split"] is True
    assert "2 of 10 (privacy.max_audits): audit 1, evaluation 1" in _cli("status", fresh_site).output
    assert "PASS audits: 2 of 10 audits/evaluations answered" in _cli("check", fresh_site).output


def test_a_lost_ledger_shows_in_status_and_fails_the_check(whas500, fresh_site) -> None:
    _open(fresh_site, whas500[1]).close()
    (fresh_site / STATE / "ledger.sqlite").unlink()  # its witness remains
    status = _status(fresh_site)["ledger"]
    assert status["state"] == "failed" and "is missing; its witness records 0 entries" in status["problem"]
    assert "FAILED verification" in _cli("status", fresh_site).output
    result = _cli("check", fresh_site)
    assert result.exit_code == 2 and "FAIL ledger: the privacy ledger" in result.output
    assert not (fresh_site / STATE / "ledger.sqlite").exists()  # nothing created in its place


def _write_ca(path: Path, days: int, issued: dt.datetime) -> Path:
    _, cert = _certificate_authority(days, issued)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_an_expired_ca_fails_and_one_expiring_within_30_days_warns(fresh_site, tmp_path) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = _write_ca(tmp_path / "expired.crt", 365, now - dt.timedelta(days=400))
    result = _cli("check", fresh_site, "--root-certificates", expired)
    assert result.exit_code == 2, result.output
    expiry = (now - dt.timedelta(days=35)).strftime("%Y-%m-%d")
    assert re.search(rf"^FAIL certificate: {re.escape(str(expired))} expired on {expiry}", result.output, re.M)
    assert "1 of 6 checks failed (certificate)" in result.output
    soon = _write_ca(tmp_path / "soon.crt", 10, now)
    result = _cli("check", fresh_site, "--root-certificates", soon)
    assert result.exit_code == 0, result.output
    assert re.search(r"^WARN certificate: .*soon\.crt expires on \S+ \(9 days\); fix: ask", result.output, re.M)
    assert "all 6 checks passed, 1 with a warning" in result.output
    garbage = tmp_path / "not-a.crt"
    garbage.write_text("hello")
    result = _cli("check", fresh_site, "--root-certificates", garbage)
    assert (
        result.exit_code == 2 and "FAIL certificate: " in result.output and "is not a PEM certificate" in result.output
    )


def test_superlink_closed_port_fails_naming_the_address_and_a_listening_one_passes(fresh_site) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens once it is closed
    result = _cli("check", fresh_site, "--superlink", f"127.0.0.1:{closed}")
    assert result.exit_code == 2
    assert f"FAIL superlink: 127.0.0.1:{closed} is not reachable" in result.output
    assert "1 of 6 checks failed (superlink)" in result.output
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = _cli("check", fresh_site, "--superlink", f"127.0.0.1:{port}")
    assert result.exit_code == 0, result.output
    assert f"PASS superlink: 127.0.0.1:{port} accepts TCP connections" in result.output
    assert _cli("check", fresh_site, "--superlink", "no-port").exit_code == 2


def _tls_server(certs: Path) -> tuple[socket.socket, int]:
    """A TLS server on loopback with the SuperLink's certificate from ``certs``: handshakes, then closes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed
                return
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_superlink_tls_handshake_is_verified_against_the_given_ca(tmp_path) -> None:
    federation, other = make_credentials(tmp_path / "certs"), make_credentials(tmp_path / "other")
    server, port = _tls_server(federation.directory)
    with server:
        good = check_superlink(f"127.0.0.1:{port}", federation.ca_cert)
        wrong = check_superlink(f"127.0.0.1:{port}", other.ca_cert)
    assert good.outcome == "PASS" and "TLS (TLSv1.3) verified against" in good.reason, good
    assert wrong.outcome == "FAIL" and "TLS certificate not verified" in wrong.reason, wrong
    assert "ca.crt" in wrong.fix


def test_bad_site_directories_exit_2_with_one_message(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    for command in ("status", "check"):
        result = _cli(command, missing)
        assert result.exit_code == 2 and f"site directory not found: {missing}" in result.output
        assert "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in ("status", "check"):
        result = _cli(command, empty)
        assert result.exit_code == 2 and f"{empty / 'site.toml'} not found" in result.output
    (empty / "site.toml").write_text("[site\nname = 'x'\n")
    result = _cli("status", empty)
    assert result.exit_code == 2 and "not valid TOML" in result.output and "fix the syntax" in result.output
    result = _cli("check", empty)
    assert result.exit_code == 2 and "FAIL site.toml:" in result.output and "not valid TOML" in result.output
    assert "1 of 1 checks failed (site.toml)" in result.output and "Traceback" not in result.output
    assert list(empty.iterdir()) == [empty / "site.toml"]


def test_a_budget_changed_in_site_toml_after_the_ledger_fails_the_check(whas500, fresh_site) -> None:
    _open(fresh_site, whas500[1]).close()  # the ledger is created with epsilon 2
    config = fresh_site / "site.toml"
    config.write_text(config.read_text().replace("target_epsilon = 2.0", "target_epsilon = 3.0"))
    result = _cli("check", fresh_site)
    assert result.exit_code == 2 and "FAIL ledger: " in result.output
    assert "sets the budget (epsilon 3, delta default), the ledger was created with (epsilon 2" in result.output
    status = _status(fresh_site)
    assert (status["target_epsilon"], status["ledger"]["target_epsilon"], status["remaining_epsilon"]) == (
        3.0,
        2.0,
        2.0,
    )


def test_auth_key_must_parse_and_be_private(tmp_path) -> None:
    key = make_credentials(tmp_path / "certs", nodes=["site-a"]).node_key("site-a")
    assert check_auth_key(key).outcome == "PASS"
    key.chmod(0o644)
    warned = check_auth_key(key)
    assert warned.outcome == "WARN" and warned.fix == f"chmod 600 {key}"
    public = key.with_suffix(".pub")
    failed = check_auth_key(public)
    assert failed.outcome == "FAIL" and "is not an unencrypted OpenSSH private key" in failed.reason
    assert check_auth_key(tmp_path / "missing.key").reason.endswith("missing.key not found")
