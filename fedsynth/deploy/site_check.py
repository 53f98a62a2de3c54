"""A site's pre-flight before it starts its SuperNode (``fedsynth site check``).

Each check is one :class:`Check`, PASS, WARN or FAIL, with the reason and the fix: what the
hospital's IT team would otherwise learn from a SuperNode that starts and then refuses, or never
connects. Nothing is written. The checks:

* ``site.toml`` is valid; the data file is there and valid against the public schema, with enough
  training records, and its rows are those ``state/split.json`` split (the site refuses others);
* the privacy ledger verifies against its chain and witness, with the budget ``site.toml`` sets;
* with ``--root-certificates``: the CA certificate parses, and is neither expired nor within
  :data:`EXPIRY_WARNING_DAYS` of it;
* with ``--auth-key``: the SuperNode's private key parses (OpenSSH, as Flower reads it) and only
  its owner may read it;
* with ``--superlink HOST:PORT``: a TCP connection within :data:`CONNECT_TIMEOUT_S`, and with a CA
  a TLS handshake that verifies the server's certificate against it for ``HOST``.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from fedsynth.client.config import SITE_FILE, SiteConfig
from fedsynth.client.site_status import (
    FAILED,
    NEVER_TRAINED,
    audit_status,
    data_status,
    ledger_status,
    require_site_dir,
)
from fedsynth.data.minimum import TooFewRecordsError, check_dp_training_records
from fedsynth.deploy import DeploymentError
from fedsynth.deploy.gateway import split_address
from fedsynth.errors import UserError

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
EXPIRY_WARNING_DAYS = 30
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    outcome: str  # PASS, WARN or FAIL
    reason: str
    fix: str = ""


def _config_checks(site_dir: Path, config: SiteConfig) -> list[Check]:
    checks = []
    data = data_status(config, site_dir)
    if data.problem is not None:
        checks.append(
            Check(
                "data",
                FAIL,
                data.problem,
                "fix the data file (or site.data / site.schema in site.toml) and check again",
            )
        )
    else:
        assert data.n_rows is not None
        training = config.training
        try:
            check_dp_training_records(config.name, data.n_rows, training.holdout_fraction, training.batch_size)
            checks.append(Check("data", PASS, f"{data.n_rows} rows of {data.path} valid against the schema"))
        except TooFewRecordsError as exc:
            reason, _, fix = str(exc).partition("; fix: ")
            checks.append(Check("data", FAIL, reason, fix))
    if data.matches_split is False:
        checks.append(
            Check(
                "split",
                FAIL,
                f"the data's rows (sha256 {data.rows_sha256}) differ from those split on {data.split_created} "
                f"(sha256 {data.split_sha256}); the site refuses to train on them",
                "restore the original data file; new data need a new site directory (and a new privacy ledger)",
            )
        )
    elif data.matches_split:
        checks.append(Check("split", PASS, f"the data are those split on {data.split_created}"))
    elif data.rows_sha256 is not None:
        checks.append(Check("split", PASS, "no split yet: the site splits its data at its first round"))
    checks.append(_ledger_check(site_dir, config))
    audits = audit_status(config, site_dir)
    if audits.answered >= audits.cap:
        checks.append(
            Check(
                "audits",
                WARN,
                f"{audits.answered} audits/evaluations answered, the cap "
                f"(privacy.max_audits = {audits.cap}): the site refuses any more",
                "only the site's privacy officer may raise privacy.max_audits",
            )
        )
    else:
        checks.append(Check("audits", PASS, f"{audits.answered} of {audits.cap} audits/evaluations answered"))
    return checks


def _ledger_check(site_dir: Path, config: SiteConfig) -> Check:
    ledger = ledger_status(site_dir)
    if ledger.state == NEVER_TRAINED:
        return Check("ledger", PASS, "no ledger yet (never trained): the site creates it at its first round")
    if ledger.state == FAILED:
        return Check(
            "ledger",
            FAIL,
            str(ledger.problem),
            f"see `fedsynth ledger verify {site_dir}`; restore the site's own backup",
        )
    privacy = config.privacy
    if ledger.target_epsilon != privacy.target_epsilon or (
        privacy.target_delta is not None and ledger.target_delta != privacy.target_delta
    ):
        return Check(
            "ledger",
            FAIL,
            f"{site_dir / SITE_FILE} sets the budget (epsilon {privacy.target_epsilon:g}, delta "
            f"{privacy.target_delta if privacy.target_delta is not None else 'default'}), the ledger was created "
            f"with (epsilon {ledger.target_epsilon:g}, delta {ledger.target_delta:g}): the site refuses to open it",
            "set [privacy] target_epsilon (and target_delta) back to the ledger's budget; a budget is fixed for "
            "the life of the data",
        )
    remaining = max(0.0, ledger.target_epsilon - ledger.epsilon)
    reason = f"verified: {ledger.entries} entries, epsilon {ledger.epsilon:.4f} spent of {ledger.target_epsilon:g}"
    if remaining <= 0:
        return Check(
            "ledger",
            WARN,
            reason + ": the whole budget is spent; the site will refuse to train",
            "nothing to fix: these data have no privacy budget left",
        )
    return Check("ledger", PASS, f"{reason}, {remaining:.4f} left")


def check_certificate(path: Path, now: dt.datetime | None = None) -> Check:
    """The CA certificate parses; FAIL if expired (or not yet valid), WARN within 30 days of expiry."""
    now = now or dt.datetime.now(dt.UTC)
    fix = "get the federation's current ca.crt from the coordinator (`fedsynth deploy certs` makes it)"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return Check("certificate", FAIL, f"{path} not found", fix)
    except (OSError, ValueError) as exc:
        return Check("certificate", FAIL, f"{path} is not a PEM certificate ({exc})", fix)
    expires, starts = cert.not_valid_after_utc, cert.not_valid_before_utc
    if expires <= now:
        return Check("certificate", FAIL, f"{path} expired on {expires:%Y-%m-%d %H:%M} UTC", fix)
    if starts > now:
        return Check(
            "certificate",
            FAIL,
            f"{path} is not valid before {starts:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or " + fix,
        )
    days = (expires - now).days
    if days < EXPIRY_WARNING_DAYS:
        return Check(
            "certificate",
            WARN,
            f"{path} expires on {expires:%Y-%m-%d} ({days} days)",
            "ask the coordinator for the renewed ca.crt before then",
        )
    return Check("certificate", PASS, f"{path} is valid until {expires:%Y-%m-%d} ({days} days)")


def check_auth_key(path: Path) -> Check:
    """The SuperNode's private key parses as OpenSSH (as flower-supernode reads it) and is private."""
    fix = "give this node's private key (`fedsynth deploy node-key DIR NAME` writes NAME.key; NAME.pub is registered)"
    try:
        serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return Check("auth key", FAIL, f"{path} not found", fix)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return Check("auth key", FAIL, f"{path} is not an unencrypted OpenSSH private key ({exc})", fix)
    if path.stat().st_mode & 0o077:
        return Check("auth key", WARN, f"{path} can be read by others than its owner", f"chmod 600 {path}")
    return Check("auth key", PASS, f"{path} is an OpenSSH private key readable by its owner only")


def check_superlink(address: str, ca: Path | None = None, timeout: float = CONNECT_TIMEOUT_S) -> Check:
    """A TCP connection to ``address``; with ``ca``, a TLS handshake verifying the server for its host."""
    try:
        host, port = split_address(address, "--superlink", example="fed.example.org:9092")
    except DeploymentError as exc:
        return Check("superlink", FAIL, str(exc), "give the coordinator's gateway address as host:port")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Check(
            "superlink",
            FAIL,
            f"{address} is not reachable ({exc})",
            "check the host and port (the coordinator's public gateway port), that it is running, and "
            "that the firewall lets this machine connect to it",
        )
    with sock:
        if ca is None:
            return Check(
                "superlink",
                PASS,
                f"{address} accepts TCP connections (TLS not checked: it needs a valid --root-certificates)",
            )
        try:
            context = ssl.create_default_context(cafile=str(ca))
            context.set_alpn_protocols(["h2"])  # what gRPC offers
            with context.wrap_socket(sock, server_hostname=host) as tls:
                version = tls.version()
        except ssl.SSLCertVerificationError as exc:
            return Check(
                "superlink",
                FAIL,
                f"{address}: TLS certificate not verified against {ca} ({exc.verify_message})",
                f"the server's certificate must be signed by {ca} and name {host}: get the federation's "
                "current ca.crt, or connect by a name its certificate lists",
            )
        except (ssl.SSLError, OSError) as exc:
            return Check(
                "superlink",
                FAIL,
                f"{address}: TLS handshake failed ({exc})",
                "check that the address is the coordinator's TLS gateway port, not another service",
            )
    return Check("superlink", PASS, f"{address} reachable; TLS ({version}) verified against {ca} for {host}")


def check_site(
    site_dir: Path,
    *,
    superlink: str | None = None,
    root_certificates: Path | None = None,
    auth_key: Path | None = None,
    now: dt.datetime | None = None,
) -> list[Check]:
    """Every pre-flight check; a UserError only when ``site_dir`` is not a site directory at all."""
    config_path = require_site_dir(site_dir)
    try:
        config = SiteConfig.from_toml(config_path)
    except UserError as exc:
        checks = [Check("site.toml", FAIL, str(exc), f"correct {config_path} (fields: fedsynth/client/config.py)")]
    else:
        checks = [Check("site.toml", PASS, f"site '{config.name}', target epsilon {config.privacy.target_epsilon:g}")]
        checks += _config_checks(site_dir, config)
    certificate = None
    if root_certificates is not None:
        certificate = check_certificate(root_certificates, now)
        checks.append(certificate)
    if auth_key is not None:
        checks.append(check_auth_key(auth_key))
    if superlink is not None:
        usable_ca = root_certificates if certificate is not None and certificate.outcome != FAIL else None
        checks.append(check_superlink(superlink, usable_ca))
    return checks
