"""Site-local paper mode: the MCM papers' copy-and-mask synthesis. NOT differentially private.

Seeds 000/001 synthesise by copying a real patient, masking a share of its features (50% for
augmentation, 75% for synthesis) and reconstructing them. The output keeps the unmasked
half of every real record, so it is not differentially private and may only be used at the
site that holds the records. Everything this module returns says so.
"""

from __future__ import annotations

import pandas as pd
import torch

from fedsynth.data.conditions import parse_conditions, resolve_conditions, satisfies
from fedsynth.data.validation import validate_frame
from fedsynth.model.mcm import MCM

NOT_DP_NOTICE = (
    "NOT DIFFERENTIALLY PRIVATE: site-local MCM paper mode copies real records and keeps their "
    "unmasked values. Use only inside the site that holds the data; never release or share it."
)


def copy_and_mask(
    model: MCM, real: pd.DataFrame, mask_ratio: float = 0.5, seed: int = 0, keep_visible: tuple[int, ...] = ()
) -> pd.DataFrame:
    """Reconstruct every row of ``real`` after masking ``mask_ratio`` of its columns.

    ``keep_visible`` column indices are never masked (the subgroup's defining columns).
    At least one column is masked and one kept per row.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    schema = model._schema()
    canonical, _ = validate_frame(real, schema, source="real data")
    codes = model.codes_tensor(canonical)
    n, d = codes.shape
    layout = model._network().layout
    # A kept column's missing indicator is kept too: reconstructed, it could blank the value.
    kept = [*keep_visible, *(layout.indicator_of[i] for i in keep_visible if i in layout.indicator_of)]
    generator = torch.Generator().manual_seed(int(seed))
    scores = torch.rand(n, d, generator=generator)
    if kept:
        scores[:, kept] = 2.0  # ranked last: never masked
    ranks = scores.argsort(dim=1).argsort(dim=1)
    maskable = d - len(kept)
    n_masked = max(1, min(maskable, d - 1, round(mask_ratio * d)))
    masked = layout.tie_masks(ranks < n_masked)  # a value is hidden wherever its indicator is, as in training
    reconstructed = model.reconstruct_point(codes, masked)
    return model.transformer.from_codes(layout.collapse(reconstructed).double().numpy())


def augment_subgroup(
    model: MCM, real: pd.DataFrame, n: int, conditions: list[str], mask_ratio: float = 0.5, seed: int = 0
) -> pd.DataFrame:
    """The papers' conditional augmentation: copy-and-mask rows of the subgroup ``conditions``.

    Subgroup rows are drawn with replacement to reach ``n``; the columns that define the
    subgroup stay visible so every output row belongs to it.
    """
    schema = model._schema()
    canonical, _ = validate_frame(real, schema, source="real data")
    resolved = resolve_conditions(parse_conditions(conditions), schema)
    members = pd.Series(True, index=canonical.index)
    for condition in resolved:
        members &= satisfies(canonical, condition)
    subgroup = canonical[members].reset_index(drop=True)
    if subgroup.empty:
        described = "; ".join(conditions)
        raise ValueError(f"no real rows match the subgroup '{described}'; nothing to augment")
    chosen = subgroup.sample(n=n, replace=True, random_state=seed).reset_index(drop=True)
    keep = tuple(c.index for c in resolved)
    return copy_and_mask(model, chosen, mask_ratio=mask_ratio, seed=seed, keep_visible=keep)
