"""Bundled public survival datasets (shipped inside scikit-survival) with their declared schemas.

They let a newcomer run the whole pipeline with nothing to download, and give the quality
benchmarks fixed, well-known data.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import pandas as pd

from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame


def _sksurv(loader_name: str, time: str, event: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sksurv import datasets

        features, outcome = getattr(datasets, loader_name)()
        frame = features.copy()
        for column in frame.columns:
            if isinstance(frame[column].dtype, pd.CategoricalDtype):
                frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        frame[time] = outcome[time].astype(float)
        frame[event] = outcome[event].astype(int)
        return frame.reset_index(drop=True)

    return load


_LOADERS: dict[str, Callable[[], pd.DataFrame]] = {
    "whas500": _sksurv("load_whas500", "lenfol", "fstat"),
    "gbsg2": _sksurv("load_gbsg2", "time", "cens"),
    "actg320": _sksurv("load_aids", "time", "censor"),
    "flchain": _sksurv("load_flchain", "futime", "death"),
}

DATASETS: tuple[str, ...] = tuple(_LOADERS)


def bundled_schema(name: str) -> Schema:
    """The declared schema shipped for a bundled dataset."""
    _check(name)
    text = resources.files("fedsynth.data").joinpath("schemas", f"{name}.toml").read_text(encoding="utf-8")
    import tomllib

    return Schema.from_dict(tomllib.loads(text), source=f"bundled schema '{name}'")


def load_dataset(name: str) -> tuple[pd.DataFrame, Schema]:
    """Load a bundled dataset, validated against its schema (canonical form)."""
    schema = bundled_schema(name)
    frame, _ = validate_frame(_LOADERS[name](), schema, source=name)
    return frame, schema


def raw_dataset(name: str) -> pd.DataFrame:
    """The dataset as scikit-survival ships it, before validation (for tests and examples)."""
    _check(name)
    return _LOADERS[name]()


def _check(name: str) -> None:
    if name not in _LOADERS:
        raise KeyError(f"unknown dataset '{name}'; bundled: {', '.join(DATASETS)}")
