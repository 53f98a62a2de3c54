"""Seeded train/holdout splits (a site's holdout is never trained on: audits need it)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def train_holdout_split(frame: pd.DataFrame, holdout_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle rows with ``seed`` and cut off ``holdout_fraction`` of them as the holdout."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    order = np.random.default_rng(seed).permutation(len(frame))
    n_holdout = int(round(len(frame) * holdout_fraction))
    if n_holdout == 0 or n_holdout == len(frame):
        raise ValueError(f"{len(frame)} rows cannot be split with holdout_fraction={holdout_fraction}")
    holdout = frame.iloc[order[:n_holdout]].reset_index(drop=True)
    train = frame.iloc[order[n_holdout:]].reset_index(drop=True)
    return train, holdout
