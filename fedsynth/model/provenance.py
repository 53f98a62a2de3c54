"""Provenance of every synthetic file: what made it, and whether it is differentially private.

A CSV cannot carry metadata, so each output gets a ``<file>.provenance.json`` beside it
(Parquet files also embed it). A reader of the data must be able to tell DP output from
the site-local paper mode without asking anyone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth import __version__
from fedsynth.data.io import write_table, write_text
from fedsynth.model.paper import NOT_DP_NOTICE

NON_DP_MODEL_NOTICE = (
    "NOT DIFFERENTIALLY PRIVATE: sampled from a model trained without DP-SGD (fedsynth fit). "
    "No real row was copied, but the model may have memorised training data; train with DP "
    "(federated sites) before releasing."
)
DP_NOTICE = "Differentially private by post-processing: sampled from a DP-SGD-trained model only."


def provenance(mode: str, differentially_private: bool, **details: Any) -> dict[str, Any]:
    """A provenance record; ``mode`` is 'model-sample' or 'paper-copy-and-mask'."""
    if mode == "paper-copy-and-mask":
        notice, differentially_private = NOT_DP_NOTICE, False
    else:
        notice = DP_NOTICE if differentially_private else NON_DP_MODEL_NOTICE
    return {
        "generator": "fedsynth MCM",
        "fedsynth_version": __version__,
        "mode": mode,
        "differentially_private": differentially_private,
        "notice": notice,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **details,
    }


def model_sample_record(
    model_dir: str | Path, differentially_private: bool, n: int, seed: int, conditions: list[str] | None = None
) -> dict[str, Any]:
    """Provenance of rows sampled from a saved model, pinned by the model's manifest hash."""
    from fedsynth.model.persistence import model_digest

    return provenance(
        "model-sample",
        differentially_private,
        model=str(model_dir),
        model_sha256=model_digest(model_dir),
        n=n,
        seed=seed,
        conditions=list(conditions or []),
    )


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".provenance.json")


def write_synthetic(frame: pd.DataFrame, path: str | Path, record: dict[str, Any]) -> Path:
    """Write the table and its provenance sidecar (both atomically)."""
    path = Path(path)
    metadata = {"provenance": json.dumps(record)}
    write_table(frame, path, metadata=metadata)
    try:
        write_text(sidecar_path(path), json.dumps(record, indent=2))
    except BaseException:
        path.unlink(missing_ok=True)  # a table without its provenance must not remain
        raise
    return path
