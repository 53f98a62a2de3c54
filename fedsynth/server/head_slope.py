"""The coordinator's half of the survival head's DP slope: ask, check, sum, one Newton step, record.

After the last training round, the coordinator sends every site the final global weights (a
QUERY with ``task = "head-slope"``); each site releases its records' clipped slope score plus
Gaussian noise, once, in its own ledger (:mod:`fedsynth.client.slope_release`). With every site's
release for exactly these weights, the coordinator finds the slope at which the expected score of
the model's own calibrated rows, scaled to the sites' record count, equals the summed releases
(:func:`fedsynth.model.head_slope.solve_slope`), scales the head's event effects by it and saves the result as
the checkpoint after the last round (post-processing of DP releases). ``RUN_DIR/head_slope.json``
holds each site's release and the slope; each release is a line in ``budget.jsonl`` (round
10,000 + rounds, past any training round; ``mechanism = "head-slope"``) with a training reply's scalars, so the budget
report and the DP evidence compose it with the rest.

Any missing or refused release of a site aggregated into the final model leaves the model as
trained (slope 1): a partial sum is not the federation's score. The releases made still count
in their sites' ledgers and in the record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from logging import INFO
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.client.app import HEAD_SLOPE_RECORD, LEDGER_FLOORS
from fedsynth.client.slope_release import check_head_slope_result, head_slope_round
from fedsynth.data.io import write_text
from fedsynth.model.generators import AnyGenerator, config_to_dict, weights_digest
from fedsynth.model.head_slope import (
    has_hazard_head,
    scale_event_effects,
    score_clip,
    slope_information,
    solve_slope,
)
from fedsynth.server.budget import site_epsilon_floors
from fedsynth.server.run import Checkpoint, RunDirectory
from fedsynth.server.site_releases import gather_releases, release_problem

MECHANISM = "head-slope"
HEAD_SLOPE_FILE = "head_slope.json"
# Rows of the model's own calibrated sample the slope is solved on (fixed seed: the slope is a
# function of the model, its tables and the releases alone).
INFORMATION_ROWS = 8192
INFORMATION_SEED = 0


def wants_head_slope(model: AnyGenerator) -> bool:
    """Whether the run's model has a hazard head to take the slope release for."""
    network = getattr(model, "network_", None)
    return network is not None and has_hazard_head(network)


def model_rows(model: AnyGenerator) -> torch.Tensor:
    """The encoded covariates of the model's own rows (calibrated to the run's DP tables where it
    carries them), that the slope is solved on: the model only, no site's rows."""
    rows = model.sample(INFORMATION_ROWS, seed=INFORMATION_SEED)
    with torch.no_grad():
        return model.network_.layout.encode_codes(model.codes_tensor(rows))


def _check(digest: str, clip: float) -> Callable[[dict[str, Any]], None]:
    def check(result: dict[str, Any]) -> None:
        check_head_slope_result(result)
        if (result["weights_sha256"], result["clip"]) != (digest, clip):
            raise ValueError("the release is of other weights or clip than the coordinator asked for")

    return check


def _problem(reply: Message, digest: str, clip: float) -> tuple[str | None, dict[str, Any] | None]:
    """(why the reply cannot be used, None) or (None, its result)."""
    return release_problem(reply, HEAD_SLOPE_RECORD, _check(digest, clip))


def request_head_slope(
    grid: Grid,
    run: RunDirectory,
    run_id: str,
    model: AnyGenerator,
    final: Checkpoint,
    planned_rounds: int,
    *,
    timeout: float,
    expected_sites: int,
) -> Checkpoint:
    """Ask every site for its slope release at ``final``'s weights (``model``, calibrated as the
    release will be); return the checkpoint to publish: the slope-scaled model (round 10,000 +
    ``planned_rounds``) when every site released, else ``final``. Writes
    ``RUN_DIR/head_slope.json`` and the budget lines."""
    digest = weights_digest(model)
    release_round = head_slope_round(planned_rounds)
    encoded = model_rows(model)
    clip = score_clip(model.network_, encoded)
    config = ConfigRecord(
        {
            "task": MECHANISM,
            "score-clip": clip,
            "run-id": run_id,
            "planned-rounds": planned_rounds,
            "model-config": json.dumps(config_to_dict(model.config)),
            LEDGER_FLOORS: json.dumps(site_epsilon_floors(run.budget_records())),
        }
    )
    accepted, failures = gather_releases(
        grid, run, config, record=HEAD_SLOPE_RECORD, release_round=release_round, check=_check(digest, clip),
        timeout=timeout, expected_sites=expected_sites, arrays=ArrayRecord(model.network_.state_dict()),
    )  # fmt: skip
    now = datetime.now(UTC).isoformat()
    sites = [{**result, "node_id": node_id} for node_id, result in accepted]
    # Every site whose update is in the final model must answer: a sum over fewer sites would
    # describe part of the population the model learnt from.
    missing = sorted(set((model.training_info_ or {}).get("sites") or []) - {s["site"] for s in sites})
    if missing:
        failures.append({"node_id": None, "reason": f"no release of {', '.join(missing)}, whose rows the model learnt"})
    complete = bool(sites) and not failures
    document: dict[str, Any] = {
        "time": now,
        "run_id": run_id,
        "round": release_round,
        "weights_sha256": digest,
        "score_clip": clip,
        "sites": sorted(sites, key=lambda s: s["site"]),
        "failures": failures,
        "complete": complete,
        "slope": 1.0,
    }
    if complete:
        n_rows = sum(int(s["num_examples"]) for s in sites)
        score = sum(float(s["score"]) for s in sites)
        information = float(slope_information(model.network_, encoded).double().mean()) * n_rows
        releases = [(int(s["num_examples"]), float(s["clip"])) for s in sites]
        slope = solve_slope(score, model.network_, encoded, releases)
        noise = math.sqrt(sum((float(s["noise_multiplier"]) * float(s["clip"])) ** 2 for s in sites))
        document.update(
            score=score, num_examples=n_rows, information=information, slope=slope,
            # What the sites' noise alone moves the slope by, near slope 1 (one SD).
            slope_noise_sd=noise / information if information > 0 else None,
        )  # fmt: skip
    document["note"] = (
        "Each site's clipped slope score plus Gaussian noise (one DP release per site, in its ledger); the slope "
        "is the one at which the model's own rows expect that score (post-processing)."
        if complete
        else "Not every site released for these weights: the model is published as trained (slope 1)."
    )
    write_text(run.path / HEAD_SLOPE_FILE, json.dumps(document, indent=1) + "\n")
    log(INFO, "Head slope: %s site(s) released, slope %.3f", len(sites), document["slope"])
    if not complete:
        return final
    scale_event_effects(model.network_, document["slope"])
    info = {**(model.training_info_ or {}), "sites": sorted(s["site"] for s in sites), "head_slope": document["slope"]}
    return run.save_checkpoint(release_round, model.network_.state_dict(), model.schema_, model.config, info)
