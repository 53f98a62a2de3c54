"""systemd units for the runbook's long-running processes, with this installation's paths.

Coordinator: ``fedsynth-superlink.service`` (``flower-superlink`` on loopback, TLS, SuperNode
authentication, state in a database) and ``fedsynth-gateway.service`` (the only public port;
started after the SuperLink and stopped with it). Site: ``fedsynth-supernode-<name>.service``,
which runs ``fedsynth site check`` first, so a site whose data, ledger, key or certificate fails
its pre-flight does not start, then ``flower-supernode``.

Each unit runs as an unprivileged user with Flower's usage telemetry off, no new privileges,
a private /tmp and a read-only system except the directory it writes (the SuperLink's state;
the site directory, where its ledger lives; none for the gateway). systemd stops every process
of a unit's control group, the processes Flower starts in sessions of their own included. The
commands are the runbook's (deploy/README.md).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fedsynth import TELEMETRY_ENV
from fedsynth.deploy import DeploymentError

UNSAFE = set("%$\"'\\\n;")  # systemd specifiers, variables and quoting: refused, not escaped


@dataclass(frozen=True)
class Unit:
    """One unit file: its name and text."""

    name: str
    text: str


def _path(path: Path, option: str, *, directory: bool) -> Path:
    """``path`` made absolute, checked to exist and to need no quoting in a unit file."""
    resolved = Path(path).expanduser().resolve()
    if directory and not resolved.is_dir():
        raise DeploymentError(f"{option} {path}: no such directory; fix: give the directory the unit will use")
    if not directory and not resolved.is_file():
        raise DeploymentError(f"{option} {path}: no such file; fix: give the file the unit will use")
    if UNSAFE & set(str(resolved)) or " " in str(resolved):
        raise DeploymentError(
            f"{option} {resolved}: a unit file would misread a path with spaces or any of % $ \" ' \\ ; "
            "fix: move it to a path without them"
        )
    return resolved


def _executable(name: str) -> Path:
    """The installation's own ``name`` (next to this Python), never one found on PATH."""
    path = Path(sys.executable).parent / name
    if not os.access(path, os.X_OK):
        raise DeploymentError(f"{path} is not executable: install fedsynth (make install) in this environment first")
    return path


def _plain(text: str) -> bool:
    """Letters, digits, '-', '_' and '.', not starting with '-': safe in a unit's name and fields."""
    return bool(text) and text[0] != "-" and all(c.isalnum() or c in "-_." for c in text)


def _check_user(user: str) -> str:
    if not _plain(user):
        raise DeploymentError(
            f"--user {user!r}: not a valid user name; fix: give an existing system user, e.g. fedsynth"
        )
    return user


def _service(
    description: str, user: str, writable: Path | None, exec_start: str, *, extra: str = "", pre: str = ""
) -> str:
    pre_line = f"ExecStartPre={pre}\n" if pre else ""
    writable_line = f"ReadWritePaths={writable}\n" if writable else ""
    return (
        f"[Unit]\nDescription={description}\nAfter=network-online.target\nWants=network-online.target\n{extra}\n"
        f"[Service]\nType=exec\nUser={user}\nGroup={user}\nEnvironment={TELEMETRY_ENV}=0\n{pre_line}"
        f"ExecStart={exec_start}\n"
        "Restart=on-failure\nRestartSec=5\nNoNewPrivileges=yes\nPrivateTmp=yes\nProtectSystem=strict\n"
        f"ProtectHome=read-only\n{writable_line}UMask=0077\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def coordinator_units(
    certs: Path, state: Path, *, user: str = "fedsynth", listen: str = "0.0.0.0:9092", superlink_port: int = 9093
) -> list[Unit]:
    """The SuperLink's and the Fleet gateway's units (runbook section 2)."""
    certs, state, user = (
        _path(certs, "--certs", directory=True),
        _path(state, "--state", directory=True),
        _check_user(user),
    )
    for name in ("ca.crt", "server.pem", "server.key"):
        _path(certs / name, "--certs", directory=False)
    if not 1 <= superlink_port <= 65535:
        raise DeploymentError(f"--superlink-port {superlink_port}: not a port; fix: give 1-65535 (default 9093)")
    superlink = (
        f"{_executable('flower-superlink')} --ssl-certfile {certs / 'server.pem'} --ssl-keyfile {certs / 'server.key'} "
        f"--ssl-ca-certfile {certs / 'ca.crt'} --enable-supernode-auth --disable-runtime-dependency-installation "
        f"--database {state / 'superlink.db'} --host 127.0.0.1 --port {superlink_port}"
    )
    gateway = (
        f"{_executable('fedsynth')} deploy gateway {certs} --listen {listen} --superlink 127.0.0.1:{superlink_port}"
    )
    return [
        Unit("fedsynth-superlink.service", _service("fedsynth SuperLink (loopback only)", user, state, superlink)),
        Unit(
            "fedsynth-gateway.service",
            _service(
                "fedsynth Fleet gateway (the coordinator's only public port)",
                user,
                None,  # it writes nothing: its access log goes to the journal
                gateway,
                extra="Requires=fedsynth-superlink.service\nAfter=fedsynth-superlink.service\nPartOf=fedsynth-superlink.service\n",
            ),
        ),
    ]


def site_units(
    name: str, site_dir: Path, superlink: str, root_certificates: Path, auth_key: Path, *, user: str = "fedsynth"
) -> list[Unit]:
    """A site's SuperNode unit, its pre-flight first (runbook section 3)."""
    if not _plain(name):
        raise DeploymentError(f"site name {name!r}: use letters, digits, '-', '_' or '.' (it names the unit)")
    site_dir = _path(site_dir, "--site-dir", directory=True)
    ca = _path(root_certificates, "--root-certificates", directory=False)
    key = _path(auth_key, "--auth-key", directory=False)
    user = _check_user(user)
    if UNSAFE & set(superlink) or " " in superlink or ":" not in superlink:
        raise DeploymentError(f"--superlink {superlink!r}: give HOST:PORT of the coordinator's gateway")
    connection = f"--superlink {superlink} --root-certificates {ca}"
    check = f"{_executable('fedsynth')} site check {site_dir} {connection} --auth-key {key}"
    supernode = (
        f"{_executable('flower-supernode')} {connection} --auth-supernode-private-key {key} "
        f"--node-config \"site-dir='{site_dir}'\""
    )
    text = _service(f"fedsynth SuperNode of {name}", user, site_dir, supernode, pre=check)
    return [Unit(f"fedsynth-supernode-{name}.service", text)]


def write_units(out_dir: Path, units: list[Unit], *, overwrite: bool = False) -> list[Path]:
    """Write ``units`` into ``out_dir``; an existing file is refused unless ``overwrite`` (nothing written then)."""
    out_dir = Path(out_dir)
    paths = [out_dir / unit.name for unit in units]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise DeploymentError(
            f"{', '.join(existing)} already exist(s); fix: pass --force to replace, or another directory"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, unit in zip(paths, units, strict=True):
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(unit.text)
        temporary.replace(path)
    return paths
