"""Med-VAE (seed 004): a variational autoencoder generator behind :class:`~fedsynth.model.generator.Generator`."""

from typing import Any

from fedsynth.model.medvae.config import MedVAEConfig

__all__ = ["MedVAE", "MedVAEConfig"]


def __getattr__(name: str) -> Any:
    # The estimator loads torch; its config alone (read with a federation config) must not.
    if name == "MedVAE":
        from fedsynth.model.medvae.model import MedVAE

        return MedVAE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
