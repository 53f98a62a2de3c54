"""A site's once-per-run DP release of the survival head's slope score, at the end of the run.

The coordinator sends the run's final global weights; the site computes each training record's
score for the head's calibration slope (:func:`fedsynth.model.head_slope.slope_scores`), clips
each to [-C, C] (C from the coordinator, chosen from the model alone) and releases their sum
plus Gaussian noise of std ``z * C`` (``z`` = ``privacy.head_slope_noise_multiplier``, fixed in
the run's plan): one record moves the sum by at most C, so this is one Gaussian step at sample
rate 1 in the site's RDP ledger, planned with DP-SGD and the marginals from the run's start.

Order, as for the marginals: reserve in the ledger (synced), draw the noise, store the release in
``runs/<run id>/head_slope.json``, send. A second request for the same weights gets the stored
release; a request for other weights or another clip, or after a reservation whose release was
never stored, is refused: the plan left room for one release.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from fedsynth.client.ledger import BudgetExceededError
from fedsynth.client.rdp import rdp_epsilon
from fedsynth.client.site import Site
from fedsynth.client.site_files import RUNS_DIR
from fedsynth.data.io import write_text
from fedsynth.model.generators import AnyGeneratorConfig, new_generator, weights_digest
from fedsynth.model.head_slope import has_hazard_head, slope_scores

HEAD_SLOPE_FILE = "head_slope.json"
# Release rounds are numbered past every training round (a federation plans at most 10,000), so
# that a run extended by more rounds never meets its earlier slope release's number.
SLOPE_ROUNDS_FROM = 10_000
MAX_CLIP = 1000.0


def head_slope_round(planned_rounds: int) -> int:
    """The ledger's (and the coordinator's record's) round of the release after ``planned_rounds``."""
    return SLOPE_ROUNDS_FROM + planned_rounds


def trained_rounds(release_round: int) -> int | None:
    """The training rounds behind a slope release's round number (None: a training round)."""
    return release_round - SLOPE_ROUNDS_FROM if release_round > SLOPE_ROUNDS_FROM else None


class HeadSlopeRefusedError(RuntimeError):
    """The site will not release the slope score; the text names the site and why (no data)."""


@dataclass(frozen=True)
class HeadSlopeRelease:
    """What leaves the site: one noisy sum, the weights it was computed at and scalar figures."""

    site: str
    weights_sha256: str
    score: float
    num_examples: int  # the count a training reply carries anyway
    clip: float
    noise_multiplier: float
    epsilon_step: float
    epsilon: float
    target_epsilon: float
    delta: float

    def to_result(self) -> dict[str, Any]:
        return asdict(self)


RESULT_KEYS = frozenset(HeadSlopeRelease.__dataclass_fields__)


def release_head_slope(
    site: Site,
    state: dict[str, torch.Tensor],
    model_config: AnyGeneratorConfig,
    *,
    run_id: str,
    planned_rounds: int,
    clip: float,
    coordinator_floor: float = 0.0,
) -> HeadSlopeRelease:
    """The run's noisy slope score of ``site``'s training rows under the weights ``state``, each
    record's score clipped to [-``clip``, ``clip``] (the coordinator's, chosen from the model; any
    bound keeps the same epsilon: the noise is ``clip`` times the multiplier)."""
    name = site.config.name
    if coordinator_floor > 0:
        site.ledger.require_at_least(coordinator_floor, f"site '{name}': the coordinator of run '{run_id}'")
    if not (np.isfinite(clip) and 0 < clip <= MAX_CLIP):
        raise HeadSlopeRefusedError(f"site '{name}': score clip {clip} is not within (0, {MAX_CLIP:g}]")
    model = new_generator(model_config).build(site.schema)
    network = model._network()
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise HeadSlopeRefusedError(f"site '{name}': the weights do not fit the model ({exc})") from None
    if not has_hazard_head(network):
        raise HeadSlopeRefusedError(f"site '{name}': the model has no hazard survival head, so no slope to measure")
    digest = weights_digest(model)
    path = site.dir / RUNS_DIR / run_id / HEAD_SLOPE_FILE
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if (stored["weights_sha256"], stored["clip"]) != (digest, clip):
            raise HeadSlopeRefusedError(
                f"site '{name}' released its slope score for run '{run_id}' at other settings already; "
                "a second release would be a second spend, which its plan has no room for"
            )
        return HeadSlopeRelease(**stored)
    plan = site.plan(run_id, planned_rounds, head_slope=True)
    if plan.head_slope_noise_multiplier is None:
        raise HeadSlopeRefusedError(
            f"site '{name}' releases no slope score in run '{run_id}' (privacy.head_slope_noise_multiplier = "
            f"{site.config.privacy.head_slope_noise_multiplier:g}, or the run did not ask for it when it was planned)"
        )
    release_round = head_slope_round(plan.planned_rounds)
    if any(e.run_id == run_id and e.round == release_round for e in site.ledger.entries()):
        raise HeadSlopeRefusedError(
            f"site '{name}' reserved its slope release for run '{run_id}' but never stored it (interrupted); "
            "it will not release fresh noise for a spend already counted"
        )
    noise = plan.head_slope_noise_multiplier
    try:
        epsilon_after = site.ledger.reserve(
            run_id=run_id, round=release_round, noise_multiplier=noise, sample_rate=1.0, steps=1
        )
    except BudgetExceededError as exc:
        raise BudgetExceededError(f"site '{name}' {exc}") from exc
    scores = slope_scores(network, model.codes_tensor(site.train)).double().clamp(-clip, clip)
    # The noise must be unpredictable to anyone else: fresh OS randomness, never a known seed.
    rng = np.random.default_rng(secrets.randbits(128))
    release = HeadSlopeRelease(
        site=name,
        weights_sha256=digest,
        score=float(scores.sum()) + float(rng.normal(0.0, noise * clip)),
        num_examples=len(site.train),
        clip=clip,
        noise_multiplier=noise,
        epsilon_step=rdp_epsilon([(noise, 1.0, 1)], site.ledger.target_delta),
        epsilon=epsilon_after,
        target_epsilon=site.ledger.target_epsilon,
        delta=site.ledger.target_delta,
    )
    write_text(path, json.dumps(release.to_result()) + "\n")
    return release


def check_head_slope_result(result: dict[str, Any]) -> None:
    """ValueError unless a site's reply keeps to the contract: exactly the release's fields, a
    64-hex weights digest, finite numbers, positive where a count or privacy figure."""
    if set(result) != RESULT_KEYS:
        raise ValueError(f"unexpected fields {sorted(set(result) ^ RESULT_KEYS)}")
    if not isinstance(result["site"], str) or not isinstance(result["weights_sha256"], str):
        raise ValueError("site and weights_sha256 must be text")
    if len(result["weights_sha256"]) != 64:
        raise ValueError("weights_sha256 must be a SHA-256 hex digest")
    for key in RESULT_KEYS - {"site", "weights_sha256"}:
        value = result[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise ValueError(f"{key} must be a finite number")
        if key != "score" and value <= 0:
            raise ValueError(f"{key} must be positive")
