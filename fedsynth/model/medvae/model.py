"""The Med-VAE generator as an estimator: ``MedVAE(config).fit(df, schema).sample(n, conditions, seed)``.

A variational autoencoder (seed 004) over the MCM's encoding and output heads, trained on
the ELBO with the paper's KL scaling (``beta``) and linear KL annealing: by ``fit`` without DP,
or by the sites' DP-SGD rounds (:meth:`MedVAE.per_record_loss`, the KL annealed over the run).
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
from fedsynth.model.fairness import group_weights
from fedsynth.model.layout import Layout
from fedsynth.model.medvae.config import MedVAEConfig
from fedsynth.model.medvae.network import MedVAENetwork
from fedsynth.model.medvae.sampling import decode_rows
from fedsynth.model.medvae.training import annealed_kl_weight, train_annealed
from fedsynth.model.persistence import check_generator, fitted_meta, read_model_files, write_model_files
from fedsynth.model.training import ProgressCallback

GENERATOR_NAME = "medvae"  # model.json's "generator"


def network_for(config: MedVAEConfig, schema: Schema) -> MedVAENetwork:
    """An (unseeded) network of ``config``'s architecture for ``schema``: for new and loaded models."""
    return MedVAENetwork(Layout(schema, config.n_bins), config.hidden, config.latent, config.bin_smoothing)


class MedVAE(DecodingGenerator[MedVAENetwork]):
    """Med-VAE generator: decodes rows from the latent prior; conditions honoured by rejection.

    Attributes (after ``fit``): ``schema_``, ``network_``, ``history_`` (mean loss per epoch),
    ``n_train_``, ``differentially_private_`` (True only for a federated DP run's model),
    ``calibration_`` (the run's DP marginal tables, or None).
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
        weights = group_weights(config, schema, codes)

        def batch_loss(rows: torch.Tensor, noise: torch.Tensor, kl_weight: float) -> torch.Tensor:
            reconstruction, kl = network(codes[rows], noise)
            loss = reconstruction + kl_weight * kl
            return loss if weights is None else weights(loss, codes[rows])

        self.history_ = train_annealed(network, len(codes), config, batch_loss, progress)
        self.n_train_ = len(canonical)
        self.differentially_private_ = False
        self.training_info_ = {"mode": "plain", "epochs": config.epochs, "n_train": self.n_train_}
        if weights is not None:
            self.training_info_.update(weights.record())
        return self

    def per_record_loss(self, codes: torch.Tensor, generator: torch.Generator, run_fraction: float) -> torch.Tensor:
        """Each record's negative ELBO, the KL weight annealed over the first ``kl_anneal_fraction``
        of the run's planned steps (a public schedule)."""
        config = self.config
        noise = torch.randn(len(codes), config.latent, generator=generator)
        reconstruction, kl = self._network()(codes, noise)
        loss = reconstruction + annealed_kl_weight(config, run_fraction) * kl
        weights = group_weights(config, self._schema(), training_info=self.training_info_)
        return loss if weights is None else weights(loss, codes)

    def _draw(self, generator: torch.Generator) -> Callable[[int], pd.DataFrame]:
        return functools.partial(decode_rows, self._network(), self.transformer, generator=generator)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model directory (:mod:`fedsynth.model.persistence`) atomically; returns it."""
        meta = fitted_meta(GENERATOR_NAME, self)
        return write_model_files(path, self._network().state_dict(), self._schema(), meta, self.calibration_, overwrite)

    @classmethod
    def load(cls, path: str | Path) -> MedVAE:
        """Load and verify a model directory written by :meth:`save`."""
        files = read_model_files(path)
        check_generator(files, path, GENERATOR_NAME, "a Med-VAE")
        return cls._restored(files, MedVAEConfig.model_validate(files.meta["config"]))
