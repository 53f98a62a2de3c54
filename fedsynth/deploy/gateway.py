"""The coordinator's only public port: a TLS gateway that passes Flower's Fleet API and nothing else.

Why: Flower 1.41 serves its Fleet API (SuperNodes), Control API (the ``flwr`` CLI: register
SuperNode keys, start and list runs) and Runtime API (the ServerApp's own channel) from one
HTTPS port, ``flower-superlink --host/--port``. The open-source SuperLink authenticates no
Control API caller: account authentication needs Flower Enterprise's OIDC plugin, and without it
``flwr.superlink.config_loader.load_control_authn_plugin`` returns a no-op plugin that accepts
everyone. Exposing that port therefore lets anyone holding the public CA certificate register
its own SuperNode key, list and start runs, or take the ServerApp's task through the Runtime API.

So the SuperLink listens on the coordinator's loopback only, and this gateway is what the
network sees: it serves TLS with the SuperLink's certificate and forwards exactly the routes of
Flower's Fleet router (``POST /v1/fleet/<method>``, read from the installed Flower so the list
never drifts) to the SuperLink. Every other request is answered 404 here and never reaches the
SuperLink. On the Fleet API itself, ``--enable-supernode-auth`` refuses self-registration and
every call not signed by a registered key, so enrolment is what the coordinator grants on the
loopback-only Control API (``flwr supernode register``), and nothing else.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx

from fedsynth.deploy import DeploymentError
from fedsynth.deploy.certs import TLSFiles

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_LISTEN = "0.0.0.0:9092"
DEFAULT_SUPERLINK = "127.0.0.1:9093"
# Connection-level headers (RFC 9110 7.6.1) belong to one hop; the gateway never forwards them.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host"}
)  # fmt: skip
REFUSED = (
    b"not served on this port: only Flower's Fleet API (SuperNodes) is public; the Control API "
    b"is reachable on the coordinator's loopback only\n"
)


def fleet_paths() -> frozenset[str]:
    """The Fleet API's routes as the installed Flower declares them (all POST)."""
    from flwr.superlink.routers.fleet.router import router

    paths = frozenset(route.path for route in router.routes)  # type: ignore[attr-defined]
    if not paths or not all(p.startswith("/v1/fleet/") for p in paths):
        raise DeploymentError(f"unexpected Fleet API routes in the installed Flower: {sorted(paths)}")
    return paths


def split_address(address: str, what: str, example: str = DEFAULT_SUPERLINK) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port); a clear error naming ``what`` otherwise."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeploymentError(f"{what} {address!r} is not host:port (e.g. {example})")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_layout(listen: str, superlink: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """Refuse a layout that would expose the Control API: the SuperLink off loopback, or sharing
    the public port."""
    listen_at, upstream = split_address(listen, "--listen"), split_address(superlink, "--superlink")
    if not is_loopback(upstream[0]):
        raise DeploymentError(
            f"--superlink {superlink}: the SuperLink must listen on the coordinator's loopback "
            f"(e.g. {DEFAULT_SUPERLINK}, flower-superlink --host 127.0.0.1): its port also serves the "
            "Control API, which authenticates nobody"
        )
    if listen_at[1] == upstream[1]:
        raise DeploymentError(
            f"--listen {listen} uses the SuperLink's port {upstream[1]}: give the public Fleet gateway its "
            f"own port (e.g. {DEFAULT_LISTEN}) so that the Control API's port is never public"
        )
    return listen_at, upstream


def _check_tls(tls: TLSFiles) -> None:
    for path in (tls.ca_cert, tls.server_cert, tls.server_key):
        if not path.is_file():
            raise DeploymentError(
                f"{path} is missing: make the credentials with `fedsynth deploy certs {tls.directory}`"
            )


def _check_free(host: str, port: int) -> None:
    """A clear error before uvicorn's own (which exits 1 after a log line) when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as error:
            raise DeploymentError(f"--listen {host}:{port}: cannot listen there ({error.strerror})") from None


class FleetGateway:
    """ASGI app forwarding the Fleet API's routes to a SuperLink over TLS; 404 for anything else."""

    def __init__(self, superlink: tuple[str, int], ca_cert: Path, timeout: float = 120.0) -> None:
        host, port = superlink
        self.base_url = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
        self.paths = fleet_paths()
        self._verify = ssl.create_default_context(cafile=str(ca_cert))
        self._timeout = httpx.Timeout(timeout, connect=10.0)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(verify=self._verify, timeout=self._timeout, follow_redirects=False)
        return self._client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http_request(scope, receive, send)
        # websocket and anything else: not answered (the connection is closed)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        # An exact match on the decoded path, forwarded as our own copy of it: no prefix test that
        # '/v1/fleet/../control/...' or an encoded slash could slip past.
        if scope["method"] != "POST" or path not in self.paths or scope.get("query_string"):
            await _reply(send, 404, REFUSED)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in HOP_BY_HOP]

        async def body() -> AsyncIterator[bytes]:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                yield message.get("body", b"")
                more = message.get("more_body", False)

        client = self._http()
        request = client.build_request("POST", self.base_url + path, headers=headers, content=body())
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError:
            await _reply(send, 502, f"the SuperLink at {self.base_url} did not answer\n".encode())
            return
        try:
            await send({
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP],
            })  # fmt: skip
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _reply(send: Send, status: int, text: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": text})


def serve(
    certs: Path,
    listen: str = DEFAULT_LISTEN,
    superlink: str = DEFAULT_SUPERLINK,
    announce: Callable[[str], object] = print,
) -> None:
    """Serve the Fleet gateway until stopped (blocking), with the SuperLink's certificate.

    Every check runs before anything listens; ``announce`` then receives one line saying what is
    served where.
    """
    import uvicorn

    (host, port), upstream = check_layout(listen, superlink)
    tls = TLSFiles(Path(certs))
    _check_tls(tls)
    _check_free(host, port)
    announce(f"Fleet gateway on {listen} -> SuperLink {superlink}: Fleet API only; the Control API stays on loopback")
    uvicorn.run(
        FleetGateway(upstream, tls.ca_cert),
        host=host,
        port=port,
        ssl_certfile=str(tls.server_cert),
        ssl_keyfile=str(tls.server_key),
        lifespan="on",
        access_log=True,  # who called which Fleet method, and every refused probe
        log_level="info",
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m fedsynth.deploy.gateway``: what the loopback launcher starts (light imports)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", type=Path, required=True)
    parser.add_argument("--listen", default=DEFAULT_LISTEN)
    parser.add_argument("--superlink", default=DEFAULT_SUPERLINK)
    args = parser.parse_args(argv)
    try:
        serve(args.certs, args.listen, args.superlink)
    except DeploymentError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
