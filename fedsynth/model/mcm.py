"""The MCM generator as an estimator: ``MCM(config).fit(df, schema).sample(n, conditions, seed)``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch

from fedsynth.data.conditions import ConditionsLike, ResolvedCondition, resolve_any
from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.calibrated import calibrated_frames, event_offset_of
from fedsynth.model.config import MCMConfig, without_retired_options
from fedsynth.model.effect_rates import check_rates, inverse_variance_rates
from fedsynth.model.fairness import group_weights
from fedsynth.model.generator import NetworkGenerator
from fedsynth.model.layout import Layout
from fedsynth.model.network import HazardHead, MCMNetwork
from fedsynth.model.persistence import (
    check_generator,
    fitted_meta,
    read_model_files,
    write_model_files,
)
from fedsynth.model.sampler import STREAM_WORKERS, ConditionalSampler
from fedsynth.model.table_moments import check_centres, table_centres
from fedsynth.model.training import ProgressCallback, per_sample_loss, train_plain, validation_split


def network_for(config: MCMConfig, schema: Schema) -> MCMNetwork:
    """An (unseeded) network of ``config``'s architecture for ``schema``: for new and loaded models."""
    return MCMNetwork(
        Layout(schema, config.n_bins),
        hidden=config.hidden,
        survival_head=config.survival_head,
        survival_form=config.survival_form,
        survival_effect_scale=config.survival_effect_scale,
        survival_centre=config.survival_centre,
        survival_level=config.survival_level,
    )


def head_tail_spec(network: MCMNetwork, config: MCMConfig) -> tuple[list[torch.nn.Parameter], float, int] | None:
    """The survival head's parameters, the share of a DP round averaged and the fewest steps for it
    (None without a head): what :meth:`MCM.tail_averaged` and the sites' DP rounds average."""
    if network.survival_head is None:
        return None
    share, min_steps = config.survival_head_averaging, config.survival_head_averaging_min_steps
    return list(network.survival_head.parameters()), share, min_steps


class MCM(NetworkGenerator[MCMNetwork]):
    """Masked Clinical Modelling generator with model-only conditional sampling.

    Parameters
    ----------
    config : MCMConfig, optional
        Architecture and training settings; keyword overrides are applied on top.

    Attributes (after ``fit``)
    --------------------------
    schema_ : Schema
    network_ : MCMNetwork
    history_ : list of float, mean training loss per epoch
    n_train_ : int, training rows
    differentially_private_ : bool, False for ``fit`` (the sites' DP-SGD sets it True)
    calibration_ : MarginalTarget or None, the DP marginal tables samples are calibrated to
        (:meth:`calibrate_to`; the coordinator attaches its run's tables to the published model)

    Examples
    --------
    >>> from fedsynth.data.datasets import load_dataset
    >>> frame, schema = load_dataset("whas500")
    >>> model = MCM(epochs=5).fit(frame, schema)
    >>> cohort = model.sample(100, conditions=["60<=age<=80", "chf=1"], seed=1)
    """

    config_type = MCMConfig
    config: MCMConfig
    title = "MCM"

    # -- construction ---------------------------------------------------------------------------

    def _new_network(self, schema: Schema) -> MCMNetwork:
        return network_for(self.config, schema)

    # -- fit / sample ---------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, schema: Schema, progress: ProgressCallback | None = None) -> MCM:
        """Validate ``frame`` against ``schema`` and train without differential privacy."""
        canonical, _ = validate_frame(frame, schema)
        self.build(schema)
        generator = torch.Generator().manual_seed(self.config.seed)
        codes = self.codes_tensor(canonical)
        weights = group_weights(self.config, schema, codes)
        fitted, held_out = validation_split(len(codes), self.config.validation_fraction, generator)
        if self._centres_on_tables():  # a plain fit reads its own rows: it is not DP anyway
            self._network().survival_centre_values.copy_(self._network().layout.encode_codes(codes[fitted]).mean(0))
        self.history_, stopping = train_plain(
            self._network(), codes[fitted], self.config, generator, progress, codes[held_out], weights
        )
        self.n_train_ = len(canonical)
        self._event_offsets = {}  # new weights: any event shift solved before is stale
        self.differentially_private_ = False
        self.training_info_ = {"mode": "plain", "epochs": len(self.history_), "n_train": self.n_train_}
        if weights is not None:
            self.training_info_.update(weights.record())
        if stopping is not None:
            self.training_info_.update(
                validation_rows=len(held_out), best_epoch=stopping.best_epoch, validation_loss=stopping.best_loss
            )
        return self

    def tail_averaged(self) -> tuple[list[torch.nn.Parameter], float, int] | None:
        """The survival head, averaged as ``survival_head_averaging`` says."""
        return head_tail_spec(self._network(), self.config)

    def effect_rates(self, target: MarginalTarget) -> list[float] | None:
        """With ``survival_effect_rates = "marginals"`` and a hazard head: each covariate input's
        inverse variance under the DP tables, normalised (:func:`inverse_variance_rates`)."""
        if not self._takes_effect_rates():
            return None
        network = self._network()
        return inverse_variance_rates(network.layout, target, network.covariate_input.numpy()).tolist()

    def centre_on_tables(self, target: MarginalTarget) -> list[float] | None:
        """With ``survival_centre = "tables"`` and a hazard head: centre its covariates at their
        means under the DP tables (:func:`table_centres`), the same for every site and round."""
        if not self._centres_on_tables():
            return None
        network = self._network()
        values = table_centres(network.layout, target)
        network.survival_centre_values.copy_(torch.as_tensor(values, dtype=network.survival_centre_values.dtype))
        return values.tolist()

    def received_state_refusal(self) -> str | None:
        """Centres outside the encoding's [0, 1] (or not finite) are refused before any spend."""
        if not self._centres_on_tables():
            return None
        network = self._network()
        try:
            check_centres(network.survival_centre_values.numpy(), network.layout.encoded_width)
        except ValueError as exc:
            return str(exc)
        return None

    def rate_scaled(
        self, rates: list[float] | None, steps_per_round: int
    ) -> tuple[torch.nn.Parameter, torch.Tensor] | None:
        """The hazard head's effects and ``rates`` over both causes, in rounds shorter than
        ``survival_head_averaging_min_steps`` (a longer round's head settles and is averaged)."""
        if rates is None:
            return None
        if not self._takes_effect_rates():
            raise ValueError("effect rates were sent for a model whose config does not ask for them")
        network = self._network()
        values = check_rates(rates, network.layout.encoded_width)
        if steps_per_round >= self.config.survival_head_averaging_min_steps:
            return None
        weight = network.survival_head.effects.weight
        return weight, torch.as_tensor(values, dtype=weight.dtype).unsqueeze(0).expand_as(weight).clone()

    def _centres_on_tables(self) -> bool:
        return self.config.survival_centre == "tables" and isinstance(self._network().survival_head, HazardHead)

    def _takes_effect_rates(self) -> bool:
        return self.config.survival_effect_rates == "marginals" and isinstance(
            self._network().survival_head, HazardHead
        )

    def per_record_loss(self, codes: torch.Tensor, generator: torch.Generator, run_fraction: float) -> torch.Tensor:
        """Each record's masked NLL (and survival head NLL) with fresh masks, times its fairness
        weight when the option is on: the MCM's DP-SGD loss."""
        weights = group_weights(self.config, self._schema(), training_info=self.training_info_)
        return per_sample_loss(self._network(), codes, self.config, generator, weights)

    def resolve(self, conditions: ConditionsLike) -> list[ResolvedCondition]:
        """Parse (if text) and check conditions against the schema; resolved ones pass through."""
        return resolve_any(conditions, self._schema())

    def sample(self, n: int, conditions: ConditionsLike = None, seed: int = 0) -> pd.DataFrame:
        """Draw ``n`` synthetic rows from the model alone; every row satisfies every condition.

        ``conditions`` are expressions such as ``"chf=1"`` or ``"60<=age<=80"`` (see
        :mod:`fedsynth.data.conditions`), parsed Conditions, or resolved ones. With
        ``calibration_`` the rows are calibrated to its DP marginal tables
        (:mod:`fedsynth.model.calibrated`).
        """
        if self.calibration_ is not None:
            frames = list(self.sample_chunks(n, conditions, seed))
            return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return self._sampler(n).sample(int(n), self.resolve(conditions), seed)

    def sample_chunks(
        self, n: int, conditions: ConditionsLike = None, seed: int = 0, workers: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """The rows of ``sample(n, conditions, seed)``, in order, in frames of at most
        ``GROUP_ROWS`` rows: for writing or serving large samples in bounded memory.

        Concatenated, the frames are exactly ``sample``'s rows (both draw the sampler's row
        groups, each from its own seed derived from ``seed``). At most ``workers`` groups are
        drawn at once (default: torch's thread count, at most ``STREAM_WORKERS``); the rows do
        not depend on it. Conditions are checked now, not at the first frame.
        """
        sampler = self._sampler(n)
        workers = min(torch.get_num_threads(), STREAM_WORKERS) if workers is None else workers
        resolved = self.resolve(conditions)
        if self.calibration_ is not None:
            offset = self._event_offset(sampler)
            return calibrated_frames(sampler, self.calibration_, int(n), resolved, seed, workers, offset)
        return sampler.iter_frames(int(n), resolved, seed, workers)

    def _event_offset(self, sampler: ConditionalSampler) -> float:
        """:func:`event_offset_of` the current tables, computed once per tables (its own draw)."""
        assert self.calibration_ is not None
        key = self.calibration_.digest()
        cached = getattr(self, "_event_offsets", {})
        if key not in cached:
            self._event_offsets = {key: event_offset_of(sampler, self.calibration_)}
        return self._event_offsets[key]

    def _sampler(self, n: int) -> ConditionalSampler:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return ConditionalSampler(self._network(), self.transformer, outcome_last=self.config.outcome_last)

    def reconstruct_point(self, codes: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Point reconstruction of masked cells (the papers' deterministic output).

        Numeric columns get the mean of their bin distribution, binary columns p >= 0.5,
        categorical columns their most likely category; visible cells are kept. ``codes`` are model
        codes (:meth:`codes_tensor`): a missing value is never shown but reconstructed like a masked
        cell, and stays missing after :meth:`Layout.collapse` where its (kept or reconstructed)
        indicator says so.
        """
        network = self._network().eval()
        layout = network.layout
        with torch.inference_mode():
            masked = masked | layout.missing_mask(codes)
            hidden = network.trunk(layout.encode_codes(codes), masked)
            out = codes.clone()
            centres = (torch.arange(layout.n_bins, dtype=torch.float32) + 0.5) / layout.n_bins
            for head in layout.heads:
                logits = network.head_logits(hidden, head.index)
                if head.column.is_numeric:
                    value = torch.softmax(logits, dim=1) @ centres
                elif head.out_stop - head.out_start == 1:
                    value = (torch.sigmoid(logits[:, 0]) >= 0.5).float()
                else:
                    value = logits.argmax(dim=1).float()
                out[:, head.index] = torch.where(masked[:, head.index], value, codes[:, head.index])
        return out

    # -- helpers --------------------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model directory (:mod:`fedsynth.model.persistence`) atomically; returns it."""
        state = self._network().state_dict()
        return write_model_files(path, state, self._schema(), fitted_meta("mcm", self), self.calibration_, overwrite)

    @classmethod
    def load(cls, path: str | Path) -> MCM:
        """Load and verify a model directory written by :meth:`save`."""
        files = read_model_files(path)
        check_generator(files, path, "mcm", "an MCM")
        return cls._restored(files, MCMConfig.model_validate(without_retired_options(files.meta["config"])))
