"""Early stopping of the plain (non-DP) fit: known answers for the rule and the split."""

from __future__ import annotations

import torch

from fedsynth.model.config import MCMConfig
from fedsynth.model.training import EarlyStopping, validation_split


def test_stops_after_patience_and_restores_the_best_weights() -> None:
    # validation loss falls until epoch 4, then rises: with patience 3 the rule stops at epoch 7
    losses = [5.0, 4.0, 3.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    network = torch.nn.Linear(1, 1, bias=False)
    stopping = EarlyStopping(patience=3)
    stopped_at = None
    for epoch, loss in enumerate(losses, start=1):
        with torch.no_grad():
            network.weight.fill_(float(epoch))  # the weights remember the epoch they were set at
        if stopping.update(epoch, loss, network):
            stopped_at = epoch
            break
    assert stopped_at == 7
    assert stopping.best_epoch == 4 and stopping.best_loss == 2.0
    assert float(network.weight) == 7.0
    stopping.restore(network)
    assert float(network.weight) == 4.0


def test_a_tie_is_no_improvement_and_no_patience_never_stops() -> None:
    network = torch.nn.Linear(1, 1)
    stopping = EarlyStopping(patience=None)
    assert not any(stopping.update(epoch, 1.0, network) for epoch in range(1, 50))
    assert stopping.best_epoch == 1 and stopping.stale == 48


def test_validation_split_is_disjoint_seeded_and_off_at_zero() -> None:
    fitted, held_out = validation_split(100, 0.2, torch.Generator().manual_seed(0))
    assert len(held_out) == 20 and len(fitted) == 80
    assert sorted(torch.cat([fitted, held_out]).tolist()) == list(range(100))
    again = validation_split(100, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(held_out, again[1])
    generator = torch.Generator().manual_seed(0)
    fitted, held_out = validation_split(100, 0.0, generator)
    assert len(held_out) == 0 and fitted.tolist() == list(range(100))
    # fraction 0 draws nothing: the training stream is what it was without a split
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=torch.Generator().manual_seed(0)))


def test_plain_defaults_hold_out_and_penalise_but_the_federated_defaults_do_not() -> None:
    from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS

    assert FEDERATED_MODEL_DEFAULTS.validation_fraction == 0.0
    assert MCMConfig().validation_fraction > 0 and MCMConfig().weight_decay > 0
