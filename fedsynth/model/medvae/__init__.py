"""Med-VAE (seed 004): a variational autoencoder generator behind :class:`~fedsynth.model.generator.Generator`."""

from fedsynth.model.medvae.config import MedVAEConfig
from fedsynth.model.medvae.model import MedVAE

__all__ = ["MedVAE", "MedVAEConfig"]
