"""A whole Flower deployment on one machine's loopback: SuperLink, SuperNodes, ``flwr run``.

Why: the deployment engine is what hospitals run, and its failure modes (TLS, node
authentication, a site that crashes mid-round) only show with the real processes. This starts
exactly those processes (``flower-superlink``, one ``flower-supernode`` per site, the ``flwr``
CLI, the coordinator's Fleet gateway) on loopback, as the coordinator and each site's IT team
would start them on separate machines (``deploy/README.md``):

* Enrolment only the coordinator grants: the SuperLink, whose one port also serves the
  unauthenticated Control API, listens on 127.0.0.1 only; SuperNodes reach it through
  :mod:`fedsynth.deploy.gateway` on a port of its own (``public_host``), which passes the Fleet
  API and nothing else. The ``flwr`` CLI (register keys, submit runs) talks to the loopback port.
* TLS everywhere a site talks to the coordinator: the SuperLink and the gateway serve the
  certificate made by :func:`fedsynth.deploy.certs.make_credentials`; SuperNodes and the
  ``flwr`` CLI verify it against the federation's CA.
* SuperNode authentication (``--enable-supernode-auth``): a node joins only if its public key
  was registered (``flwr supernode register``) first; any other node is refused.
* No runtime dependency installation (``--disable-runtime-dependency-installation``): the apps
  run in the environment fedsynth is installed in; the SuperLink never ``uv sync``s a CUDA torch.

Every process is started in its own session and stopped (with everything it spawned) by
:meth:`LoopbackFederation.stop`, which the context manager always calls.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from fedsynth.deploy import DeploymentError
from fedsynth.deploy.app_dir import write_app_dir
from fedsynth.deploy.certs import DEFAULT_HOSTS, TLSFiles, add_node_key, make_credentials
from fedsynth.deploy.processes import (  # noqa: F401  (_children, is_running: tests and benchmarks)
    HOST,
    _children,
    _raise_system_exit,
    _signal_tree,
    free_port,
    is_running,
    runs_descendant,
    stop_all_with_env,
)
from fedsynth.deploy.warm_superexec import warm_superexec_command
from fedsynth.server.app_config import APP_CONFIG

CONNECTION = "fedsynth-loopback"
FINISHED = "finished"
RUNNING_POLL = 15.0


@dataclass
class NodeProcess:
    """One running SuperNode: the site it serves and its process."""

    name: str
    site_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    node_id: int | None = None
    executor: subprocess.Popen[bytes] | None = None  # its SuperExec, when not the SuperNode's own


@dataclass
class LoopbackFederation:
    """A SuperLink with TLS and node authentication, its Fleet gateway, and SuperNodes, on loopback.

    ``workdir`` receives the credentials (unless ``credentials`` names an existing set), the
    ``flwr`` CLI home, a minimal Flower app directory and one log per process. The SuperLink
    (Control, Runtime and Fleet API) listens on 127.0.0.1:``port``; SuperNodes connect to the
    gateway at ``public_host``:``fleet_port`` (:attr:`address`), which stands for the
    coordinator's public interface (another loopback address such as 127.0.0.2 in tests).
    """

    workdir: Path
    credentials: Path | None = None
    startup_timeout: float = 90.0
    # Torch threads per SuperNode (inherited by its ClientApp processes). Sites sharing one
    # machine would otherwise each start a thread per core and oversubscribe it.
    threads_per_node: int | None = None
    # The SuperLink's state: in memory by default. A file database is what a long-lived
    # coordinator wants, but Flower's SQLite state answers "database is locked" (HTTP 500, a lost
    # reply) when many SuperNodes share a small machine; measured with 10 on 2 cores.
    database: Path | None = None
    # Each SuperNode's ClientApp processes fork from a process that imported them already
    # (fedsynth.deploy.warm_superexec) instead of Flower's cold flwr-clientapp per message.
    warm_clientapps: bool = True
    port: int = field(default_factory=free_port)
    public_host: str = HOST
    fleet_port: int | None = None
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    _superlink: subprocess.Popen[bytes] | None = None
    _gateway: subprocess.Popen[bytes] | None = None
    _previous_sigterm: Any = None
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # ------------------------------------------------------------------ set-up
    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        if self.credentials is None:
            self.credentials = self.workdir / "certs"
        self.tls = TLSFiles(Path(self.credentials))
        if not self.tls.ca_cert.exists():
            make_credentials(self.tls.directory, hosts=tuple(dict.fromkeys((*DEFAULT_HOSTS, self.public_host))))
        if self.fleet_port is None:
            self.fleet_port = free_port(self.public_host)
        self.flwr_home = self.workdir / "flwr-home"
        self.app_dir = self.workdir / "app"

    @property
    def address(self) -> str:
        """Where SuperNodes connect: the Fleet gateway, the only port meant to be public."""
        return f"{self.public_host}:{self.fleet_port}"

    @property
    def control_address(self) -> str:
        """The SuperLink itself (Control API for the ``flwr`` CLI): loopback only."""
        return f"{HOST}:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)  # flower-superexec etc. must be on PATH
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["FLWR_HOME"] = str(self.flwr_home)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _write_cli_config(self) -> None:
        """The ``flwr`` CLI's connection to this SuperLink, verified against the federation CA."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        config = {
            "superlink": {
                "default": CONNECTION,
                CONNECTION: {"address": self.control_address, "root-certificates": str(self.tls.ca_cert)},
            }
        }
        (self.flwr_home / "config.toml").write_text(tomli_w.dumps(config))

    def _spawn(
        self, args: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.workdir / "logs" / f"{log_name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self._env(), **(env or {})},
                cwd=self.workdir,
                start_new_session=True,
            )
        self._processes.append(process)
        return process, log_path

    def flwr(self, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run one ``flwr`` CLI command against this SuperLink; its JSON answer."""
        command = [str(Path(sys.executable).parent / "flwr"), *args, "--format", "json"]
        done = subprocess.run(command, capture_output=True, env=self._env(), cwd=self.workdir, timeout=timeout)
        text = done.stdout.decode(errors="replace")
        try:
            answer = json.loads(text[text.index("{") :]) if "{" in text else {}
        except json.JSONDecodeError:
            answer = {}
        if done.returncode != 0 or not answer.get("success", False):
            stderr = done.stderr.decode(errors="replace")[-2000:]
            raise DeploymentError(f"`flwr {' '.join(args)}` failed (exit {done.returncode}): {text.strip()} {stderr}")
        return answer

    def start(self) -> LoopbackFederation:
        """Start the SuperLink (loopback only) and its Fleet gateway; wait until both answer over TLS."""
        self._write_cli_config()
        write_app_dir(self.app_dir)
        tls = self.tls
        self._superlink, log_path = self._spawn(
            [
                str(Path(sys.executable).parent / "flower-superlink"),
                "--ssl-certfile", str(tls.server_cert),
                "--ssl-keyfile", str(tls.server_key),
                "--ssl-ca-certfile", str(tls.ca_cert),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                *(["--database", str(self.database)] if self.database else []),
                "--host", HOST,  # never 0.0.0.0: this port serves the Control API, which authenticates nobody
                "--port", str(self.port),
            ],
            "superlink",
        )  # fmt: skip
        self._wait_for_tls("flower-superlink", self._superlink, self.control_address, log_path)
        self._gateway, log_path = self._spawn(
            [
                sys.executable, "-m", "fedsynth.deploy.gateway",
                "--certs", str(tls.directory),
                "--listen", self.address,
                "--superlink", self.control_address,
            ],
            "gateway",
        )  # fmt: skip
        self._wait_for_tls("the Fleet gateway", self._gateway, self.address, log_path)
        return self

    def _wait_for_tls(self, what: str, process: subprocess.Popen[bytes], address: str, log_path: Path) -> None:
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        host, port = address.rsplit(":", 1)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DeploymentError(f"{what} exited with {process.returncode}; see {log_path}")
            try:
                with (
                    socket.create_connection((host, int(port)), timeout=2) as raw,
                    context.wrap_socket(raw, server_hostname=host),
                ):
                    return
            except (ConnectionRefusedError, TimeoutError, ssl.SSLError, OSError):
                time.sleep(0.3)
        raise DeploymentError(f"{what} did not answer on {address} within {self.startup_timeout}s; see {log_path}")

    # ------------------------------------------------------------------ nodes
    def register(self, name: str) -> int:
        """Register ``name``'s public key at the SuperLink (made if missing); its node id."""
        if not self.tls.node_public_key(name).exists():
            add_node_key(self.tls.directory, name)
        answer = self.flwr("supernode", "register", str(self.tls.node_public_key(name)), CONNECTION, "--name", name)
        return int(answer["node-id"])

    def start_node(
        self,
        name: str,
        site_dir: Path,
        register: bool = True,
        max_retries: int | None = None,
        netns: str | None = None,
    ) -> NodeProcess:
        """Start a SuperNode for the site at ``site_dir`` with ``name``'s key (registered first).

        ``netns``: run the SuperNode and its SuperExec inside that network namespace (``ip netns
        exec``), a host of its own that reaches the coordinator only over its link.
        """
        node_id = self.register(name) if register else None
        if not self.tls.node_key(name).exists():
            add_node_key(self.tls.directory, name)
        runtime_port = free_port()
        args = [
            sys.executable, "-m", "fedsynth.deploy.prompt_supernode",  # flower-supernode, polling every 0.5 s
            "--superlink", self.address,
            "--root-certificates", str(self.tls.ca_cert),
            "--auth-supernode-private-key", str(self.tls.node_key(name)),
            "--node-config", f"site-dir={json.dumps(str(Path(site_dir).resolve()))}",
            "--host", HOST,
            "--port", str(runtime_port),
        ]  # fmt: skip
        if max_retries is not None:
            args += ["--max-retries", str(max_retries)]
        if self.warm_clientapps:
            args += ["--isolation", "process"]
        threads = {} if self.threads_per_node is None else {"OMP_NUM_THREADS": str(self.threads_per_node)}
        host = ["ip", "netns", "exec", netns] if netns else []  # exec's the command: the pid stays the node's
        process, log_path = self._spawn([*host, *args], f"supernode-{name}", threads)
        executor = None
        if self.warm_clientapps:
            command = warm_superexec_command(f"{HOST}:{runtime_port}", process.pid)
            executor, _ = self._spawn([*host, *command], f"superexec-{name}", threads)
        node = NodeProcess(name, Path(site_dir), process, log_path, node_id, executor)
        self.nodes[name] = node
        return node

    def online_nodes(self) -> set[int]:
        answer = self.flwr("supernode", "list", CONNECTION)
        return {int(n["node-id"]) for n in answer.get("nodes", []) if n.get("status") == "online"}

    def wait_online(self, names: list[str] | None = None, timeout: float | None = None) -> None:
        """Wait until the named (default: all started) nodes are online at the SuperLink."""
        wanted = {self.nodes[n].node_id for n in (names or list(self.nodes))} - {None}  # unregistered: never
        timeout = timeout or self.startup_timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.node_id in wanted and node.process.poll() is not None:
                    raise DeploymentError(
                        f"SuperNode {node.name} exited with {node.process.returncode}; see {node.log_path}"
                    )
            if wanted <= self.online_nodes():
                return
            time.sleep(0.5)
        raise DeploymentError(f"SuperNodes {sorted(wanted - self.online_nodes())} not online after {timeout}s")

    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a SuperNode and everything it spawned (its ClientApp mid-round included)."""
        node = self.nodes[name]
        for process in (node.process, node.executor):
            if process is not None:
                _signal_tree(process, sig)
                process.wait(timeout=30)

    # ------------------------------------------------------------------ runs
    def submit(
        self, federation_config: Path, app_dir: Path | None = None, run_config: dict[str, str | int] | None = None
    ) -> int:
        """``flwr run`` the fedsynth app with this federation config (and other keys of
        ``fedsynth.server.app.APP_CONFIG``, e.g. ``{"task": "audit"}``); the Flower run id."""
        values: dict[str, str | int] = {"federation-config": str(Path(federation_config).resolve())}
        if "federation-config" in (run_config or {}):
            raise ValueError("give the federation config as submit's first argument, not in run_config")
        values.update(run_config or {})
        unknown = set(values) - set(APP_CONFIG)
        if unknown:
            raise ValueError(f"run config keys {sorted(unknown)} are not the app's; use some of {sorted(APP_CONFIG)}")
        override = " ".join(f"{key}={json.dumps(value)}" for key, value in values.items())
        answer = self.flwr("run", str(app_dir or self.app_dir), CONNECTION, "--run-config", override, timeout=120)
        return int(answer["run-id"])

    def run_status(self, run_id: int) -> dict[str, Any]:
        answer = self.flwr("list", CONNECTION, "--run-id", str(run_id))
        return dict(answer["runs"][0])

    def wait(self, run_id: int, timeout: float = 600.0, poll: float = 2.0) -> dict[str, Any]:
        """Wait for the run to finish; its final status (``finished:completed`` on success).

        The ``flwr`` CLI costs a second of CPU per call, taken from the sites' training on a small
        machine: while a ServerApp process is alive it is asked only every ``RUNNING_POLL`` seconds.
        """
        deadline = time.monotonic() + timeout
        asked = -math.inf
        while time.monotonic() < deadline:
            running = self._superlink is not None and runs_descendant(self._superlink.pid, "flwr-serverapp")
            if running and time.monotonic() - asked < RUNNING_POLL:
                time.sleep(0.5)
                continue
            asked = time.monotonic()
            status = self.run_status(run_id)
            if str(status["status"]).startswith(FINISHED):
                return status
            time.sleep(poll)
        raise DeploymentError(f"run {run_id} did not finish within {timeout}s; logs in {self.workdir / 'logs'}")

    def logs(self, run_id: int) -> str:
        """The ServerApp's log of one run, as the SuperLink recorded it."""
        done = subprocess.run(
            [str(Path(sys.executable).parent / "flwr"), "log", str(run_id), CONNECTION, "--show"],
            capture_output=True, env=self._env(), cwd=self.workdir, timeout=60,
        )  # fmt: skip
        return done.stdout.decode(errors="replace")

    # ------------------------------------------------------------------ shutdown
    def stop(self, grace: float = 10.0) -> None:
        """Stop every process started here, and everything they spawned."""
        processes = [p for p in self._processes if p.poll() is None]
        trees = {p.pid: _children(p.pid) for p in processes}
        for process in processes:
            _signal_tree(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in processes:
            for pid in [process.pid, *trees[process.pid], *_children(process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        self._processes.clear()
        # Flower starts the SuperLink's SuperExec and its apps in sessions of their own: a tree
        # walked after their parent died misses them, but each carries this federation's FLWR_HOME.
        stop_all_with_env("FLWR_HOME", str(self.flwr_home), grace=grace)

    def __enter__(self) -> LoopbackFederation:
        # SIGTERM (e.g. a CI timeout) must unwind through __exit__ so that no process outlives us.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_system_exit)
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None
