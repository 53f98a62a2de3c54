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
from datetime import UTC, datetime
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.client.app import HEAD_SLOPE_RECORD, LEDGER_FLOORS
from fedsynth.client.slope_release import check_head_slope_result, head_slope_round
from fedsynth.data.io import write_text
from fedsynth.model.generators import AnyGenerator, config_to_dict, weights_digest
from fedsynth.model.head_slope import has_hazard_head, scale_event_effects, slope_information, solve_slope
from fedsynth.server.budget import site_epsilon_floors
from fedsynth.server.run import Checkpoint, RunDirectory
from fedsynth.server.site_queries import connected_nodes

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


def _problem(reply: Message, digest: str) -> tuple[str | None, dict[str, Any] | None]:
    """(why the reply cannot be used, None) or (None, its result)."""
    if reply.has_error():
        return reply.error.reason, None
    if set(reply.content.keys()) != {HEAD_SLOPE_RECORD}:
        return f"reply outside the {HEAD_SLOPE_RECORD} contract", None
    record = reply.content[HEAD_SLOPE_RECORD]
    try:
        if set(record.keys()) != {"site", "result"}:
            raise ValueError(f"unexpected fields {sorted(record.keys())}")
        result = json.loads(str(record["result"]))
        check_head_slope_result(result)
        if result["site"] != str(record["site"]):
            raise ValueError("the result names another site")
        if result["weights_sha256"] != digest:
            raise ValueError("the release is of other weights than the run's final model")
    except (KeyError, TypeError, ValueError) as exc:
        return f"reply outside the {HEAD_SLOPE_RECORD} contract: {exc}", None
    return None, result


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
    release will be); return the
    checkpoint to publish: the slope-scaled model (round 10,000 + ``planned_rounds``) when every site
    released, else ``final``. Writes ``RUN_DIR/head_slope.json`` and the budget lines."""
    digest = weights_digest(model)
    release_round = head_slope_round(planned_rounds)
    config = ConfigRecord(
        {
            "task": MECHANISM,
            "run-id": run_id,
            "planned-rounds": planned_rounds,
            "model-config": json.dumps(config_to_dict(model.config)),
            LEDGER_FLOORS: json.dumps(site_epsilon_floors(run.budget_records())),
        }
    )
    nodes = connected_nodes(grid, expected_sites)
    messages = [
        Message(
            content=RecordDict({"arrays": ArrayRecord(model.network_.state_dict()), "config": config}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    destinations = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
    now = datetime.now(UTC).isoformat()
    sites: list[dict[str, Any]] = []
    budget: list[dict[str, Any]] = []
    for reply in replies:
        node_id = destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        base = {"round": release_round, "mechanism": MECHANISM, "node_id": node_id, "time": now}
        problem, result = _problem(reply, digest)
        if problem is not None or result is None:
            log(WARNING, "Slope release of node %s not used: %s", node_id, problem)
            budget.append({**base, "status": "error", "reason": problem})
            continue
        sites.append({**result, "node_id": node_id})
        budget.append(
            {
                **base, "status": "ok", "site": result["site"], "epsilon": float(result["epsilon"]),
                "epsilon-step": float(result["epsilon_step"]), "target-epsilon": float(result["target_epsilon"]),
                "delta": float(result["delta"]), "noise-multiplier": float(result["noise_multiplier"]),
                "sample-rate": 1.0, "steps": 1, "num-examples": int(result["num_examples"]),
            }
        )  # fmt: skip
    answered = {reply.metadata.reply_to_message_id for reply in replies}
    for message_id, node_id in destinations.items():
        if message_id not in answered:
            budget.append({"round": release_round, "mechanism": MECHANISM, "node_id": node_id, "time": now,
                           "status": "error", "reason": "no reply within the head-slope timeout"})  # fmt: skip
    run.append_budget(budget)
    failures = [{"node_id": r["node_id"], "reason": r["reason"]} for r in budget if r["status"] != "ok"]
    if len(nodes) < expected_sites:
        failures.append({"node_id": None, "reason": f"{len(nodes)} of {expected_sites} expected sites connected"})
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
        "sites": sorted(sites, key=lambda s: s["site"]),
        "failures": failures,
        "complete": complete,
        "slope": 1.0,
    }
    if complete:
        n_rows = sum(int(s["num_examples"]) for s in sites)
        score = sum(float(s["score"]) for s in sites)
        encoded = model_rows(model)
        information = float(slope_information(model.network_, encoded).double().mean()) * n_rows
        slope = solve_slope(score, model.network_, encoded, n_rows)
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
