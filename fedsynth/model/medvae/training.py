"""The plain (non-DP) training loop of the VAE-shaped generators (Med-VAE, CK4Gen): Adam on
shuffled mini-batches, the KL term's weight annealed linearly from 0 to ``beta`` over the
first ``kl_anneal_fraction`` of the steps (Med-VAE's KL annealing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fedsynth.model.training import ProgressCallback

# (row indices, the reparameterisation's N(0, I) noise, the KL weight) -> per-row loss
BatchLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def annealed_kl_weight(config: Any, done: float) -> float:
    """The KL term's weight after ``done`` of the training (a share of all steps): rising linearly
    from 0 to ``config.beta`` over the first ``config.kl_anneal_fraction``, then ``beta``."""
    fraction = config.kl_anneal_fraction
    return config.beta * (min(1.0, done / fraction) if fraction > 0 else 1.0)


def train_annealed(
    network: torch.nn.Module, n_rows: int, config: Any, batch_loss: BatchLoss, progress: ProgressCallback | None
) -> list[float]:
    """Train ``network`` in place for ``config.epochs``; the mean loss of each epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    steps_per_epoch = -(-n_rows // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    history: list[float] = []
    step = 0
    network.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n_rows, generator=generator)
        total = 0.0
        for start in range(0, n_rows, config.batch_size):
            rows = order[start : start + config.batch_size]
            weight = annealed_kl_weight(config, step / total_steps)
            noise = torch.randn(len(rows), config.latent, generator=generator)
            loss = batch_loss(rows, noise, weight).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            step += 1
        history.append(total / n_rows)
        if progress is not None:
            progress(epoch + 1, config.epochs, history[-1])
    network.eval()
    return history
