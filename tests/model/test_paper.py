"""Site-local paper mode: copies real rows (so it is labelled not-DP) and reconstructs masked cells."""

from __future__ import annotations

import pytest

from fedsynth.model.mcm import MCM
from fedsynth.model.paper import NOT_DP_NOTICE, augment_subgroup, copy_and_mask


def test_copy_and_mask_keeps_unmasked_cells_of_each_real_row(small_model: MCM, whas_split) -> None:
    real = whas_split[0].head(100)
    out = copy_and_mask(small_model, real, mask_ratio=0.5, seed=0)
    n_columns = len(real.columns)
    same = (out.to_numpy() == real.to_numpy()).sum(axis=1)
    # 8 of 16 cells are masked; a reconstructed cell may coincide with the real value
    assert (same >= n_columns - 8).all()
    assert (same < n_columns).mean() > 0.5  # most rows differ somewhere


def test_higher_mask_ratio_changes_more(small_model: MCM, whas_split) -> None:
    real = whas_split[0].head(200)
    low = (copy_and_mask(small_model, real, 0.5, seed=1).to_numpy() != real.to_numpy()).mean()
    high = (copy_and_mask(small_model, real, 0.75, seed=1).to_numpy() != real.to_numpy()).mean()
    assert high > low


def test_augment_subgroup_stays_in_subgroup(small_model: MCM, whas_split) -> None:
    out = augment_subgroup(small_model, whas_split[0], 300, ["chf=1", "age>=70"], seed=2)
    assert len(out) == 300
    assert (out["chf"] == 1).all() and (out["age"] >= 70).all()


def test_empty_subgroup_is_an_error(small_model: MCM, whas_split) -> None:
    with pytest.raises(ValueError, match="no real rows match"):
        augment_subgroup(small_model, whas_split[0], 10, ["age>=109"])


def test_notice_says_not_differentially_private() -> None:
    assert "NOT DIFFERENTIALLY PRIVATE" in NOT_DP_NOTICE
