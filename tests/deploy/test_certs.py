"""Credentials for the deployment engine: a CA-signed SuperLink certificate, SuperNode SSH keys."""

from __future__ import annotations

import ipaddress
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from fedsynth.deploy.certs import CredentialsError, add_node_key, make_credentials, renew_server_certificate


def test_server_certificate_verifies_against_the_ca_for_each_host(tmp_path) -> None:
    files = make_credentials(tmp_path / "certs", nodes=["site-0"], hosts=("127.0.0.1", "fed.example.org"))
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer is wrong
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["fed.example.org"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The standard library's TLS stack accepts the pair (what uvicorn serves with).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)
    ssl.create_default_context(cafile=str(files.ca_cert))


def test_private_keys_are_owner_only_and_node_keys_are_flower_format(tmp_path) -> None:
    files = make_credentials(tmp_path / "certs", nodes=["site-0", "site-1"])
    for private in (files.ca_key, files.server_key, files.node_key("site-0"), files.node_key("site-1")):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    key = load_ssh_private_key(files.node_key("site-0").read_bytes(), None)
    public = load_ssh_public_key(files.node_public_key("site-0").read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    assert key.public_key().public_numbers() == public.public_numbers()
    other = load_ssh_public_key(files.node_public_key("site-1").read_bytes())
    assert other.public_numbers() != public.public_numbers()


def test_existing_set_is_not_replaced_and_bad_input_writes_nothing(tmp_path) -> None:
    files = make_credentials(tmp_path / "certs")
    before = files.ca_cert.read_bytes()
    with pytest.raises(CredentialsError, match="already exists.*--force"):
        make_credentials(tmp_path / "certs")
    assert files.ca_cert.read_bytes() == before
    with pytest.raises(CredentialsError, match="'../evil' is not a safe file name"):
        make_credentials(tmp_path / "other", nodes=["site-0", "../evil"])
    with pytest.raises(CredentialsError, match="repeat"):
        make_credentials(tmp_path / "other", nodes=["a", "a"])
    with pytest.raises(CredentialsError, match="days=0"):
        make_credentials(tmp_path / "other", days=0)
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["certs"]  # no staging directory left behind
    replaced = make_credentials(tmp_path / "certs", overwrite=True)
    assert replaced.ca_cert.read_bytes() != before


def test_node_key_added_to_an_existing_set(tmp_path) -> None:
    make_credentials(tmp_path / "certs")
    private, public = add_node_key(tmp_path / "certs", "site-7")
    assert load_ssh_private_key(private.read_bytes(), None).public_key().public_numbers() == (
        load_ssh_public_key(public.read_bytes()).public_numbers()
    )
    with pytest.raises(CredentialsError, match="already exists"):
        add_node_key(tmp_path / "certs", "site-7")


def test_a_non_empty_directory_without_a_credential_set_is_never_replaced(tmp_path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CredentialsError, match="not empty"):
        make_credentials(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_server_certificate_always_names_the_coordinators_loopback(tmp_path) -> None:
    # The SuperLink listens on 127.0.0.1 only; the coordinator's flwr CLI, SuperExec and Fleet
    # gateway verify it there, so a certificate made for public names alone would lock them out.
    files = make_credentials(tmp_path / "certs", hosts=("fed.example.org",))
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["fed.example.org"]
    assert server.subject.rfc4514_string() == "CN=fed.example.org"


def test_renewal_keeps_the_ca_and_the_names_and_refuses_to_outlive_the_ca(tmp_path) -> None:
    files = make_credentials(tmp_path / "certs", hosts=("fed.example.org",), days=30, ca_days=400)
    ca_before = files.ca_cert.read_bytes()
    old = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    new = renew_server_certificate(files.directory, days=365)
    assert files.ca_cert.read_bytes() == ca_before  # sites keep their ca.crt
    on_disk = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert on_disk == new and new.serial_number != old.serial_number
    new.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_before))
    names = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names) == set(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    assert (new.not_valid_after_utc - old.not_valid_after_utc).days == 335
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o600
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)  # the new key matches the new certificate
    assert not list(files.directory.glob("*.new"))
    # A certificate past the CA's own expiry would be refused by every site: not written.
    with pytest.raises(CredentialsError, match="would outlive it. Renew with --days 399 or less"):
        renew_server_certificate(files.directory, days=500)
    assert x509.load_pem_x509_certificate(files.server_cert.read_bytes()) == new


def test_renewal_needs_the_ca_key_and_a_new_set_has_a_ca_that_outlives_its_certificate(tmp_path) -> None:
    files = make_credentials(tmp_path / "certs")
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert (ca.not_valid_after_utc - server.not_valid_after_utc).days >= 9 * 365
    files.ca_key.unlink()
    with pytest.raises(CredentialsError, match="ca.key is missing"):
        renew_server_certificate(files.directory)
    with pytest.raises(CredentialsError, match="the CA must outlive"):
        make_credentials(tmp_path / "other", days=30, ca_days=10)
