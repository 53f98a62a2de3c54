"""The coordinator's half of the federated DP marginals: ask, check, sum, make consistent, record.

Once per run, before its first round, the coordinator asks every site for the run's noisy
marginal tables (a QUERY with ``task = "marginals"``: the run id, its planned rounds and two bin
counts; no model). Each reply is checked against the contract
(:func:`fedsynth.client.marginal_release.check_marginals_result`); the accepted sites' tables
are summed (sites hold disjoint patients, so the sum is the pooled table plus the sum of their
independent noise) and made consistent by post-processing only
(:func:`fedsynth.marginals.consistency.make_consistent`). ``RUN_DIR/marginals.json`` holds
the spec, the summed and the consistent tables, and each site's noise and epsilon.

Each release is also a line in ``budget.jsonl`` (round 0, ``mechanism = "marginals"``) with
the scalars a training reply carries, so the budget report composes it with the rounds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.client.app import HEAD_SLOPE, LEDGER_FLOORS, MARGINALS_RECORD
from fedsynth.client.marginal_release import MARGINALS_ROUND, check_marginals_result, spec_fingerprint
from fedsynth.data.io import write_text
from fedsynth.data.schema import Schema
from fedsynth.marginals.consistency import make_consistent
from fedsynth.marginals.tables import DEFAULT_NUMERIC_BINS, DEFAULT_TIME_BINS, MarginalSpec, tables_to_json
from fedsynth.server.budget import site_epsilon_floors
from fedsynth.server.run import MARGINALS_FILE, RunDirectory
from fedsynth.server.site_queries import connected_nodes

MECHANISM = "marginals"


def _problem(reply: Message, spec: MarginalSpec) -> tuple[str | None, dict[str, Any] | None]:
    """(why the reply cannot be used, None) or (None, its result)."""
    if reply.has_error():
        return reply.error.reason, None
    if set(reply.content.keys()) != {MARGINALS_RECORD}:
        return f"reply outside the {MARGINALS_RECORD} contract", None
    record = reply.content[MARGINALS_RECORD]
    try:
        if set(record.keys()) != {"site", "result"}:
            raise ValueError(f"unexpected fields {sorted(record.keys())}")
        result = json.loads(str(record["result"]))
        check_marginals_result(result, spec)
        if result["site"] != str(record["site"]):
            raise ValueError("the result names another site")
    except (KeyError, TypeError, ValueError) as exc:
        return f"reply outside the {MARGINALS_RECORD} contract: {exc}", None
    return None, result


def request_marginals(
    grid: Grid,
    run: RunDirectory,
    run_id: str,
    planned_rounds: int,
    schema: Schema,
    *,
    timeout: float,
    expected_sites: int,
    numeric_bins: int = DEFAULT_NUMERIC_BINS,
    time_bins: int = DEFAULT_TIME_BINS,
    head_slope: bool = False,
) -> dict[str, Any]:
    """Ask every site for its noisy tables; write ``RUN_DIR/marginals.json`` and the budget lines.
    ``head_slope``: the run will ask for the slope release at its end (the sites plan for it)."""
    spec = MarginalSpec.from_schema(schema, numeric_bins=numeric_bins, time_bins=time_bins)
    config = ConfigRecord(
        {
            "task": MECHANISM,
            "run-id": run_id,
            "planned-rounds": planned_rounds,
            "numeric-bins": numeric_bins,
            "time-bins": time_bins,
            "spec-sha256": spec_fingerprint(spec),  # a site binning otherwise refuses before spending
            LEDGER_FLOORS: json.dumps(site_epsilon_floors(run.budget_records())),
            **({HEAD_SLOPE: True} if head_slope else {}),
        }
    )
    nodes = connected_nodes(grid, expected_sites)
    messages = [
        Message(content=RecordDict({"config": config}), dst_node_id=node, message_type=MessageType.QUERY)
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    destinations = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
    now = datetime.now(UTC).isoformat()
    sites: list[dict[str, Any]] = []
    tables: list[dict[str, np.ndarray]] = []
    budget: list[dict[str, Any]] = []
    for reply in replies:
        node_id = destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        base = {"round": MARGINALS_ROUND, "mechanism": MECHANISM, "node_id": node_id, "time": now}
        problem, result = _problem(reply, spec)
        if problem is not None or result is None:
            log(WARNING, "Marginals of node %s not used: %s", node_id, problem)
            budget.append({**base, "status": "error", "reason": problem})
            continue
        tables.append(check_marginals_result(result, spec))
        figures = {k: float(result[k]) for k in ("noise_multiplier", "epsilon_step", "epsilon")}
        sites.append({"site": result["site"], "node_id": node_id, **figures})
        # The scalars of a training reply, so the budget report composes this step with the rounds.
        budget.append(
            {
                **base, "status": "ok", "site": result["site"], "epsilon": figures["epsilon"],
                "epsilon-step": figures["epsilon_step"], "target-epsilon": float(result["target_epsilon"]),
                "delta": float(result["delta"]), "noise-multiplier": figures["noise_multiplier"],
                "sample-rate": 1.0, "steps": 1,
            }
        )  # fmt: skip
    answered = {reply.metadata.reply_to_message_id for reply in replies}
    for message_id, node_id in destinations.items():
        if message_id not in answered:
            reason = "no reply within the marginals timeout"
            budget.append({"round": MARGINALS_ROUND, "mechanism": MECHANISM, "node_id": node_id, "time": now,
                           "status": "error", "reason": reason})  # fmt: skip
    run.append_budget(budget)
    failures = [{"node_id": r["node_id"], "reason": r["reason"]} for r in budget if r["status"] != "ok"]
    if len(nodes) < expected_sites:
        failures.append({"node_id": None, "reason": f"{len(nodes)} of {expected_sites} expected sites connected"})
    summed = {t.name: sum(s[t.name] for s in tables) for t in spec.tables} if tables else None
    document = {
        "time": now,
        "run_id": run_id,
        "spec": spec.to_dict(),
        "spec_sha256": spec_fingerprint(spec),
        "sites": sorted(sites, key=lambda s: s["site"]),
        "failures": failures,
        # Incomplete: the sum covers only the sites listed, not the federation's population.
        "complete": bool(sites) and not failures,
        "noisy_tables": json.loads(tables_to_json(summed)) if summed else None,
        "consistent_tables": json.loads(tables_to_json(make_consistent(summed, spec))) if summed else None,
        "note": (
            "Sum of each site's Gaussian-noised counts (one DP release per site, in its ledger), made "
            "non-negative with agreeing margins by post-processing only."
        ),
    }
    write_text(run.path / MARGINALS_FILE, json.dumps(document) + "\n")
    log(INFO, "Marginals: %s site(s) released, %s failure(s)", len(sites), len(failures))
    return document
