"""What a `fedsynth demo` run is asked to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoOptions:
    """What a demo run is asked to do (the CLI's options)."""

    dataset: str = "flchain"
    output: Path = Path("runs/demo")
    sites: int = 3
    rounds: int = 3
    epsilon: float = 4.0
    engine: str = "simulation"
    seed: int = 0
    key: Path | None = None
    policy: Path | None = None
    verbose: bool = False
