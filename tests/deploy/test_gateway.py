"""The Fleet gateway: what it refuses before anything listens, and what it never forwards.

The end-to-end proof (a real SuperLink, SuperNodes and an outsider) is
``tests/deploy/test_enrolment.py``; these run in-process and in milliseconds.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.deploy.certs import make_credentials
from fedsynth.deploy.gateway import FleetGateway, fleet_paths


def _gateway(tmp_path, *args: str):
    return CliRunner().invoke(app, ["deploy", "gateway", str(tmp_path / "certs"), *args])


@pytest.fixture
def certs(tmp_path):
    return make_credentials(tmp_path / "certs")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--superlink", "10.0.0.5:9093"], "must listen on the coordinator's loopback"),
        (["--superlink", "0.0.0.0:9093"], "must listen on the coordinator's loopback"),
        (["--listen", "0.0.0.0:9093", "--superlink", "127.0.0.1:9093"], "give the public Fleet gateway its own port"),
        (["--listen", "nonsense"], "--listen 'nonsense' is not host:port"),
    ],
)
def test_a_layout_that_would_expose_the_control_api_is_refused(tmp_path, certs, args, message) -> None:
    result = _gateway(tmp_path, *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_missing_credentials_and_a_taken_port_are_named(tmp_path) -> None:
    result = _gateway(tmp_path, "--listen", "127.0.0.1:19092")
    assert result.exit_code == 2 and "ca.crt is missing: make the credentials" in result.output, result.output
    make_credentials(tmp_path / "certs")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _gateway(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert result.exit_code == 2 and f"--listen 127.0.0.1:{port}: cannot listen there" in result.output


def _call(gateway: FleetGateway, method: str, path: str, query: bytes = b"") -> tuple[int, bytes]:
    """One HTTP request through the gateway's ASGI interface, as uvicorn would deliver it."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}
    asyncio.run(gateway(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_only_the_fleet_api_routes_are_forwarded(certs) -> None:
    # The upstream port is closed: a forwarded request is answered 502, a refused one 404 before
    # any connection is tried.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    gateway = FleetGateway(("127.0.0.1", closed), certs.ca_cert)
    assert "/v1/fleet/activate-node" in gateway.paths and "/v1/fleet/pull-messages" in gateway.paths
    assert all(path.startswith("/v1/fleet/") for path in fleet_paths())
    for method, path in [
        ("POST", "/v1/control/register-node"),  # enrolment: the coordinator's, on loopback
        ("POST", "/v1/control/list-runs"),
        ("POST", "/v1/runtime/acquire-task"),  # the ServerApp's channel
        ("GET", "/v1/fleet/pull-messages"),
        ("POST", "/v1/fleet/../control/register-node"),
        ("POST", "/v1/fleet/pull-messages/"),
        ("GET", "/docs"),
    ]:
        status, body = _call(gateway, method, path)
        assert status == 404 and b"only Flower's Fleet API" in body, (method, path)
    assert _call(gateway, "POST", "/v1/fleet/pull-messages", b"x=1")[0] == 404
    status, body = _call(gateway, "POST", "/v1/fleet/pull-messages")
    assert status == 502 and b"did not answer" in body
