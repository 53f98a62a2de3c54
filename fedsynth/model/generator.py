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
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.fairness import check_fairness, dp_refusal
from fedsynth.model.persistence import ModelFiles, restore_fitted
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
    messages. A generator the sites can train with DP-SGD (:mod:`fedsynth.client.dp_training`)
    says what each record's loss is (:meth:`per_record_loss`); ``calibration_`` holds the run's DP
    marginal tables its samples are calibrated to (:meth:`calibrate_to`).
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
        self.calibration_: MarginalTarget | None = None

    def _new_network(self, schema: Schema) -> Network:
        raise NotImplementedError

    def build(self, schema: Schema) -> Self:
        """Create an untrained network for ``schema`` (seeded); used by fit and by the sites.
        A fairness column that is not a discrete feature of ``schema`` is refused here."""
        check_fairness(self.config, schema)
        torch.manual_seed(self.config.seed)
        self.schema_ = schema
        self.network_ = self._new_network(schema)
        return self

    @classmethod
    def _restored(cls, files: ModelFiles, config: Any) -> Self:
        """A model of ``config`` holding a verified model directory's weights, training record and
        marginal tables (each generator's ``load`` reads and checks the files first)."""
        model = cls(config)
        model.schema_ = files.schema
        network = model._new_network(files.schema)
        model._shape_for_state(network, files.state)
        network.load_state_dict(files.state)
        model.network_ = network.eval()
        restore_fitted(model, files.meta)
        return model.calibrate_to(files.target)

    def _shape_for_state(self, network: Network, state: dict[str, torch.Tensor]) -> None:
        """Resize buffers whose size the saved weights say (none by default) before they are loaded."""

    @property
    def transformer(self) -> Transformer:
        return Transformer(self._schema())

    def codes_tensor(self, frame: pd.DataFrame) -> torch.Tensor:
        """Model targets for a canonical frame: (n, n_columns) float32, missingness indicators
        appended (:meth:`Layout.expand`)."""
        codes = torch.tensor(self.transformer.codes(frame), dtype=torch.float32)
        return self._network().layout.expand(codes)  # type: ignore[operator]

    def calibrate_to(self, target: MarginalTarget | None) -> Self:
        """Calibrate every later sample to ``target`` (None: the model's own draws); returns self."""
        if target is not None and target.spec.schema.to_dict() != self._schema().to_dict():
            raise ValueError("the marginal tables are binned on another schema than the model's")
        self.calibration_ = target
        return self

    def dp_training_refusal(self) -> str | None:
        """Why the sites cannot train this generator with DP-SGD as configured (None: they can)."""
        return dp_refusal(self.config)

    def tail_averaged(self) -> tuple[list[torch.nn.Parameter], float, int] | None:
        """The parameters a site's DP round sends as the mean of their iterates, the share of the
        round's steps averaged and the fewest steps a round must take for it (None: the last
        iterate of every parameter). Post-processing of the noisy iterates: free."""
        return None

    def effect_rates(self, target: MarginalTarget) -> list[float] | None:
        """Per-coordinate step multipliers the coordinator sends the sites for a run whose DP
        marginal tables are ``target`` (None: every step as the optimiser takes it)."""
        return None

    def centre_on_tables(self, target: MarginalTarget) -> list[float] | None:
        """Fix whatever the network centres on the run's DP marginal tables ``target``, before the
        first round (the values then travel with the weights); the values set, or None."""
        return None

    def received_state_refusal(self) -> str | None:
        """Why the weights a site has just loaded from the coordinator are outside the contract
        (checked before any spend; None: they are not)."""
        return None

    def rate_scaled(
        self, rates: list[float] | None, steps_per_round: int
    ) -> tuple[torch.nn.Parameter, torch.Tensor] | None:
        """The parameter whose DP-SGD steps ``rates`` (from :meth:`effect_rates`) scale in a round
        of ``steps_per_round`` steps, and the multipliers shaped like it; None: no scaling.
        Raises ValueError for rates this generator did not ask for or cannot use."""
        if rates is not None:
            raise ValueError(f"{type(self).__name__} takes no effect rates; the coordinator sent some")
        return None

    def per_record_loss(self, codes: torch.Tensor, generator: torch.Generator, run_fraction: float) -> torch.Tensor:
        """Each record's training loss (n,) for a DP-SGD step on model codes ``codes``.

        ``generator`` draws the loss's own randomness (masks, latent noise); ``run_fraction`` is
        the share of the run's planned steps done before this one (a public schedule, e.g. KL
        annealing). Records must not interact: DP-SGD clips each record's gradient alone.
        """
        raise NotImplementedError(f"{type(self).__name__} has no per-record loss for DP-SGD")

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
