"""Which processes a deployment left behind: every process it starts inherits its FLWR_HOME."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fedsynth.deploy.local import is_running


def running_with_flwr_home(flwr_home: Path) -> list[int]:
    """Pids of live processes whose environment holds ``FLWR_HOME=flwr_home`` (orphans included)."""
    wanted = f"FLWR_HOME={flwr_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return [pid for pid in found if is_running(pid)]
