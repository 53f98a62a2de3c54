"""A federated run's directory: config, per-round checkpoints and the budget record.

    RUN_DIR/
      run.json                  run id, config, planned rounds, created
      schema.toml               the public schema
      checkpoints/round-0003/   a saved model (weights + SHA-256 manifest), one per round
      checkpoints/LATEST        the last complete checkpoint's round (written after it)
      checkpoints.jsonl         one line per checkpoint: its round, weights digest and sites
      budget.jsonl              one line per site per round: the scalars the site replied
      marginals.json            the sites' summed DP marginal tables (fedsynth.server.marginals)
      model -> the final global model: the last checkpoint, calibrated to marginals.json's
               tables when every site released them

Checkpoints are written atomically and LATEST only after, so a coordinator killed at any
moment resumes from a complete, hash-verified checkpoint. ``checkpoints.jsonl`` ties each
checkpoint's weights to the round that produced them: whether a model is DP is decided from
it and the round's budget records (:mod:`fedsynth.server.evidence`), never from the
``differentially_private`` flag in the model's own files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsynth.data.io import write_text
from fedsynth.data.schema import Schema
from fedsynth.marginals.target import MarginalTarget

# The model modules load torch: they are imported where a model is read or written, so that
# reading a run's records (`fedsynth budget`) does not pay for it.
if TYPE_CHECKING:
    import torch

    from fedsynth.model.generators import AnyGenerator, AnyGeneratorConfig

CHECKPOINTS = "checkpoints"
BUDGET = "budget.jsonl"
CHECKPOINT_RECORD = "checkpoints.jsonl"
MARGINALS_FILE = "marginals.json"


@dataclass(frozen=True)
class Checkpoint:
    round: int
    path: Path
    sha256: str


class RunDirectory:
    """Reads and writes one run's files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- set-up -----------------------------------------------------------------------------------

    def initialise(self, run_id: str, schema: Schema, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "run.json").exists():
            record = {"run_id": run_id, "created": datetime.now(UTC).isoformat(), "config": config}
            write_text(self.path / "run.json", json.dumps(record, indent=2, default=str) + "\n")
            write_text(self.path / "schema.toml", schema.to_toml())

    def info(self) -> dict[str, Any]:
        path = self.path / "run.json"
        if not path.exists():
            raise FileNotFoundError(f"{self.path} is not a fedsynth run directory (no run.json)")
        return json.loads(path.read_text(encoding="utf-8"))

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(
        self,
        server_round: int,
        state_dict: dict[str, torch.Tensor],
        schema: Schema,
        config: AnyGeneratorConfig,
        info: dict,
    ) -> Checkpoint:
        from fedsynth.model.generators import new_generator, weights_digest
        from fedsynth.model.persistence import model_digest

        model = new_generator(config).build(schema)
        model.network_.load_state_dict(state_dict)
        model.differentially_private_ = True
        model.training_info_ = info
        target = self.path / CHECKPOINTS / f"round-{server_round:04d}"
        model.save(target, overwrite=True)
        checkpoint = Checkpoint(server_round, target, model_digest(target))
        # Recorded before LATEST: a checkpoint the run resumes from or publishes is always in the
        # record that DP evidence reads (fedsynth.server.evidence).
        record = {
            "round": server_round,
            "weights_sha256": weights_digest(model),
            "model_sha256": checkpoint.sha256,
            "sites": list(info.get("sites", [])),
            "time": datetime.now(UTC).isoformat(),
        }
        self._append_lines(CHECKPOINT_RECORD, [record])
        write_text(self.path / CHECKPOINTS / "LATEST", f"{server_round}\n")
        return checkpoint

    def latest_checkpoint(self) -> Checkpoint | None:
        pointer = self.path / CHECKPOINTS / "LATEST"
        if not pointer.exists():
            return None
        return self.checkpoint(int(pointer.read_text(encoding="utf-8").strip()))

    def checkpoint(self, server_round: int) -> Checkpoint:
        """The saved checkpoint of ``server_round`` (FileNotFoundError if there is none)."""
        from fedsynth.model.persistence import model_digest

        target = self.path / CHECKPOINTS / f"round-{server_round:04d}"
        return Checkpoint(server_round, target, model_digest(target))

    def load_checkpoint(self, checkpoint: Checkpoint) -> AnyGenerator:
        """The checkpoint's model; its manifest hashes are verified on load."""
        from fedsynth.model.generators import load_generator

        return load_generator(checkpoint.path)

    def marginal_target(self) -> MarginalTarget | None:
        """The run's complete DP marginal tables as a calibration target (None: none, or incomplete)."""
        path = self.path / MARGINALS_FILE
        if not path.exists():
            return None
        return MarginalTarget.from_run_document(json.loads(path.read_text(encoding="utf-8")))

    def publish_model(self, checkpoint: Checkpoint) -> Path:
        """The final checkpoint as RUN_DIR/model, the model the server samples from: calibrated
        to the run's DP marginal tables where every site released them, else a copy."""
        from fedsynth.model.generators import load_generator

        target = self.path / "model"
        calibration = self.marginal_target()
        if calibration is not None:
            return load_generator(checkpoint.path).calibrate_to(calibration).save(target, overwrite=True)
        staging = self.path / ".model.tmp"
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(checkpoint.path, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        return target

    # -- budget record ----------------------------------------------------------------------------

    def append_budget(self, records: list[dict[str, Any]]) -> None:
        """Append site records (one JSON line each) and fsync: the record outlives a crash."""
        self._append_lines(BUDGET, records)

    def budget_records(self) -> list[dict[str, Any]]:
        return self._read_lines(BUDGET)

    def checkpoint_records(self) -> list[dict[str, Any]]:
        """One record per saved checkpoint: round, ``weights_sha256``, ``model_sha256``, sites."""
        return self._read_lines(CHECKPOINT_RECORD)

    def _append_lines(self, name: str, records: list[dict[str, Any]]) -> None:
        with (self.path / name).open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _read_lines(self, name: str) -> list[dict[str, Any]]:
        path = self.path / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
