from __future__ import annotations

import torch

from fedsynth.model.masking import dynamic_mask, order_mask, training_mask


def test_dynamic_mask_ratio_and_visibility() -> None:
    g = torch.Generator().manual_seed(0)
    mask = dynamic_mask(20_000, 16, 0.10, 0.95, generator=g)
    per_row = mask.sum(dim=1)
    assert per_row.min() >= 1  # something to reconstruct
    assert per_row.max() <= 15  # something visible
    ratio = per_row.float() / 16
    assert ratio.min() >= 0.0625 and ratio.max() <= 0.9375
    assert abs(ratio.mean().item() - 0.525) < 0.01
    # every column is masked equally often
    share = mask.float().mean(dim=0)
    assert (share - share.mean()).abs().max() < 0.02


def test_order_mask_covers_empty_context() -> None:
    g = torch.Generator().manual_seed(1)
    mask = order_mask(10_000, 8, generator=g)
    visible = (~mask).sum(dim=1)
    assert visible.min() == 0 and visible.max() == 7
    counts = torch.bincount(visible, minlength=8).float() / 10_000
    assert (counts - 1 / 8).abs().max() < 0.02


def test_training_mask_mix_is_seeded() -> None:
    a = training_mask(100, 10, 0.1, 0.95, 0.5, torch.Generator().manual_seed(3))
    b = training_mask(100, 10, 0.1, 0.95, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert mask_has_masked_cell_per_row(a)


def mask_has_masked_cell_per_row(mask: torch.Tensor) -> bool:
    return bool((mask.sum(dim=1) >= 1).all())
