"""Shared fixtures: bundled data and one quickly trained model reused across tests."""

from __future__ import annotations

import pandas as pd
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.data.schema import Schema
from fedsynth.data.split import train_holdout_split
from fedsynth.model.mcm import MCM


@pytest.fixture(scope="session")
def whas500() -> tuple[pd.DataFrame, Schema]:
    return load_dataset("whas500")


@pytest.fixture(scope="session")
def whas_split(whas500: tuple[pd.DataFrame, Schema]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return train_holdout_split(whas500[0], 0.5, seed=0)


@pytest.fixture(scope="session")
def small_model(whas_split: tuple[pd.DataFrame, pd.DataFrame], whas500: tuple[pd.DataFrame, Schema]) -> MCM:
    """A briefly trained WHAS500 model: enough to test mechanics, not quality."""
    return MCM(epochs=40, seed=0).fit(whas_split[0], whas500[1])


@pytest.fixture(scope="session")
def gbsg2_model() -> MCM:
    """A briefly trained GBSG2 model: covers labelled binaries and a categorical column."""
    frame, schema = load_dataset("gbsg2")
    return MCM(epochs=30, seed=0).fit(frame, schema)
