"""The Med-VAE generator as an estimator: ``MedVAE(config).fit(df, schema).sample(n, conditions, seed)``.

A variational autoencoder (seed 004) over the MCM's encoding and output heads, trained on
the ELBO with the paper's KL scaling (``beta``) and linear KL annealing. Non-DP only for now:
the sites' DP-SGD loop (:mod:`fedsynth.client.dp_training`) trains the MCM.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fedsynth.data.conditions import ConditionsLike, ResolvedCondition, resolve_any
from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame
from fedsynth.model.generator import NetworkGenerator
from fedsynth.model.layout import Layout
from fedsynth.model.medvae.config import MedVAEConfig
from fedsynth.model.medvae.network import MedVAENetwork
from fedsynth.model.medvae.sampling import accepted_rows, decode_rows
from fedsynth.model.persistence import check_generator, fitted_meta, read_model_files, restore_fitted, write_model_files
from fedsynth.model.sampler import GROUP_ROWS, enforce_conditions, group_seeds
from fedsynth.model.training import ProgressCallback

GENERATOR_NAME = "medvae"  # model.json's "generator"


def network_for(config: MedVAEConfig, schema: Schema) -> MedVAENetwork:
    """An (unseeded) network of ``config``'s architecture for ``schema``: for new and loaded models."""
    return MedVAENetwork(Layout(schema, config.n_bins), config.hidden, config.latent, config.bin_smoothing)


class MedVAE(NetworkGenerator[MedVAENetwork]):
    """Med-VAE generator: decodes rows from the latent prior; conditions honoured by rejection.

    Attributes (after ``fit``): ``schema_``, ``network_``, ``history_`` (mean loss per epoch),
    ``n_train_``, ``differentially_private_`` (False: only non-DP training exists).
    """

    title = "Med-VAE"

    def __init__(self, config: MedVAEConfig | None = None, **overrides: Any) -> None:
        base = config or MedVAEConfig()
        self.config = MedVAEConfig.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self.schema_: Schema | None = None
        self.network_: MedVAENetwork | None = None
        self.history_: list[float] = []
        self.n_train_ = 0
        self.differentially_private_ = False
        self.training_info_: dict[str, Any] = {}

    def _new_network(self, schema: Schema) -> MedVAENetwork:
        return network_for(self.config, schema)

    def fit(self, frame: pd.DataFrame, schema: Schema, progress: ProgressCallback | None = None) -> MedVAE:
        """Validate ``frame`` against ``schema`` and train on the annealed ELBO, without DP."""
        canonical, _ = validate_frame(frame, schema)
        network = self.build(schema)._network()
        codes = network.layout.expand(torch.tensor(self.transformer.codes(canonical), dtype=torch.float32))
        config = self.config
        generator = torch.Generator().manual_seed(config.seed)
        optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
        steps_per_epoch = -(-len(codes) // config.batch_size)
        anneal_steps = config.kl_anneal_fraction * config.epochs * steps_per_epoch
        self.history_, step = [], 0
        network.train()
        for epoch in range(config.epochs):
            order = torch.randperm(len(codes), generator=generator)
            total = 0.0
            for start in range(0, len(codes), config.batch_size):
                batch = codes[order[start : start + config.batch_size]]
                weight = config.beta * (min(1.0, step / anneal_steps) if anneal_steps > 0 else 1.0)
                noise = torch.randn(len(batch), config.latent, generator=generator)
                reconstruction, kl = network(batch, noise)
                loss = (reconstruction + weight * kl).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
                step += 1
            self.history_.append(total / len(codes))
            if progress is not None:
                progress(epoch + 1, config.epochs, self.history_[-1])
        network.eval()
        self.n_train_ = len(canonical)
        self.differentially_private_ = False
        self.training_info_ = {"mode": "plain", "epochs": config.epochs, "n_train": self.n_train_}
        return self

    def resolve(self, conditions: ConditionsLike) -> list[ResolvedCondition]:
        """Parse (if text) and check conditions against the schema; resolved ones pass through."""
        return resolve_any(conditions, self._schema())

    def sample(self, n: int, conditions: ConditionsLike = None, seed: int = 0) -> pd.DataFrame:
        """``n`` synthetic rows, every one satisfying every condition (see :meth:`MCM.sample`'s
        grammar); deterministic for ``seed``."""
        frames = list(self.sample_chunks(n, conditions, seed))
        if not frames:
            return self.transformer.from_codes(torch.zeros(0, len(self._schema().columns)).double().numpy())
        return pd.concat(frames, ignore_index=True)

    def sample_chunks(
        self, n: int, conditions: ConditionsLike = None, seed: int = 0, workers: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """``sample``'s rows in order, in frames of at most ``GROUP_ROWS`` rows, each group drawn
        from its own seed derived from ``seed``. ``workers`` is accepted for the
        :class:`~fedsynth.model.generator.Generator` interface; groups are drawn one at a time.
        Conditions are checked now, not at the first frame."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        network, transformer = self._network(), self.transformer
        resolved = self.resolve(conditions)
        starts = list(range(0, int(n), GROUP_ROWS))
        seeds = group_seeds(seed, len(starts))

        def frames() -> Iterator[pd.DataFrame]:
            for start, group_seed in zip(starts, seeds, strict=True):
                generator = torch.Generator().manual_seed(int(group_seed) % (2**63))
                size = min(GROUP_ROWS, int(n) - start)
                draw = functools.partial(decode_rows, network, transformer, generator=generator)
                rows = accepted_rows(draw, size, resolved)
                yield enforce_conditions(rows, resolved)

        return frames()

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model directory (:mod:`fedsynth.model.persistence`) atomically; returns it."""
        meta = fitted_meta(GENERATOR_NAME, self)
        return write_model_files(path, self._network().state_dict(), self._schema(), meta, None, overwrite)

    @classmethod
    def load(cls, path: str | Path) -> MedVAE:
        """Load and verify a model directory written by :meth:`save`."""
        files = read_model_files(path)
        check_generator(files, path, GENERATOR_NAME, "a Med-VAE; load it with its own generator")
        model = cls(MedVAEConfig.model_validate(files.meta["config"]))
        model.schema_ = files.schema
        model.network_ = network_for(model.config, files.schema)
        model.network_.load_state_dict(files.state)
        model.network_.eval()
        restore_fitted(model, files.meta)
        return model
