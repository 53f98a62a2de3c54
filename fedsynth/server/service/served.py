"""The model a service answers from: a run's global model, loaded once, pinned by its hash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedsynth.model.mcm import MCM
from fedsynth.model.persistence import ModelFileError, load_model, model_digest, weights_digest
from fedsynth.model.provenance import DP_NOTICE, NON_DP_MODEL_NOTICE


class ServiceStartError(ValueError):
    """The service must not start as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServedModel:
    run_dir: Path
    model: MCM
    sha256: str
    weights_sha256: str  # what the sites' audits and evaluations name the model by

    @property
    def differentially_private(self) -> bool:
        return self.model.differentially_private_

    @property
    def notice(self) -> str:
        return DP_NOTICE if self.differentially_private else NON_DP_MODEL_NOTICE

    @classmethod
    def load(cls, run_dir: str | Path, allow_non_dp: bool) -> ServedModel:
        """Load RUN_DIR/model (every file verified against its manifest) and apply the DP gate.

        The digest is taken before and after loading: a model replaced on disk meanwhile
        would otherwise be served under another model's hash.
        """
        run_dir = Path(run_dir)
        model_dir = run_dir / "model"
        if not model_dir.is_dir():
            raise ServiceStartError(f"{model_dir} not found: serve a run directory made by `fedsynth train`")
        before = model_digest(model_dir)
        model = load_model(model_dir)
        if model_digest(model_dir) != before:
            raise ModelFileError(f"{model_dir} changed while it was loaded; start the service again")
        if not model.differentially_private_ and not allow_non_dp:
            raise ServiceStartError(
                f"{model_dir} was trained without differential privacy: its samples may reveal training rows. "
                "Serve a federated DP run, or pass --allow-non-dp (every answer is then labelled not DP)"
            )
        return cls(run_dir, model, before, weights_digest(model))
