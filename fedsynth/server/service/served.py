"""The model a service answers from: a run's global model, loaded once, pinned by its hash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedsynth.errors import UserError
from fedsynth.model.generators import AnyGenerator, generator_digest, load_generator
from fedsynth.model.persistence import ModelFileError, model_digest
from fedsynth.model.provenance import DP_NOTICE, NON_DP_MODEL_NOTICE
from fedsynth.server.evidence import DPClaimError, DPEvidence, check_dp_claim


class ServiceStartError(UserError, ValueError):
    """The service must not start as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServedModel:
    run_dir: Path
    model: AnyGenerator
    sha256: str
    weights_sha256: str  # what the sites' audits and evaluations name the model by
    evidence: DPEvidence  # DP status from the run's records (model.json's flag alone is a claim)

    @property
    def differentially_private(self) -> bool:
        return self.evidence.differentially_private

    @property
    def notice(self) -> str:
        return DP_NOTICE if self.differentially_private else NON_DP_MODEL_NOTICE

    @classmethod
    def load(cls, run_dir: str | Path, allow_non_dp: bool) -> ServedModel:
        """Load RUN_DIR/model (every file verified against its manifest) and apply the DP gate.

        The digest is taken before and after loading: a model replaced on disk meanwhile
        would otherwise be served under another model's hash. DP status is what the run's
        records show (:mod:`fedsynth.server.evidence`); a model whose model.json claims DP
        without them is refused, ``allow_non_dp`` or not: its label cannot be trusted.
        """
        run_dir = Path(run_dir)
        model_dir = run_dir / "model"
        if not model_dir.is_dir():
            raise ServiceStartError(f"{model_dir} not found: serve a run directory made by `fedsynth train`")
        before = model_digest(model_dir)
        model = load_generator(model_dir)
        if model_digest(model_dir) != before:
            raise ModelFileError(f"{model_dir} changed while it was loaded; start the service again")
        try:
            evidence = check_dp_claim(model_dir, model)
        except DPClaimError as exc:
            raise ServiceStartError(str(exc)) from None
        if not evidence.differentially_private and not allow_non_dp:
            raise ServiceStartError(
                f"{model_dir} counts as trained without differential privacy ({evidence.reason}): its "
                "samples may reveal training rows. Serve a federated DP run, or pass --allow-non-dp (every "
                "answer is then labelled not DP)"
            )
        return cls(run_dir, model, before, generator_digest(model), evidence)
