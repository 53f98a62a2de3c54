"""TLS certificates and SuperNode authentication keys, made with the ``cryptography`` package.

Why our own: Flower's docs point at a shell script around ``openssl``; a hospital's IT team
gets one command instead (``fedsynth deploy certs DIR``) that works wherever fedsynth installs.

* ``ca.crt`` / ``ca.key``: a private certificate authority (ECDSA P-384). Sites receive
  ``ca.crt`` only, to verify the SuperLink; ``ca.key`` never leaves the coordinator.
* ``server.pem`` / ``server.key``: the SuperLink's certificate, signed by the CA, valid for the
  host names and IP addresses given (loopback by default) and always for 127.0.0.1, where the
  coordinator's own ``flwr`` CLI, SuperExec and Fleet gateway reach the loopback-only SuperLink.
* ``<node>.key`` / ``<node>.pub``: one SuperNode's authentication key pair (ECDSA P-384 in
  OpenSSH format, the format ``flower-supernode --auth-supernode-private-key`` and
  ``flwr supernode register`` read). The public key is registered at the SuperLink; a node
  whose key is not registered is refused.

Private keys are written with mode 0600. Everything is written to a temporary directory first
and moved into place only when complete, so a failure never leaves half a credential set.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsynth.errors import UserError

DEFAULT_HOSTS = ("127.0.0.1", "::1", "localhost")
# The SuperLink listens on loopback only (its port serves the unauthenticated Control API); the
# tools on the coordinator's host connect to it there, so its certificate must name it.
COORDINATOR_LOOPBACK = "127.0.0.1"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
# The CA outlives the yearly SuperLink certificates it signs: renewing one (renew_server_certificate)
# then needs nothing from the sites, whose only copy of the federation's trust is ca.crt.
CA_DAYS = 3650


class CredentialsError(UserError, ValueError):
    """Credentials cannot be made as asked; the message names the argument and the fix."""


@dataclass(frozen=True)
class TLSFiles:
    """Where one credential set lies."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY

    def node_key(self, node: str) -> Path:
        return self.directory / "nodes" / f"{node}.key"

    def node_public_key(self, node: str) -> Path:
        return self.directory / "nodes" / f"{node}.pub"


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _check_node_name(node: str) -> None:
    if not node or not all(c.isalnum() or c in "-_." for c in node) or node.startswith("."):
        raise CredentialsError(
            f"node name {node!r} is not a safe file name: use letters, digits, '-', '_' or '.' (e.g. 'site-1')"
        )


def _node_key_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


def _certificate_authority(days: int, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsynth federation CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def _server_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: tuple[str, ...], days: int, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def make_credentials(
    directory: Path,
    nodes: list[str] | tuple[str, ...] = (),
    hosts: tuple[str, ...] = DEFAULT_HOSTS,
    days: int = 365,
    overwrite: bool = False,
    ca_days: int = CA_DAYS,
) -> TLSFiles:
    """Write a CA (valid ``ca_days``), a SuperLink certificate for ``hosts`` (valid ``days``) and
    one key pair per node to ``directory``.

    Refuses to overwrite an existing credential set unless ``overwrite``: replacing a CA silently
    would lock every site out.
    """
    directory = Path(directory)
    if not hosts:
        raise CredentialsError("hosts is empty: give the SuperLink's host names or IP addresses (e.g. 127.0.0.1)")
    if days < 1:
        raise CredentialsError(f"days={days}: a certificate must be valid for at least 1 day")
    if ca_days < days:
        raise CredentialsError(f"ca_days={ca_days} < days={days}: the CA must outlive the certificate it signs")
    for node in nodes:
        _check_node_name(node)
    if len(set(nodes)) != len(nodes):
        raise CredentialsError(f"node names repeat in {list(nodes)}: each SuperNode needs its own key")
    files = TLSFiles(directory)
    if directory.exists() and any(directory.iterdir()) and not files.ca_cert.exists():
        raise CredentialsError(
            f"{directory} is not empty and holds no credential set (no {CA_CERT}): choose a new or empty directory"
        )
    if files.ca_cert.exists() and not overwrite:
        raise CredentialsError(
            f"{files.ca_cert} already exists: pass overwrite (--force) to replace the whole set, "
            "or add SuperNode keys to it with `fedsynth deploy node-key DIR NAME`"
        )
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = _certificate_authority(ca_days, now)
    hosts = tuple(dict.fromkeys((*hosts, COORDINATOR_LOOPBACK)))  # the public names first: hosts[0] is the CN
    server_key, server_cert = _server_certificate(ca_key, ca_cert, hosts, days, now)

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".certs-", dir=directory.parent))
    try:
        staged = TLSFiles(staging)
        _write(staged.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
        _write(staged.ca_key, _private_key_pem(ca_key), private=True)
        _write(staged.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
        _write(staged.server_key, _private_key_pem(server_key), private=True)
        for node in nodes:
            private, public = _node_key_pair()
            _write(staged.node_key(node), private, private=True)
            _write(staged.node_public_key(node), public)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files


def add_node_key(directory: Path, node: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Add one SuperNode key pair to ``directory/nodes``; returns (private key, public key)."""
    _check_node_name(node)
    files = TLSFiles(Path(directory))
    private_path, public_path = files.node_key(node), files.node_public_key(node)
    if private_path.exists() and not overwrite:
        raise CredentialsError(f"{private_path} already exists: pass overwrite (--force) to replace it")
    private, public = _node_key_pair()
    _write(private_path.with_suffix(".key.tmp"), private, private=True)
    _write(public_path, public)
    private_path.with_suffix(".key.tmp").replace(private_path)
    return private_path, public_path


def renew_server_certificate(directory: Path, hosts: tuple[str, ...] = (), days: int = 365) -> x509.Certificate:
    """Replace ``server.pem`` / ``server.key`` with a new pair signed by the set's own CA.

    ``hosts``: the names the new certificate is valid for (default: the current certificate's).
    The CA is kept, so sites need nothing new; the SuperLink and gateway load the pair when they
    restart. Refuses a certificate that would outlive the CA (every site then needs a new CA).
    """
    files = TLSFiles(Path(directory))
    for path in (files.ca_cert, files.ca_key):
        if not path.exists():
            raise CredentialsError(
                f"{path} is missing: renew on the coordinator's credential directory made by `fedsynth deploy certs`"
            )
    if days < 1:
        raise CredentialsError(f"days={days}: a certificate must be valid for at least 1 day")
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_key.public_key() != ca_cert.public_key():
        raise CredentialsError(f"{files.ca_key} is not the key of {files.ca_cert}: restore the pair from the backup")
    if not hosts:
        if not files.server_cert.exists():
            raise CredentialsError(f"{files.server_cert} is missing: name the SuperLink's hosts with --host")
        current = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = tuple(str(name.value) for name in san)
    now = dt.datetime.now(dt.UTC)
    if now + dt.timedelta(days=days) > ca_cert.not_valid_after_utc:
        left = (ca_cert.not_valid_after_utc - now).days
        raise CredentialsError(
            f"the CA {files.ca_cert} expires on {ca_cert.not_valid_after_utc:%Y-%m-%d}: a certificate for {days} days "
            f"would outlive it. Renew with --days {max(left, 1)} or less, or make a new set (`fedsynth deploy certs "
            "--force`), whose ca.crt every site then needs"
        )
    hosts = tuple(dict.fromkeys((*hosts, COORDINATOR_LOOPBACK)))
    key, cert = _server_certificate(ca_key, ca_cert, hosts, days, now)
    # Both files written beside their targets first, then each moved in place: never half a file.
    staged_key, staged_cert = files.server_key.with_suffix(".key.new"), files.server_cert.with_suffix(".pem.new")
    _write(staged_key, _private_key_pem(key), private=True)
    _write(staged_cert, cert.public_bytes(serialization.Encoding.PEM))
    staged_key.replace(files.server_key)
    staged_cert.replace(files.server_cert)
    return cert
