"""Describe the machine a benchmark ran on, so recorded numbers can be compared honestly."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine_info() -> dict[str, object]:
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0].split()
        memory_gib = round(int(first[1]) / 1024**2, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
