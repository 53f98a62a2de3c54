"""Ask every site a question about the global model and collect the aggregate answers.

The federated audit and the federated evaluation share one protocol: the coordinator sends each
connected site the global weights, the model config, a sampling seed and a task (a QUERY
message); the site samples from the model itself, measures against its own rows and replies
with one ConfigRecord holding its name and a JSON result. Here replies are mapped back to the
node they were sent to (an error the SuperLink writes for a dead node need not carry that node
as its source), every reply is checked against the task's aggregate-only contract, and nodes
that never answer are recorded as failures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsynth.model.generators import AnyGenerator, config_to_dict

ResultCheck = Callable[[dict[str, Any]], None]
CONNECT_WAIT = 60.0


def _reply_problem(reply: Message, record: str, check: ResultCheck) -> str | None:
    """Why a site's reply cannot be used (None if it can): an error, or outside the contract."""
    if reply.has_error():
        return reply.error.reason
    if set(reply.content.keys()) != {record}:
        return f"reply outside the {record} contract"
    try:
        check(json.loads(str(reply.content[record]["result"])))
    except (KeyError, TypeError, ValueError) as exc:
        return f"reply outside the {record} contract: {exc}"
    return None


def connected_nodes(grid: Grid, expected: int, wait: float = CONNECT_WAIT) -> list[int]:
    """The connected nodes, once ``expected`` of them are there or ``wait`` seconds have passed.

    Nodes register with the grid asynchronously: asked at once, a fresh simulation answered
    with no node at all, and the query went to nobody.
    """
    deadline = time.monotonic() + wait
    nodes = list(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    return nodes


def ask_sites(
    grid: Grid, content: RecordDict, expected_sites: int, timeout: float
) -> tuple[list[tuple[int, Message]], list[int], int]:
    """Send ``content`` as a QUERY to every connected site (waiting for ``expected_sites`` as
    :func:`connected_nodes` does); return the replies with the node each was sent to, the nodes
    that never answered, and how many were connected."""
    nodes = connected_nodes(grid, expected_sites)
    messages = [Message(content=content, dst_node_id=node_id, message_type=MessageType.QUERY) for node_id in nodes]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    destinations = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
    answered = {reply.metadata.reply_to_message_id for reply in replies}
    sent = [(destinations.get(r.metadata.reply_to_message_id, r.metadata.src_node_id), r) for r in replies]
    silent = [node_id for message_id, node_id in destinations.items() if message_id not in answered]
    return sent, silent, len(nodes)


def query_sites(
    grid: Grid,
    model: AnyGenerator,
    task: str,
    record: str,
    check: ResultCheck,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    timeout: float = 3600.0,
    expected_sites: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Send ``task`` about ``model`` to every connected site; return (results by site, failures).

    Waits (up to a minute) for ``expected_sites`` to connect; fewer is recorded as a failure.
    """
    config = ConfigRecord(
        {
            "model-config": json.dumps(config_to_dict(model.config)),
            "seed": seed,
            "task": task,
            # DP tables (post-processing of the sites' releases): sites sample as the release does.
            **({"calibration": model.calibration_.to_json()} if model.calibration_ is not None else {}),
            **{k: json.dumps(v) for k, v in (extra or {}).items()},
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.network_.state_dict()), "config": config})
    replies, silent, connected = ask_sites(grid, content, expected_sites, timeout)
    results, failures = [], []
    for node_id, reply in replies:
        problem = _reply_problem(reply, record, check)
        if problem is not None:
            failures.append({"node_id": node_id, "reason": problem})
            continue
        results.append(json.loads(str(reply.content[record]["result"])))
    failures += [{"node_id": node_id, "reason": f"no reply within the {task} timeout"} for node_id in silent]
    if connected < expected_sites:
        failures.append(
            {"node_id": None, "reason": f"{connected} of {expected_sites} expected sites connected within a minute"}
        )
    results.sort(key=lambda r: r["site"])
    return results, failures


def site_query_document(
    sites: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    seed: int,
    worst_over_sites: Callable[[list[dict[str, Any]]], dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """The JSON document of one site query: per-site results, failures, and the worst site.

    A release decision needs every site's evidence: with a site missing, its worst case is
    unknown, so no "worst" figure is given at all.
    """
    complete = bool(sites) and not failures
    return {
        "time": datetime.now(UTC).isoformat(),
        "seed": seed,
        **extra,
        "model_sha256": sites[0]["model_sha256"] if sites else None,
        "sites": sites,
        "failures": failures,
        "complete": complete,
        "worst": worst_over_sites(sites) if complete else None,
    }


# Where a coordinator without local site directories turns for the same questions.
ON_SEPARATE_MACHINES = (
    'A run on separate machines is audited or evaluated by its coordinator with `flwr run ... task="audit"` '
    "(deploy/README.md, section 5)"
)


def require_model(run_dir: Path) -> None:
    """Refuse to ask sites about a run that has no published model yet."""
    if not (Path(run_dir) / "model").exists():
        raise FileNotFoundError(f"{run_dir}/model is missing: train first (fedsynth train)")
