"""What the rest of fedsynth uses of a fitted generator, as a protocol every generator meets.

The MCM (:class:`fedsynth.model.mcm.MCM`) and Med-VAE (:class:`fedsynth.model.medvae.MedVAE`)
both satisfy it; code that only fits, samples, saves and loads can take either.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd

from fedsynth.data.conditions import ConditionsLike
from fedsynth.data.schema import Schema
from fedsynth.model.training import ProgressCallback


@runtime_checkable
class Generator(Protocol):
    """A synthetic-data generator for one public schema.

    ``sample`` honours every condition on every row and is deterministic for a seed;
    ``sample_chunks`` yields exactly ``sample``'s rows in bounded frames; ``load(save(p))``
    samples the same rows as the saved model.
    """

    schema_: Schema | None
    differentially_private_: bool

    def build(self, schema: Schema) -> Generator: ...

    def fit(self, frame: pd.DataFrame, schema: Schema, progress: ProgressCallback | None = None) -> Generator: ...

    def sample(self, n: int, conditions: ConditionsLike = None, seed: int = 0) -> pd.DataFrame: ...

    def sample_chunks(
        self, n: int, conditions: ConditionsLike = None, seed: int = 0, workers: int | None = None
    ) -> Iterator[pd.DataFrame]: ...

    def save(self, path: str | Path, overwrite: bool = False) -> Path: ...

    @classmethod
    def load(cls, path: str | Path) -> Generator: ...
