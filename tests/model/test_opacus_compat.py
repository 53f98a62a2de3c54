"""The MCM network is ready for DP-SGD: Opacus accepts it and trains it with Poisson sampling."""

from __future__ import annotations

import warnings

import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader, TensorDataset

from fedsynth.model.mcm import MCM
from fedsynth.model.training import per_sample_loss


def test_opacus_validator_finds_nothing_to_fix(whas500) -> None:
    model = MCM(seed=0).build(whas500[1])
    assert ModuleValidator.validate(model.network_, strict=False) == []


def test_one_dp_sgd_epoch_with_poisson_sampling(whas500) -> None:
    frame, schema = whas500
    model = MCM(seed=0).build(schema)
    codes = model.codes_tensor(frame)
    before = [p.detach().clone() for p in model.network_.parameters()]
    engine = PrivacyEngine(accountant="rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, optimizer, loader = engine.make_private(
            module=model.network_,
            optimizer=torch.optim.Adam(model.network_.parameters(), lr=1e-3),
            data_loader=DataLoader(TensorDataset(codes), batch_size=64),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
        )
        generator = torch.Generator().manual_seed(0)
        losses = []
        for (batch,) in loader:
            loss = per_sample_loss(module, batch, model.config, generator).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.network_.parameters(), strict=True))
    ((noise, rate, steps),) = engine.accountant.history
    # Opacus' Poisson sampling uses sample rate 1 / len(data_loader) (here 1/8, not 64/500):
    # the site must derive its noise multiplier from this same rate.
    assert (noise, rate, steps) == (1.0, 1 / len(loader), len(losses))
    assert engine.get_epsilon(1e-5) > 0
