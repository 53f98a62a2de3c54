"""Process bookkeeping for the loopback federation: free ports, process trees, liveness (Linux /proc).

Why here: every process a SuperLink, SuperNode or gateway spawns must be found and stopped, and
tests and benchmarks check that none outlived its federation.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
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
