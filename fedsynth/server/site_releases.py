"""The coordinator's side of a once-per-run DP release by every site (marginal tables, head slope).

Both releases go the same way: one QUERY per connected site, each reply checked against its
contract (one ConfigRecord named after the release: the site's name and a JSON result), each
accepted release a line in ``budget.jsonl`` with the scalars a training reply carries (one
Gaussian step at sample rate 1), each refusal or silence a line with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.server.run import RunDirectory
from fedsynth.server.site_queries import ask_sites

ResultCheck = Callable[[dict[str, Any]], None]


def release_problem(reply: Message, record: str, check: ResultCheck) -> tuple[str | None, dict[str, Any] | None]:
    """(why the reply cannot be used, None) or (None, its result); ``check`` raises ValueError."""
    if reply.has_error():
        return reply.error.reason, None
    if set(reply.content.keys()) != {record}:
        return f"reply outside the {record} contract", None
    content = reply.content[record]
    try:
        if set(content.keys()) != {"site", "result"}:
            raise ValueError(f"unexpected fields {sorted(content.keys())}")
        result = json.loads(str(content["result"]))
        check(result)
        if result["site"] != str(content["site"]):
            raise ValueError("the result names another site")
    except (KeyError, TypeError, ValueError) as exc:
        return f"reply outside the {record} contract: {exc}", None
    return None, result


def gather_releases(
    grid: Grid,
    run: RunDirectory,
    config: ConfigRecord,
    *,
    record: str,
    release_round: int,
    check: ResultCheck,
    timeout: float,
    expected_sites: int,
    arrays: ArrayRecord | None = None,
) -> tuple[list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    """Ask every connected site for the release ``record``; return the accepted (node id, result)
    pairs and the failures (refusals, silences, sites that never connected). Every reply and
    silence is appended to ``budget.jsonl`` at ``release_round`` first."""
    content = {"config": config} if arrays is None else {"arrays": arrays, "config": config}
    replies, silent, connected = ask_sites(grid, RecordDict(content), expected_sites, timeout)
    now = datetime.now(UTC).isoformat()
    accepted: list[tuple[int, dict[str, Any]]] = []
    budget: list[dict[str, Any]] = []
    for node_id, reply in replies:
        base = {"round": release_round, "mechanism": record, "node_id": node_id, "time": now}
        problem, result = release_problem(reply, record, check)
        if problem is not None or result is None:
            log(WARNING, "The %s release of node %s is not used: %s", record, node_id, problem)
            budget.append({**base, "status": "error", "reason": problem})
            continue
        accepted.append((node_id, result))
        budget.append({**base, "status": "ok", **release_figures(result)})
    for node_id in silent:
        budget.append({"round": release_round, "mechanism": record, "node_id": node_id, "time": now,
                       "status": "error", "reason": f"no reply within the {record} timeout"})  # fmt: skip
    run.append_budget(budget)
    failures = [{"node_id": r["node_id"], "reason": r["reason"]} for r in budget if r["status"] != "ok"]
    if connected < expected_sites:
        failures.append({"node_id": None, "reason": f"{connected} of {expected_sites} expected sites connected"})
    return accepted, failures


def release_figures(result: dict[str, Any]) -> dict[str, Any]:
    """A release's scalars as a training reply names them, so the budget report composes it with
    the rounds: one step at sample rate 1 (and the record count where the release carries it)."""
    figures = {
        "site": result["site"], "epsilon": float(result["epsilon"]), "epsilon-step": float(result["epsilon_step"]),
        "target-epsilon": float(result["target_epsilon"]), "delta": float(result["delta"]),
        "noise-multiplier": float(result["noise_multiplier"]), "sample-rate": 1.0, "steps": 1,
    }  # fmt: skip
    if "num_examples" in result:
        figures["num-examples"] = int(result["num_examples"])
    return figures
