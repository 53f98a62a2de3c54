"""Whether a model is differentially private, decided from its run's records, not from a flag.

``model.json`` carries a ``differentially_private`` flag, and its manifest is an unsigned
checksum: anyone who can edit the file can recompute it. So the flag is only a claim. A
model is DP here only if it is the published model (``RUN_DIR/model``) or a checkpoint
(``RUN_DIR/checkpoints/round-N``) of a federated run whose records show it:

* ``checkpoints.jsonl`` names the round that produced exactly these weights (their digest,
  :func:`fedsynth.model.persistence.weights_digest`, recorded when the coordinator saved it);
* ``budget.jsonl`` holds an ok reply of every site aggregated in that round, and every ok
  reply up to that round reports a finite epsilon within the site's target and a positive
  noise multiplier (each site's ledger composes its epsilon over every round it trained).

A flag that claims DP where the records do not is refused (:func:`check_dp_claim`), not
quietly relabelled: it means the model was edited, or separated from the run that could
vouch for it, and a privacy officer must see that rather than a file that merely says "not
DP" next to an identical-looking one that says "DP".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsynth.model.generators import AnyGenerator, load_generator, weights_digest
from fedsynth.server.run import BUDGET, CHECKPOINT_RECORD, CHECKPOINTS, MARGINALS_FILE, RunDirectory

# Ledgers compose epsilon in floating point; a site at its target must not read as over it.
EPSILON_SLACK = 1e-9


class DPClaimError(ValueError):
    """A model's files claim DP, but its run's records do not show it."""


@dataclass(frozen=True)
class DPEvidence:
    """Whether the records show the model is DP, and why (the reason is shown to users)."""

    differentially_private: bool
    reason: str
    run_dir: Path | None = None
    round: int | None = None
    epsilon: float | None = None  # the largest epsilon any site had spent by that round


def run_directory_of(model_dir: Path) -> Path | None:
    """The run directory holding ``model_dir`` as its model or one of its checkpoints."""
    model_dir = Path(model_dir).resolve()
    if (model_dir.parent / "run.json").exists():
        return model_dir.parent
    if model_dir.parent.name == CHECKPOINTS and (model_dir.parent.parent / "run.json").exists():
        return model_dir.parent.parent
    return None


def _site_problem(record: dict[str, Any]) -> str | None:
    """Why a site's ok reply does not show DP training within its budget (None if it does)."""
    try:
        epsilon, target = float(record["epsilon"]), float(record["target-epsilon"])
        noise = float(record["noise-multiplier"])
    except (KeyError, TypeError, ValueError):
        return "its reply lacks epsilon, target-epsilon or noise-multiplier"
    if not (math.isfinite(epsilon) and noise > 0):
        return f"epsilon {epsilon} with noise multiplier {noise} is not DP-SGD"
    if epsilon > target + EPSILON_SLACK:
        return f"epsilon {epsilon:.4g} is over its target {target:g}"
    return None


def _calibration_problem(run: RunDirectory, model: AnyGenerator, ok: list[dict[str, Any]]) -> str | None:
    """Why the model's marginal tables are not the run's DP release (None if they are, or it has none)."""
    if model.calibration_ is None:
        return None
    try:
        released = run.marginal_target()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{run.path / MARGINALS_FILE} is unreadable ({exc})"
    if released is None or released.digest() != model.calibration_.digest():
        return f"the model's marginal tables are not {run.path / MARGINALS_FILE}'s complete DP release"
    released_by = {str(r.get("site")) for r in ok if r.get("mechanism") == "marginals"}
    sites = {str(s.get("site")) for s in released.source.get("sites", [])}
    if not sites or sites - released_by:
        missing = ", ".join(sorted(sites - released_by)) or "any site"
        return f"{run.path / BUDGET} records no DP marginal release of {missing}"
    return None


def dp_evidence(model_dir: str | Path, model: AnyGenerator | None = None) -> DPEvidence:
    """What the run's records say about ``model_dir``'s weights (``model``: already loaded)."""
    model_dir = Path(model_dir)
    run_dir = run_directory_of(model_dir)
    if run_dir is None:
        return DPEvidence(
            False,
            f"{model_dir} is not the model or a checkpoint of a federated run directory (no run.json beside "
            "it), so no budget record shows it was trained with DP",
        )
    model = model if model is not None else load_generator(model_dir)
    digest = weights_digest(model)
    run = RunDirectory(run_dir)
    if not (run_dir / CHECKPOINT_RECORD).exists():
        return DPEvidence(
            False,
            f"{run_dir} has no {CHECKPOINT_RECORD} (a run trained by a fedsynth that did not yet record which "
            "weights each round produced; train it again to have that record)",
            run_dir,
        )
    rounds = [int(r["round"]) for r in run.checkpoint_records() if r.get("weights_sha256") == digest]
    if not rounds:
        return DPEvidence(False, f"{run_dir / CHECKPOINT_RECORD} records no round that produced these weights", run_dir)
    produced = min(rounds)  # the same weights twice (a round that changed nothing): the first
    record = next(r for r in run.checkpoint_records() if int(r["round"]) == produced)
    ok = [r for r in run.budget_records() if r.get("status") == "ok" and int(r.get("round", 0)) <= produced]
    trained = {str(r.get("site")) for r in ok if int(r["round"]) == produced}
    missing = sorted(set(record.get("sites") or []) - trained)
    if not trained or missing:
        absent = ", ".join(missing) if missing else "any site"
        return DPEvidence(
            False, f"{run_dir / BUDGET} records no ok reply of {absent} for round {produced}", run_dir, produced
        )
    for reply in ok:
        problem = _site_problem(reply)
        if problem is not None:
            where = f"{reply.get('site')} in round {reply.get('round')}"
            return DPEvidence(False, f"{run_dir / BUDGET}: {where}: {problem}", run_dir, produced)
    calibration = _calibration_problem(run, model, ok)
    if calibration is not None:
        return DPEvidence(False, calibration, run_dir, produced)
    epsilon = max(float(r["epsilon"]) for r in ok)
    return DPEvidence(
        True,
        f"round {produced} of {run_dir.name}: {len(trained)} site(s) trained it with DP-SGD, each within its "
        f"target epsilon (largest spent {epsilon:.4g})",
        run_dir,
        produced,
        epsilon,
    )


def check_dp_claim(model_dir: str | Path, model: AnyGenerator) -> DPEvidence:
    """The model's DP status: DP only if its flag claims it and the records show it.

    Raises :class:`DPClaimError` when the flag claims DP and the records do not. A model whose
    records show DP but whose flag does not is labelled not DP: under-claiming harms nobody.
    """
    evidence = dp_evidence(model_dir, model)
    if not model.differentially_private_:
        return DPEvidence(False, f"{Path(model_dir) / 'model.json'} says it was trained without DP (fedsynth fit)")
    if not evidence.differentially_private:
        raise DPClaimError(
            f"{Path(model_dir) / 'model.json'} says the model is differentially private, but {evidence.reason}. "
            "A DP claim without that evidence is refused: the model was edited or taken out of its run. Use "
            "the run's own RUN_DIR/model (or a checkpoint in RUN_DIR/checkpoints) as `fedsynth train` wrote it"
        )
    return evidence
