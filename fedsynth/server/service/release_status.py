"""Whether a run's model is signed off for release: read from RUN_DIR/signoff.json, bound to the
model by its manifest's SHA-256, so a verdict on another model does not count."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

SIGNOFF_FILE = "signoff.json"  # written by fedsynth.release.signoff.write_signoff


class ReleaseStatus(BaseModel):
    """The run's sign-off as the service reports it in /v1/model."""

    outcome: str | None = Field(None, description="PASS, FAIL or INCONCLUSIVE; None without a sign-off")
    time: str | None = None
    forced: bool = Field(False, description="released by the board although the verdict did not pass")
    matches_model: bool = Field(False, description="the sign-off is of the model being served")
    problem: str | None = Field(None, description="why the model does not count as signed off")

    @property
    def signed(self) -> bool:
        return self.problem is None


def release_status(run_dir: Path, model_sha256: str) -> ReleaseStatus:
    """The sign-off of ``run_dir``'s model (``model_sha256``: its manifest's digest)."""
    path = Path(run_dir) / SIGNOFF_FILE
    how = f"sign it off first: `fedsynth signoff {run_dir}`"
    if not path.exists():
        return ReleaseStatus(problem=f"{path} is missing: the run has no release sign-off; {how}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        verdict = record["verdict"]
        outcome = str(verdict.get("outcome") or ("PASS" if verdict["passed"] else "FAIL"))
        forced = record.get("forced") is not None
        matches = record.get("model_sha256") == model_sha256
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return ReleaseStatus(problem=f"{path} is unreadable ({exc}); {how}")
    status = {"outcome": outcome, "time": verdict.get("time"), "forced": forced, "matches_model": matches}
    if not matches:
        return ReleaseStatus(**status, problem=f"{path} is of another model than {Path(run_dir) / 'model'}; {how}")
    if outcome != "PASS" and not forced:
        return ReleaseStatus(**status, problem=f"{path}: the release verdict is {outcome}, not PASS")
    return ReleaseStatus(**status)
