"""Process bookkeeping for the loopback federation: free ports, process trees, liveness (Linux /proc).

Why here: every process a SuperLink, SuperNode or gateway spawns must be found and stopped, and
tests and benchmarks check that none outlived its federation.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` (loopback) that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), so that nothing a SuperNode spawned survives it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def runs_descendant(pid: int, program: str) -> bool:
    """Whether a live descendant of ``pid`` runs ``program`` (its command line names it)."""
    for child in _children(pid):
        with contextlib.suppress(OSError):
            if program.encode() in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
    return False


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, already dead but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def running_with_env(name: str, value: str) -> list[int]:
    """Pids of live processes started with ``name=value`` in their environment, orphans included.

    Why: Flower starts some processes in a session of their own (the SuperLink's SuperExec and
    the apps it launches), so stopping a process group misses them; each inherits FLWR_HOME.
    """
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return [pid for pid in found if pid != os.getpid() and is_running(pid)]


def stop_all_with_env(name: str, value: str, grace: float = 10.0) -> list[int]:
    """SIGTERM every process ``running_with_env(name, value)``, SIGKILL what is left after
    ``grace`` seconds, and return once none is running; the pids that needed SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = running_with_env(name, value)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 30.0)
        while (left := running_with_env(name, value)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not left:
            return [] if sig == signal.SIGTERM else pids
    raise RuntimeError(f"processes with {name}={value} survived SIGKILL: {left}")


def _signal_tree(process: subprocess.Popen[bytes], sig: int) -> None:
    for pid in [process.pid, *_children(process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs on which process ``pid`` has a listening TCP socket (IPv4 and IPv6).

    Why: the Control API must listen on loopback only; this reads what the kernel says the
    SuperLink actually bound, not what its command line asked for.
    """
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: TCP_LISTEN
                    continue
                address, port = fields[1].split(":")
                found.add((_proc_address(bytes.fromhex(address), width), int(port, 16)))
    return found


def _proc_address(raw: bytes, width: int) -> str:
    # /proc/net/tcp* prints each 32-bit word of the address in the host's byte order.
    words = raw if sys.byteorder == "big" else b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


if __name__ == "__main__":
    # `python -m fedsynth.deploy.processes stop FLWR_HOME=/path`: deploy/rehearse.sh's teardown.
    if len(sys.argv) != 3 or sys.argv[1] != "stop" or "=" not in sys.argv[2]:
        sys.exit("usage: python -m fedsynth.deploy.processes stop NAME=VALUE")
    killed = stop_all_with_env(*sys.argv[2].split("=", 1))
    if killed:
        print(f"   stopped with SIGKILL: {killed}")
