"""The quality protocol's figures against cases whose answer is known: new patients of the same
population read like a perfect generator, and a table whose columns were shuffled apart (every
marginal exact, every relation gone) reads exact marginals, lost hazard ratios and lost
correlations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.server.simulated_sites import partition
from fedsynth.server.simulation_score import score_sample


@pytest.fixture(scope="module")
def flchain_sites() -> tuple[list[tuple[str, pd.DataFrame, pd.DataFrame]], object]:
    frame, schema = load_dataset("flchain")
    tables = []
    for index, part in enumerate(partition(frame, 3, "iid", 0)):
        train, holdout = train_holdout_split(part, 0.5, seed=index)
        tables.append((f"site-{index}", train, holdout))
    return tables, schema


def test_new_patients_read_like_a_perfect_generator(flchain_sites) -> None:
    tables, schema = flchain_sites
    holdout = pd.concat([h for _, _, h in tables], ignore_index=True)
    score = score_sample(tables, holdout, schema, differentially_private=False)
    # Two samples of about 3,260 rows of one population: KS about 0.87 sqrt(2 / 3260) = 0.02 per column.
    assert score.numeric_mean_ks < 0.04 and score.discrete_mean_tvd < 0.03
    assert score.hr_in_ci_fraction >= 0.75  # about 0.83 expected when both estimates scatter alike
    assert score.correlation_gap_max < 0.1
    assert all(abs(s.cindex_tstr - s.cindex_trtr) < 0.02 for s in score.sites)


def test_columns_shuffled_apart_keep_marginals_and_lose_every_relation(flchain_sites) -> None:
    tables, schema = flchain_sites
    holdout = pd.concat([h for _, _, h in tables], ignore_index=True)
    rng = np.random.default_rng(0)
    shuffled = holdout.apply(lambda column: column.to_numpy()[rng.permutation(len(column))])
    score = score_sample(tables, shuffled, schema, differentially_private=False)
    assert score.numeric_mean_ks < 0.04 and score.discrete_mean_tvd < 0.03  # the same values
    assert score.correlation_gap_max > 0.7  # kappa and lambda correlate at about 0.8 in the real rows
    assert score.hr_in_ci_fraction <= 0.5  # age alone moves survival by ~10% a year: gone
    # (Not the C-index: a Cox fit of pure noise ranks by its noise's direction, anywhere in [0, 1].)
