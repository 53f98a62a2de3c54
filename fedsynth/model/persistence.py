"""Saving and loading a model directory, verified by SHA-256.

A model directory holds ``weights.pt`` (state dict), ``schema.toml`` (the public schema it
was trained for), ``model.json`` (config and provenance: a claim of DP or not, training rows) and
``manifest.json`` (SHA-256 of every other file), and for a model calibrated to its run's DP
marginal tables ``marginals.json`` (:class:`~fedsynth.marginals.target.MarginalTarget`).
Loading checks every hash before reading anything, so a corrupted or tampered file is refused
with its name. Writing goes to a temporary directory that is renamed into place: a failure
leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from fedsynth.data.schema import Schema, SchemaError
from fedsynth.errors import UserError
from fedsynth.marginals.target import MarginalTarget, MarginalTargetError
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM, network_for

FORMAT_VERSION = 1
WEIGHTS, SCHEMA, META, MANIFEST = "weights.pt", "schema.toml", "model.json", "manifest.json"
MARGINALS = "marginals.json"


class ModelFileError(UserError, ValueError):
    """A model directory is missing, incomplete, corrupted or of another format."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(model: MCM, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` to directory ``path`` atomically; returns the path."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; choose another directory or pass overwrite (--force)")
    network, schema = model._network(), model._schema()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        torch.save(network.state_dict(), staging / WEIGHTS)
        (staging / SCHEMA).write_text(schema.to_toml(), encoding="utf-8")
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "generator": "mcm",
            "config": model.config.model_dump(mode="json"),
            "differentially_private": model.differentially_private_,
            "n_train": model.n_train_,
            "training": model.training_info_,
            "loss_history": model.history_,
            "calibration": _calibration_meta(model.calibration_),
        }
        (staging / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        names = [WEIGHTS, SCHEMA, META]
        if model.calibration_ is not None:
            (staging / MARGINALS).write_text(model.calibration_.to_json(), encoding="utf-8")
            names.append(MARGINALS)
        files = {name: sha256_file(staging / name) for name in names}
        (staging / MANIFEST).write_text(json.dumps({"files": files}, indent=2), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _calibration_meta(target: MarginalTarget | None) -> dict[str, Any] | None:
    if target is None:
        return None
    return {"file": MARGINALS, "sha256": target.digest(), "source": target.source}


def model_digest(path: str | Path) -> str:
    """SHA-256 of the manifest: one hash that pins every file of the model."""
    return sha256_file(Path(path) / MANIFEST)


def generator_digest(model: MCM) -> str:
    """SHA-256 of what determines the model's samples: its weights and, for a calibrated model,
    its marginal tables. Sites name the model they audited by it, so a release calibrated to
    other tables is not covered by their audit."""
    if model.calibration_ is None:
        return weights_digest(model)
    return hashlib.sha256(f"{weights_digest(model)}:{model.calibration_.digest()}".encode()).hexdigest()


def weights_digest(model: MCM) -> str:
    """SHA-256 of the model's weights, in parameter order: how sites name the model they audited.

    Not :func:`model_digest` (the hash of a saved model's manifest, i.e. of its files): a site
    holds the weights it was sent, not the coordinator's files, so audits and evaluations
    record this one, and whoever matches their results to a model compares this one.
    """
    hasher = hashlib.sha256()
    for name, tensor in model.network_.state_dict().items():
        hasher.update(name.encode())
        hasher.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return hasher.hexdigest()


def load_model(path: str | Path) -> MCM:
    """Load and verify a model directory written by :func:`save_model`."""
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
    model = MCM(MCMConfig.model_validate(meta["config"]))
    model.schema_ = schema
    model.network_ = network_for(model.config, schema)
    state = torch.load(root / WEIGHTS, map_location="cpu", weights_only=True)
    model.network_.load_state_dict(state)
    model.network_.eval()
    # A claim only: the manifest is an unsigned checksum anyone can recompute. Whether the model
    # is DP is decided from its run's records (fedsynth.privacy.evidence.check_dp_claim).
    model.differentially_private_ = bool(meta.get("differentially_private", False))
    model.n_train_ = int(meta.get("n_train", 0))
    model.training_info_ = dict(meta.get("training", {}))
    model.history_ = list(meta.get("loss_history", []))
    if MARGINALS in files:
        try:
            target = MarginalTarget.from_json(
                (root / MARGINALS).read_text(encoding="utf-8"), schema, str(root / MARGINALS)
            )
        except MarginalTargetError as exc:
            raise ModelFileError(str(exc)) from None
        model.calibrate_to(target)
    return model
