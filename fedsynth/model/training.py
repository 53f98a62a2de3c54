"""The MCM training step and a plain (non-DP) training loop.

The step is a function of (network, batch, generator) returning the per-sample loss, so the
same step serves this loop and the DP-SGD loop of the sites (Opacus clips per-sample
gradients of exactly this loss).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedsynth.model.config import MCMConfig
from fedsynth.model.loss import masked_nll_per_sample, survival_hazard_nll, survival_head_nll
from fedsynth.model.masking import training_mask
from fedsynth.model.network import MCMNetwork

ProgressCallback = Callable[[int, int, float], None]


def per_sample_loss(
    network: MCMNetwork, codes: torch.Tensor, config: MCMConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """Draw fresh masks for the batch and return each row's masked NLL, shape (n,)."""
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
    logits = network(layout.encode_codes(codes), masked)
    loss = masked_nll_per_sample(layout, logits[:, : layout.output_width], codes, masked, config.bin_smoothing)
    if config.survival_head:
        head = logits[:, layout.output_width :]
        if config.survival_form == "hazard":
            head_loss = survival_hazard_nll(layout, head, codes)
        else:
            head_loss = survival_head_nll(layout, head, codes, config.bin_smoothing)
        loss = loss + config.survival_head_weight * head_loss
    return loss


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: MCMConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-epoch learning-rate schedule from the config (None for a constant rate)."""
    if config.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))


def train_plain(
    network: MCMNetwork,
    codes: torch.Tensor,
    config: MCMConfig,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
) -> list[float]:
    """Non-private training with Adam; returns the mean loss of every epoch."""
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    epochs = config.resolved_epochs(len(codes))
    scheduler = make_scheduler(optimizer, config, epochs)
    history: list[float] = []
    network.train()
    for epoch in range(epochs):
        order = torch.randperm(len(codes), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(codes), config.batch_size):
            batch = codes[order[start : start + config.batch_size]]
            loss = per_sample_loss(network, batch, config, generator).mean()
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
    network.eval()
    return history
