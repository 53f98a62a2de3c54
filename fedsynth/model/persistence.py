"""Saving and loading a model directory, verified by SHA-256.

A model directory holds ``weights.pt`` (state dict), ``schema.toml`` (the public schema it
was trained for), ``model.json`` (config and provenance: a claim of DP or not, training rows) and
``manifest.json`` (SHA-256 of every other file), and for a model calibrated to its run's DP
marginal tables ``marginals.json`` (:class:`~fedsynth.marginals.target.MarginalTarget`).
Loading checks every hash before reading anything, so a corrupted or tampered file is refused
with its name. Writing goes to a temporary directory that is renamed into place: a failure
leaves nothing half-written.

This module knows the files, not the generator: :meth:`fedsynth.model.mcm.MCM.save` and
:meth:`~fedsynth.model.mcm.MCM.load` turn a model into them and back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedsynth.data.io import sha256_file
from fedsynth.data.schema import Schema, SchemaError
from fedsynth.errors import UserError
from fedsynth.marginals.target import MarginalTarget, MarginalTargetError

FORMAT_VERSION = 1
WEIGHTS, SCHEMA, META, MANIFEST = "weights.pt", "schema.toml", "model.json", "manifest.json"
MARGINALS = "marginals.json"


class ModelFileError(UserError, ValueError):
    """A model directory is missing, incomplete, corrupted or of another format."""


@dataclass(frozen=True)
class ModelFiles:
    """A verified model directory's contents."""

    meta: dict[str, Any]
    schema: Schema
    state: dict[str, torch.Tensor]
    target: MarginalTarget | None


def write_model_files(
    path: str | Path,
    state: dict[str, torch.Tensor],
    schema: Schema,
    meta: dict[str, Any],
    target: MarginalTarget | None,
    overwrite: bool = False,
) -> Path:
    """Write a model directory atomically (``meta`` gains the format version and the tables'
    digest); returns the path."""
    target_dir = Path(path)
    if target_dir.exists() and not overwrite:
        raise FileExistsError(f"{target_dir} already exists; choose another directory or pass overwrite (--force)")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
    try:
        torch.save(state, staging / WEIGHTS)
        (staging / SCHEMA).write_text(schema.to_toml(), encoding="utf-8")
        document = {"format_version": FORMAT_VERSION, **meta, "calibration": _calibration_meta(target)}
        (staging / META).write_text(json.dumps(document, indent=2), encoding="utf-8")
        names = [WEIGHTS, SCHEMA, META]
        if target is not None:
            (staging / MARGINALS).write_text(target.to_json(), encoding="utf-8")
            names.append(MARGINALS)
        files = {name: sha256_file(staging / name) for name in names}
        (staging / MANIFEST).write_text(json.dumps({"files": files}, indent=2), encoding="utf-8")
        if target_dir.exists():
            shutil.rmtree(target_dir)
        staging.rename(target_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target_dir


def _calibration_meta(target: MarginalTarget | None) -> dict[str, Any] | None:
    if target is None:
        return None
    return {"file": MARGINALS, "sha256": target.digest(), "source": target.source}


def model_digest(path: str | Path) -> str:
    """SHA-256 of the manifest: one hash that pins every file of the model."""
    return sha256_file(Path(path) / MANIFEST)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict, in parameter order (how sites name the weights they audited)."""
    hasher = hashlib.sha256()
    for name, tensor in state.items():
        hasher.update(name.encode())
        hasher.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return hasher.hexdigest()


def read_model_files(path: str | Path) -> ModelFiles:
    """Verify and read a model directory written by :func:`write_model_files`."""
    root = Path(path)
    if not root.is_dir():
        raise ModelFileError(f"model directory not found: {root}; train one with `fedsynth fit`")
    manifest_path = root / MANIFEST
    try:
        files: dict[str, str] = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        raise ModelFileError(f"{manifest_path} is missing: {root} is not a fedsynth model directory") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ModelFileError(f"{manifest_path} is corrupted; re-create the model with `fedsynth fit`") from None
    for name in (WEIGHTS, SCHEMA, META, *([MARGINALS] if MARGINALS in files else [])):
        file = root / name
        if name not in files:
            raise ModelFileError(f"{manifest_path} does not list {name}; the model directory is corrupted")
        if not file.exists():
            raise ModelFileError(f"{file} is missing; the model directory is incomplete")
        if sha256_file(file) != files[name]:
            raise ModelFileError(
                f"{file} does not match its SHA-256 in the manifest: the file is corrupted or was modified; "
                "re-create the model or restore the file"
            )
    try:
        meta = json.loads((root / META).read_text(encoding="utf-8"))
        schema = Schema.from_toml(root / SCHEMA)
    except (json.JSONDecodeError, SchemaError) as exc:
        raise ModelFileError(f"{root}: unreadable model metadata ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{root}: model format {meta.get('format_version')} is not supported (this fedsynth reads {FORMAT_VERSION})"
        )
    state = torch.load(root / WEIGHTS, map_location="cpu", weights_only=True)
    target = None
    if MARGINALS in files:
        try:
            target = MarginalTarget.from_json(
                (root / MARGINALS).read_text(encoding="utf-8"), schema, str(root / MARGINALS)
            )
        except MarginalTargetError as exc:
            raise ModelFileError(str(exc)) from None
    return ModelFiles(meta, schema, state, target)


def fitted_meta(generator: str, model: Any) -> dict[str, Any]:
    """What a manifest records of any fitted generator: its kind, config, DP claim and training."""
    return {
        "generator": generator,
        "config": model.config.model_dump(mode="json"),
        "differentially_private": model.differentially_private_,
        "n_train": model.n_train_,
        "training": model.training_info_,
        "loss_history": model.history_,
    }


# Where each generator's model directories are loaded from (model.json's "generator").
LOADERS = {
    "mcm": "fedsynth.model.mcm.MCM.load",
    "medvae": "fedsynth.model.medvae.MedVAE.load",
    "ck4gen": "fedsynth.model.ck4gen.CK4Gen.load",
}


def check_generator(files: ModelFiles, path: str | Path, expected: str, instead: str, note: str = "") -> None:
    """Refuse a model directory written by another generator (before code for ``expected`` reads
    it), naming the loader of the generator that wrote it."""
    kind = files.meta.get("generator", "mcm")  # directories written before Med-VAE existed are MCMs
    if kind != expected:
        loader = LOADERS.get(kind)
        how = f"; load it with {loader}" if loader else "; it was written by a generator this version does not know"
        raise ModelFileError(f"{path} holds a '{kind}' model, not {instead}{how}{note}")


def restore_fitted(model: Any, meta: dict[str, Any]) -> None:
    """Set the training record :func:`fitted_meta` wrote back on a freshly built ``model``."""
    # A claim only: the manifest is an unsigned checksum anyone can recompute. Whether the model
    # is DP is decided from its run's records (fedsynth.server.evidence.check_dp_claim).
    model.differentially_private_ = bool(meta.get("differentially_private", False))
    model.n_train_ = int(meta.get("n_train", 0))
    model.training_info_ = dict(meta.get("training", {}))
    model.history_ = list(meta.get("loss_history", []))
