"""Provenance of every synthetic file: what made it, and whether it is differentially private.

A CSV cannot carry metadata, so each output gets a ``<file>.provenance.json`` beside it
(Parquet files also embed it). A reader of the data must be able to tell DP output from
the site-local paper mode without asking anyone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth import __version__
from fedsynth.data.io import atomic_path, sigterm_as_exit, table_suffix, write_table_chunks, write_text
from fedsynth.model.paper import NOT_DP_NOTICE

NON_DP_MODEL_NOTICE = (
    "NOT DIFFERENTIALLY PRIVATE: sampled from a model trained without DP-SGD (fedsynth fit). "
    "No real row was copied, but the model may have memorised training data; train with DP "
    "(federated sites) before releasing."
)
DP_NOTICE = "Differentially private by post-processing: sampled from a DP-SGD-trained model only."
COPIED_OUTCOME_NOTICE = (
    "NOT DIFFERENTIALLY PRIVATE: every row's time and event are copied from a real training patient "
    '(CK4Gen outcome = "copy", the paper\'s generation). For use inside the site that holds the data only.'
)


def provenance(
    mode: str, differentially_private: bool, generator: str = "MCM", copies_real_values: bool = False, **details: Any
) -> dict[str, Any]:
    """A provenance record; ``mode`` is 'model-sample' or 'paper-copy-and-mask'; ``generator``
    names the model ("MCM", "Med-VAE", "CK4Gen model"), and a model that copies real values
    (``copies_real_values``) is never called DP."""
    if mode == "paper-copy-and-mask":
        notice, differentially_private = NOT_DP_NOTICE, False
    elif copies_real_values:
        notice, differentially_private = COPIED_OUTCOME_NOTICE, False
    else:
        notice = DP_NOTICE if differentially_private else NON_DP_MODEL_NOTICE
    return {
        "generator": f"fedsynth {generator}",
        "fedsynth_version": __version__,
        "mode": mode,
        "differentially_private": differentially_private,
        "notice": notice,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **details,
    }


def model_sample_record(
    model_dir: str | Path,
    differentially_private: bool,
    n: int,
    seed: int,
    conditions: list[str] | None = None,
    dp_evidence: str | None = None,
    generator: str = "MCM",
    copies_real_values: bool = False,
) -> dict[str, Any]:
    """Provenance of rows sampled from a saved model, pinned by the model's manifest hash.

    ``differentially_private`` must come from the run's records
    (:func:`fedsynth.server.evidence.check_dp_claim`), whose reason is ``dp_evidence``; the
    model, n, seed and conditions are what ``fedsynth signoff`` regenerates the rows from.
    """
    from fedsynth.model.persistence import model_digest

    return provenance(
        "model-sample",
        differentially_private,
        generator,
        copies_real_values,
        model=str(model_dir),
        model_sha256=model_digest(model_dir),
        n=n,
        seed=seed,
        conditions=list(conditions or []),
        **({"dp_evidence": dp_evidence} if dp_evidence else {}),
    )


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".provenance.json")


def write_synthetic(frames: pd.DataFrame | Iterable[pd.DataFrame], path: str | Path, record: dict[str, Any]) -> Path:
    """Write the table and its provenance sidecar; the sidecar's ``sha256`` is the table's.

    ``frames`` is one frame or the frames of a streamed sample (``MCM.sample_chunks``),
    written one at a time so memory stays bounded. The table is written to a temporary file
    and renamed into place only once complete; SIGTERM and Ctrl-C remove the temporary file,
    and one left by a killed process is removed at the next write to ``path``. The hash
    cannot be inside the file it hashes: Parquet files embed the record without it.
    """
    path = Path(path)
    chunks = [frames] if isinstance(frames, pd.DataFrame) else frames
    sidecar = sidecar_path(path)
    with sigterm_as_exit():
        with atomic_path(path) as tmp:
            digest = write_table_chunks(chunks, tmp, table_suffix(path), metadata={"provenance": json.dumps(record)})
            # A sidecar of the file being replaced must not describe the new one, even for a moment.
            sidecar.unlink(missing_ok=True)
        try:
            write_text(sidecar, json.dumps({**record, "sha256": digest}, indent=2))
        except BaseException:
            path.unlink(missing_ok=True)  # a table without its provenance must not remain
            raise
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks: what a sidecar's ``sha256`` is checked against."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
