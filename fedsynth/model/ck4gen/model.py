"""The CK4Gen generator as an estimator: ``CK4Gen(config).fit(df, schema).sample(n, conditions, seed)``.

CK4Gen (seed 002) distils a CoxPH teacher, fitted on the training rows (lifelines), into an
autoencoder over the MCM's encoding and output heads (:mod:`~fedsynth.model.ck4gen.network`),
trained on covariate reconstruction, the KL to a N(0, I) prior and the distillation term.

Two outcome modes (:class:`~fedsynth.model.ck4gen.config.CK4GenConfig.outcome`):

* ``"model"`` (default): rows are decoded from the prior and their time and event drawn from
  the distilled Cox model; a sample is a function of the model alone.
* ``"copy"``: the paper's generation. The model keeps every training row's latent mean and its
  exact time and event, and each synthetic row copies one real row's (time, event). Such a
  model COPIES REAL VALUES: ``copies_real_values`` is True, saved in ``model.json`` and read
  back by :meth:`CK4Gen.load`, so that a release gate can refuse it. It is never DP.

The teacher (:class:`~fedsynth.model.ck4gen.config.CK4GenConfig.teacher`): ``"cox"``, the
paper's, is fitted on the training rows before distillation (lifelines), so only ``fit`` trains
it; ``"joint"`` is the same proportional-hazards model trained with the network
(:mod:`~fedsynth.model.ck4gen.joint_teacher`), the variant the sites train with DP-SGD
(:meth:`CK4Gen.per_record_loss`), its outcome drawn from the model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame
from fedsynth.model.ck4gen.config import CK4GenConfig
from fedsynth.model.ck4gen.joint_teacher import JointTeacherNetwork
from fedsynth.model.ck4gen.network import CK4GenNetwork
from fedsynth.model.ck4gen.sampling import decode_rows, redraw_outcome
from fedsynth.model.ck4gen.teacher import fit_teacher, outcome_indices
from fedsynth.model.decoded import DecodingGenerator
from fedsynth.model.fairness import group_weights
from fedsynth.model.layout import Layout
from fedsynth.model.medvae.training import annealed_kl_weight, train_annealed
from fedsynth.model.persistence import check_generator, fitted_meta, read_model_files, write_model_files
from fedsynth.model.training import ProgressCallback

TEACHER_AVERAGING_MIN_STEPS = 100  # as MCMConfig.survival_head_averaging_min_steps
GENERATOR_NAME = "ck4gen"  # model.json's "generator"
COPIES_REAL_VALUES = "copies_real_values"  # model.json's flag for outcome = "copy"


def network_for(config: CK4GenConfig, schema: Schema) -> CK4GenNetwork:
    """An (unseeded) network of ``config``'s architecture for ``schema``: for new and loaded models."""
    kind = JointTeacherNetwork if config.teacher == "joint" else CK4GenNetwork
    return kind(Layout(schema, config.n_bins), config.hidden, config.latent, config.bin_smoothing)


def teacher_targets(network: CK4GenNetwork, codes: torch.Tensor) -> torch.Tensor:
    """(n,) the teacher's standardised linear predictor: the distillation target."""
    return (network.teacher_eta(codes) / network.eta_scale).detach()


def _joint_loss(
    network: JointTeacherNetwork, codes: torch.Tensor, noise: torch.Tensor, kl_weight: float, distill_weight: float
) -> torch.Tensor:
    """Per row: reconstruction + KL + distillation to the teacher's predictor (held fixed) + the
    teacher's negative log-likelihood of the row's outcome."""
    teacher_nll, eta = network.teacher_nll(codes)
    reconstruction, kl, distill = network(codes, noise, eta.detach())
    return reconstruction + kl_weight * kl + distill_weight * distill + teacher_nll


class CK4Gen(DecodingGenerator[CK4GenNetwork]):
    """CK4Gen generator; conditions honoured by rejection.

    Attributes (after ``fit``): ``schema_``, ``network_``, ``history_`` (mean loss per epoch),
    ``n_train_``, ``differentially_private_`` (False), ``training_info_`` (with the outcome mode,
    ``copies_real_values`` and ``distillation_r2``).
    """

    config_type = CK4GenConfig
    config: CK4GenConfig
    title = "CK4Gen model"

    @property
    def copies_real_values(self) -> bool:
        """True when sampled rows carry real rows' (time, event): ``outcome = "copy"``."""
        return self.config.outcome == "copy"

    def dp_training_refusal(self) -> str | None:
        if self.config.teacher == "cox":
            return (
                'CK4Gen with teacher = "cox" has no DP-SGD training: its Cox teacher is fitted on a site\'s rows '
                'without DP, and its coefficients would leave the site in the weights; use teacher = "joint"'
            )
        if self.copies_real_values:
            return 'CK4Gen with outcome = "copy" copies real times and events into its rows: never DP'
        return super().dp_training_refusal()

    def tail_averaged(self) -> tuple[list[torch.nn.Parameter], float, int] | None:
        """The joint teacher (coefficients, hazards), averaged as ``teacher_averaging`` says, in
        rounds of at least the MCM head's measured minimum of steps."""
        network = self._network()
        if not isinstance(network, JointTeacherNetwork):
            return None
        teacher = [*network.coefficients.parameters(), *network.log_event_rates.parameters(),
                   *network.log_censor_rates.parameters()]  # fmt: skip
        return teacher, self.config.teacher_averaging, TEACHER_AVERAGING_MIN_STEPS

    def per_record_loss(self, codes: torch.Tensor, generator: torch.Generator, run_fraction: float) -> torch.Tensor:
        """Each record's loss with the joint teacher: reconstruction, annealed KL, distillation to the
        teacher's current predictor, and the teacher's own likelihood of the record's outcome; times
        the record's fairness weight when the option is on."""
        config = self.config
        noise = torch.randn(len(codes), config.latent, generator=generator)
        kl = annealed_kl_weight(config, run_fraction)
        loss = _joint_loss(self._network(), codes, noise, kl, config.distill_weight)
        weights = group_weights(config, self._schema(), training_info=self.training_info_)
        return loss if weights is None else weights(loss, codes)

    def _shape_for_state(self, network: CK4GenNetwork, state: dict[str, torch.Tensor]) -> None:
        network.resize_library(len(state["library_time"]))  # a copy model's library of training rows

    def _new_network(self, schema: Schema) -> CK4GenNetwork:
        return network_for(self.config, schema)

    def fit(self, frame: pd.DataFrame, schema: Schema, progress: ProgressCallback | None = None) -> CK4Gen:
        """Validate ``frame``, fit the Cox teacher, then train the autoencoder with distillation (no DP)."""
        canonical, _ = validate_frame(frame, schema)
        network = self.build(schema)._network()
        codes = network.layout.expand(torch.tensor(self.transformer.codes(canonical), dtype=torch.float32))
        config = self.config
        if config.teacher == "cox":
            network.set_teacher(fit_teacher(network.layout, codes, config.teacher_penalizer))
        targets = teacher_targets(network, codes)
        weights = group_weights(config, schema, codes)

        def batch_loss(rows: torch.Tensor, noise: torch.Tensor, kl_weight: float) -> torch.Tensor:
            if isinstance(network, JointTeacherNetwork):
                loss = _joint_loss(network, codes[rows], noise, kl_weight, config.distill_weight)
            else:
                reconstruction, kl, distill = network(codes[rows], noise, targets[rows])
                loss = reconstruction + kl_weight * kl + config.distill_weight * distill
            return loss if weights is None else weights(loss, codes[rows])

        self.history_ = train_annealed(network, len(codes), config, batch_loss, progress)
        if self.copies_real_values:
            self._keep_library(network, codes, canonical[schema.time_column].to_numpy(dtype=float))
        self.n_train_ = len(canonical)
        self.differentially_private_ = False
        self.training_info_ = {
            "mode": "plain",
            "epochs": config.epochs,
            "n_train": self.n_train_,
            "outcome": config.outcome,
            COPIES_REAL_VALUES: self.copies_real_values,
            "teacher": config.teacher,
            "distillation_r2": self._distillation_r2(
                network, codes, (network.teacher_eta(codes) / network.eta_scale).detach()
            ),
        }
        if weights is not None:
            self.training_info_.update(weights.record())
        return self

    @staticmethod
    def _keep_library(network: CK4GenNetwork, codes: torch.Tensor, times: Any) -> None:
        """Store every training row's latent mean, exact time and event (``outcome = "copy"`` only)."""
        _, event_index = outcome_indices(network.layout)
        network.resize_library(len(codes))
        with torch.inference_mode():
            network.library_latent.copy_(network.encode(codes)[0])
        network.library_time.copy_(torch.tensor(times, dtype=torch.float64))
        network.library_event.copy_(codes[:, event_index])

    @staticmethod
    def _distillation_r2(network: CK4GenNetwork, codes: torch.Tensor, targets: torch.Tensor) -> float:
        """Share of the teacher predictor's variance the risk head explains at the latent means."""
        with torch.inference_mode():
            predicted = network.risk(network.encode(codes)[0]).squeeze(1)
        residual = float((predicted - targets).pow(2).mean())
        spread = float(targets.var(unbiased=False))
        return round(1.0 - residual / spread, 4) if spread > 0 else 0.0

    @property
    def redraws_outcome(self) -> bool:
        """Calibrated sampling draws each kept row's outcome again from the distilled Cox model."""
        return not self.copies_real_values

    def redraw_outcome(self, frame: pd.DataFrame, seed: int) -> pd.DataFrame:
        return redraw_outcome(self._network(), self.transformer, frame, torch.Generator().manual_seed(seed))

    def _draw(self, generator: torch.Generator) -> Callable[[int], pd.DataFrame]:
        copy = self.copies_real_values
        return functools.partial(decode_rows, self._network(), self.transformer, copy, generator=generator)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model directory (:mod:`fedsynth.model.persistence`) atomically; returns it.
        ``model.json`` says whether the model copies real values (``copies_real_values``)."""
        meta = {**fitted_meta(GENERATOR_NAME, self), COPIES_REAL_VALUES: self.copies_real_values}
        return write_model_files(path, self._network().state_dict(), self._schema(), meta, self.calibration_, overwrite)

    @classmethod
    def load(cls, path: str | Path) -> CK4Gen:
        """Load and verify a model directory written by :meth:`save`."""
        files = read_model_files(path)
        check_generator(files, path, GENERATOR_NAME, "a CK4Gen model")
        return cls._restored(files, CK4GenConfig.model_validate(files.meta["config"]))
