"""CK4Gen (seed 002): a Cox-distilled autoencoder generator behind :class:`~fedsynth.model.generator.Generator`."""

from typing import Any

from fedsynth.model.ck4gen.config import CK4GenConfig

__all__ = ["CK4Gen", "CK4GenConfig"]


def __getattr__(name: str) -> Any:
    # The estimator loads torch; its config alone (read with a federation config) must not.
    if name == "CK4Gen":
        from fedsynth.model.ck4gen.model import CK4Gen

        return CK4Gen
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
