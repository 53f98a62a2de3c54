"""The MCM training step and a plain (non-DP) training loop.

The step is a function of (network, batch, generator) returning the per-sample loss, so the
same step serves this loop and the DP-SGD loop of the sites (Opacus clips per-sample
gradients of exactly this loss).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from fedsynth.model.config import MCMConfig
from fedsynth.model.fairness import GroupWeights
from fedsynth.model.loss import masked_nll_per_sample, survival_hazard_nll, survival_head_nll
from fedsynth.model.masking import training_mask
from fedsynth.model.network import MCMNetwork

ProgressCallback = Callable[[int, int, float], None]
VALIDATION_MASK_DRAWS = 8  # mask draws per validation row (see validation_loss)


def per_sample_loss(
    network: MCMNetwork,
    codes: torch.Tensor,
    config: MCMConfig,
    generator: torch.Generator | None,
    weights: GroupWeights | None = None,
) -> torch.Tensor:
    """Draw fresh masks for the batch and return each row's masked NLL, shape (n,), times its
    fairness weight when ``weights`` is given (:mod:`fedsynth.model.fairness`)."""
    # Opacus wraps the network in a GradSampleModule, which does not forward plain attributes.
    layout = getattr(network, "_module", network).layout
    last = [h.index for h in layout.heads if h.column.role != "feature"] if config.outcome_last else ()
    masked = training_mask(
        codes.shape[0],
        layout.n_columns,
        config.mask_min,
        config.mask_max,
        config.order_mask_fraction,
        generator,
        last,
        config.outcome_last_share,
    )
    targets, counted = masked, None
    if layout.models_missing:
        # A missing value (missing = "model") is hidden from the input and is no target: the value's
        # head learns from present values only, its indicator learns when it is missing.
        missing = layout.missing_mask(codes)
        counted = layout.tie_masks(masked)
        masked, targets = counted | missing, counted & ~missing
    logits = network(layout.encode_codes(codes), masked)
    head_logits = logits[:, : layout.output_width]
    loss = masked_nll_per_sample(layout, head_logits, codes, targets, config.bin_smoothing, counted)
    if config.survival_head:
        head = logits[:, layout.output_width :]
        if config.survival_form == "hazard":
            head_loss = survival_hazard_nll(layout, head, codes)
        else:
            head_loss = survival_head_nll(layout, head, codes, config.bin_smoothing)
        loss = loss + config.survival_head_weight * head_loss
    return loss if weights is None else weights(loss, codes)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: MCMConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-epoch learning-rate schedule from the config (None for a constant rate)."""
    if config.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))


class EarlyStopping:
    """Keeps the weights of the best validation loss seen and says when to stop.

    Stop once ``patience`` evaluations in a row failed to beat the best loss by more than
    ``min_delta``; :meth:`restore` then loads the best weights (not the last ones, which have
    already started to fit the training rows' noise).
    """

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.stale = 0
        self._best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, loss: float, network: torch.nn.Module) -> bool:
        """Record epoch ``epoch``'s validation ``loss``; True when training should stop."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.stale = loss, epoch, 0
            self._best_state = copy.deepcopy(network.state_dict())
        else:
            self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self, network: torch.nn.Module) -> None:
        if self._best_state is not None:
            network.load_state_dict(self._best_state)


def validation_split(n_rows: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) row positions; validation gets round(fraction x n_rows), at least 1
    when fraction > 0, and train keeps at least 1."""
    if fraction <= 0:  # no draw: the training stream stays what it was without a split
        return torch.arange(n_rows), torch.arange(0)
    n_valid = min(n_rows - 1, max(1, round(fraction * n_rows)))
    order = torch.randperm(n_rows, generator=generator)
    return order[n_valid:], order[:n_valid]


def validation_loss(
    network: MCMNetwork, codes: torch.Tensor, config: MCMConfig, weights: GroupWeights | None = None
) -> float:
    """Mean masked NLL of ``codes`` under masks that are the same at every call.

    Why fixed masks: fresh masks would move the loss more between epochs than the weights do
    on a few hundred rows; ``VALIDATION_MASK_DRAWS`` copies of each row average the masks out.
    """
    generator = torch.Generator().manual_seed(config.seed + 7919)
    repeated = codes.repeat(VALIDATION_MASK_DRAWS, 1)
    network.eval()
    with torch.no_grad():
        loss = float(per_sample_loss(network, repeated, config, generator, weights).mean())
    network.train()
    return loss


def train_plain(
    network: MCMNetwork,
    codes: torch.Tensor,
    config: MCMConfig,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
    validation: torch.Tensor | None = None,
    weights: GroupWeights | None = None,
) -> tuple[list[float], EarlyStopping | None]:
    """Non-private training with Adam; returns the mean loss of every epoch and, given
    ``validation`` rows, the early-stopping record (the network then holds its best weights).
    ``weights``: the fairness option's per-record weights, in training and validation losses alike."""
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    epochs = config.resolved_epochs(len(codes))
    scheduler = make_scheduler(optimizer, config, epochs)
    history: list[float] = []
    stopping = None if validation is None or len(validation) == 0 else EarlyStopping(config.early_stopping_patience)
    network.train()
    for epoch in range(epochs):
        order = torch.randperm(len(codes), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(codes), config.batch_size):
            batch = codes[order[start : start + config.batch_size]]
            loss = per_sample_loss(network, batch, config, generator, weights).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        if scheduler is not None:
            scheduler.step()
        history.append(total / count)
        if progress is not None:
            progress(epoch + 1, epochs, history[-1])
        if stopping is not None and stopping.update(
            epoch + 1, validation_loss(network, validation, config, weights), network
        ):
            break
    if stopping is not None:
        stopping.restore(network)
    network.eval()
    return history, stopping
