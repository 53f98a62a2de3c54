"""CK4Gen (seed 002): a Cox-distilled autoencoder generator behind :class:`~fedsynth.model.generator.Generator`."""

from fedsynth.model.ck4gen.config import CK4GenConfig
from fedsynth.model.ck4gen.model import CK4Gen

__all__ = ["CK4Gen", "CK4GenConfig"]
