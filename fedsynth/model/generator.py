"""What the rest of fedsynth uses of a fitted generator, as a protocol every generator meets,
and the part of one that every network-backed generator shares.

The MCM (:class:`fedsynth.model.mcm.MCM`), Med-VAE (:class:`fedsynth.model.medvae.MedVAE`) and
CK4Gen (:class:`fedsynth.model.ck4gen.CK4Gen`) satisfy the protocol and build on
:class:`NetworkGenerator`; code that only fits, samples, saves and loads can take any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import pandas as pd
import torch

from fedsynth.data.conditions import ConditionsLike
from fedsynth.data.schema import Schema
from fedsynth.data.transforms import Transformer
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


class NotFittedError(RuntimeError):
    """The generator was used before ``fit`` or ``load``."""


Network = TypeVar("Network", bound=torch.nn.Module)


class NetworkGenerator(Generic[Network]):
    """A generator whose model is one torch network built for a public schema.

    Subclasses set ``config`` (with a ``seed``), ``schema_`` and ``network_`` in ``__init__`` and
    say which network a config and schema make (``_new_network``); ``title`` names the model in
    messages.
    """

    title = "generator"
    config_type: Any  # the generator's pydantic config class
    config: Any
    schema_: Schema | None
    network_: Network | None

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        base = config or self.config_type()
        # Validating the merged dict (extra="forbid") rejects misspelt overrides loudly.
        self.config = self.config_type.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self.schema_ = None
        self.network_ = None
        self.history_: list[float] = []
        self.n_train_ = 0
        self.differentially_private_ = False
        self.training_info_: dict[str, Any] = {}

    def _new_network(self, schema: Schema) -> Network:
        raise NotImplementedError

    def build(self, schema: Schema) -> Self:
        """Create an untrained network for ``schema`` (seeded); used by fit and by the sites."""
        torch.manual_seed(self.config.seed)
        self.schema_ = schema
        self.network_ = self._new_network(schema)
        return self

    @property
    def transformer(self) -> Transformer:
        return Transformer(self._schema())

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self._network().parameters()))

    def _schema(self) -> Schema:
        if self.schema_ is None:
            raise NotFittedError(self._not_fitted())
        return self.schema_

    def _network(self) -> Network:
        if self.network_ is None:
            raise NotFittedError(self._not_fitted())
        return self.network_

    def _not_fitted(self) -> str:
        return f"this {self.title} is not fitted: call fit() or {type(self).__name__}.load() first"
