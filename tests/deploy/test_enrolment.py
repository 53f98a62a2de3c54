"""Enrolment only the coordinator grants, on the real SuperLink, gateway and SuperNodes (loopback).

An outsider is someone holding what every site and `flwr` user is given, the federation's CA
certificate, plus a key pair of its own; it can reach whatever port SuperNodes connect to. It
must not register its key, list runs, reach the Runtime API, or join.

Limit: everything here runs on one host's loopback (no traffic to any other address). A second
loopback address, 127.0.0.2, stands for the coordinator's public interface: what listens there is
what another host could reach.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import tomli_w

from fedsynth.deploy.certs import add_node_key
from fedsynth.deploy.local import LoopbackFederation

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # flower-superexec


def _outsider_flwr(home: Path, address: str, ca_cert: Path, *args: str) -> dict:
    """Run `flwr ARGS` as the outsider, whose only connection is ``address`` verified with the CA."""
    home.mkdir(parents=True, exist_ok=True)
    config = {"superlink": {"default": "stolen", "stolen": {"address": address, "root-certificates": str(ca_cert)}}}
    (home / "config.toml").write_text(tomli_w.dumps(config))
    env = {**_env(), "FLWR_HOME": str(home)}
    done = subprocess.run(
        [str(BIN / "flwr"), *args, "stolen", "--format", "json"], capture_output=True, env=env, timeout=60
    )
    text = done.stdout.decode(errors="replace")
    try:
        answer = json.loads(text[text.index("{") :]) if "{" in text else {}
    except json.JSONDecodeError:
        answer = {}
    return answer


@contextlib.contextmanager
def _outsider_supernode(address: str, ca_cert: Path, key: Path, log: Path):
    """The outsider's own flower-supernode, signing with its own (never registered) key."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "flower-supernode"),
                "--superlink", address,
                "--root-certificates", str(ca_cert),
                "--auth-supernode-private-key", str(key),
                "--node-config", "site-dir='/nonexistent'",
                "--host", "127.0.0.1", "--port", str(_free_port()),
                "--max-retries", "1",
            ],
            stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _outsider_kit(tmp_path: Path, federation: LoopbackFederation) -> tuple[Path, Path, Path]:
    """The CA certificate (public) and a fresh key pair of the outsider's own: nothing else."""
    kit = tmp_path / "outsider"
    kit.mkdir()
    ca_cert = Path(shutil.copy(federation.tls.ca_cert, kit / "ca.crt"))
    private, public = add_node_key(kit, "evil")
    return ca_cert, private, public


def test_an_outsider_with_the_ca_certificate_can_neither_enrol_nor_join(tmp_path) -> None:
    with LoopbackFederation(tmp_path / "deployment") as federation:
        federation.start_node("site-0", tmp_path / "site-0")  # the coordinator enrols a site
        federation.wait_online(["site-0"])
        ca_cert, private, public = _outsider_kit(tmp_path, federation)
        home = tmp_path / "outsider-flwr"

        # Enrol its own key, and look around, through the port SuperNodes connect to.
        # (flwr --format json exits 0 with "success": false on a refusal.) The 404 is the gateway's:
        # the request never reached the SuperLink, TLS itself succeeded.
        for args in (("supernode", "register", str(public)), ("list",), ("supernode", "list")):
            answer = _outsider_flwr(home, federation.address, ca_cert, *args)
            assert answer.get("success") is False, f"the outsider ran `flwr {' '.join(args)}`: {answer}"
            assert "404 Not Found" in answer["error-message"], answer
        # Nor the Runtime API (the ServerApp's channel) or anything else on that port.
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_cert)), timeout=10) as client:
            base = f"https://{federation.address}"
            assert client.post(f"{base}/v1/runtime/acquire-task", content=b"").status_code == 404
            assert client.get(f"{base}/docs").status_code == 404
            assert client.post(f"{base}/v1/fleet/%2E%2E/control/list-runs", content=b"").status_code == 404

        # Join with the unregistered key: refused at activation, so it never receives a message.
        log = tmp_path / "outsider-supernode.log"
        with _outsider_supernode(federation.address, ca_cert, private, log) as intruder:
            assert intruder.wait(timeout=90) != 0
        assert "Failed to activate SuperNode" in log.read_text()

        # The coordinator (loopback Control API) still sees exactly the one site it enrolled.
        nodes = federation.flwr("supernode", "list", "fedsynth-loopback")["nodes"]
        assert [int(n["node-id"]) for n in nodes] == [federation.nodes["site-0"].node_id]
        assert federation.online_nodes() == {federation.nodes["site-0"].node_id}
        # ...and the SuperLink itself listens on the coordinator's loopback only, never on the
        # port handed to SuperNodes.
        from fedsynth.deploy.processes import listening_addresses

        assert federation._superlink is not None
        bound = listening_addresses(federation._superlink.pid)
        assert bound and {host for host, _ in bound} == {"127.0.0.1"}, bound
        assert int(federation.address.rsplit(":", 1)[1]) not in {port for _, port in bound}


def test_only_the_fleet_gateway_is_reachable_on_the_public_address_and_revocation_stops_a_site(tmp_path) -> None:
    """127.0.0.2 stands for the coordinator's public interface: a site joins through it, of every
    port the federation's processes listen on only the gateway answers there, and the site stops
    once the coordinator unregisters its key."""
    from fedsynth.deploy.processes import _children, listening_addresses

    public = "127.0.0.2"
    with LoopbackFederation(tmp_path / "deployment", public_host=public) as federation:
        node = federation.start_node("site-0", tmp_path / "site-0")
        federation.wait_online(["site-0"])  # TLS to 127.0.0.2 verified against the CA, key registered
        assert federation.address.startswith(f"{public}:")
        processes = [p for p in federation._processes if p.poll() is None]
        pids = {pid for p in processes for pid in [p.pid, *_children(p.pid)]}
        ports = {port for pid in pids for _, port in listening_addresses(pid)}
        assert node.process.pid in pids and len(ports) >= 3  # SuperLink, gateway, SuperNode runtime API
        reachable = set()
        for port in sorted(ports):
            with contextlib.suppress(OSError), socket.create_connection((public, port), timeout=2):
                reachable.add(port)
        assert reachable == {federation.fleet_port}

        # The coordinator revokes the site on the loopback Control API: its next heartbeat is
        # refused and the SuperNode stops.
        federation.flwr("supernode", "unregister", str(node.node_id), "fedsynth-loopback")
        node.process.wait(timeout=90)
        nodes = federation.flwr("supernode", "list", "fedsynth-loopback")["nodes"]
        assert [(int(n["node-id"]), n["status"]) for n in nodes] == [(node.node_id, "unregistered")]
        # ...and the revoked key cannot come back on its own.
        again = federation.start_node("site-0", tmp_path / "site-0", register=False, max_retries=1)
        assert again.process.wait(timeout=120) != 0
        assert "Failed to activate SuperNode" in again.log_path.read_text()
