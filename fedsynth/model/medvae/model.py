"""The Med-VAE generator as an estimator: ``MedVAE(config).fit(df, schema).sample(n, conditions, seed)``.

A variational autoencoder (seed 004) over the MCM's encoding and output heads, trained on
the ELBO with the paper's KL scaling (``beta``) and linear KL annealing. Non-DP only for now:
the sites' DP-SGD loop (:mod:`fedsynth.client.dp_training`) trains the MCM.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame
from fedsynth.model.decoded import DecodingGenerator
from fedsynth.model.layout import Layout
from fedsynth.model.medvae.config import MedVAEConfig
from fedsynth.model.medvae.network import MedVAENetwork
from fedsynth.model.medvae.sampling import decode_rows
from fedsynth.model.persistence import check_generator, fitted_meta, read_model_files, restore_fitted, write_model_files
from fedsynth.model.training import ProgressCallback

GENERATOR_NAME = "medvae"  # model.json's "generator"


def network_for(config: MedVAEConfig, schema: Schema) -> MedVAENetwork:
    """An (unseeded) network of ``config``'s architecture for ``schema``: for new and loaded models."""
    return MedVAENetwork(Layout(schema, config.n_bins), config.hidden, config.latent, config.bin_smoothing)


class MedVAE(DecodingGenerator[MedVAENetwork]):
    """Med-VAE generator: decodes rows from the latent prior; conditions honoured by rejection.

    Attributes (after ``fit``): ``schema_``, ``network_``, ``history_`` (mean loss per epoch),
    ``n_train_``, ``differentially_private_`` (False: only non-DP training exists).
    """

    config_type = MedVAEConfig
    config: MedVAEConfig
    title = "Med-VAE"

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

    def _draw(self, generator: torch.Generator) -> Callable[[int], pd.DataFrame]:
        return functools.partial(decode_rows, self._network(), self.transformer, generator=generator)

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
