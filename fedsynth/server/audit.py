"""The coordinator's half of the federated privacy audit: ask every site, combine the aggregates.

The server sends each site the global weights and a sampling seed (a QUERY message); each site
audits the model against its own rows (``fedsynth.client.audit``) and replies with aggregates.
The coordinator checks every reply against the aggregate-only contract, keeps a per-site table
and the worst value over sites for each figure a sign-off policy tests, and writes
``RUN_DIR/audit.json``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsynth.client.app import AUDIT_RECORD
from fedsynth.client.audit import check_audit_result
from fedsynth.data.io import write_text
from fedsynth.model.mcm import MCM

AUDIT_FILE = "audit.json"


def worst_over_sites(sites: list[dict[str, Any]]) -> dict[str, float]:
    """The figures a sign-off policy tests, each at its worst site."""
    attacks = [a for s in sites for a in s["attacks"]]
    risks = [r for s in sites for r in s["anonymeter"]]
    return {
        "dcr_share_upper_ci": max(s["nearest_neighbour"]["dcr_share_ci"][1] for s in sites),
        "exact_matches": sum(s["nearest_neighbour"]["exact_matches"] for s in sites),
        "mia_tpr_at_1pct_fpr": max(a["tpr_at_1pct_fpr"] for a in attacks),
        "mia_tpr_at_0_1pct_fpr": max(a["tpr_at_0_1pct_fpr"] for a in attacks),
        "mia_auc_upper_ci": max(a["auc_ci"][1] for a in attacks),
        "anonymeter_risk_upper_ci": max(r["ci"][1] for r in risks) if risks else 0.0,
        # Largest excess of an attack's empirical epsilon over its site's accountant epsilon:
        # > 0 means some site measured more leakage than its DP accounting allows (a DP bug).
        "empirical_minus_accountant_epsilon": max(
            a["empirical_epsilon"]["epsilon_lower_bound"] - s["accountant_epsilon"] for s in sites for a in s["attacks"]
        ),
    }


def _reply_problem(reply: Message) -> str | None:
    """Why a site's reply cannot be used (None if it can): an error, or outside the contract."""
    if reply.has_error():
        return reply.error.reason
    if set(reply.content.keys()) != {AUDIT_RECORD}:
        return "reply outside the audit contract"
    try:
        result = json.loads(str(reply.content[AUDIT_RECORD]["result"]))
        check_audit_result(result, max_rows=int(result["n_train"]) + int(result["n_holdout"]))
    except (KeyError, TypeError, ValueError) as exc:
        return f"reply outside the audit contract: {exc}"
    return None


def run_audit(grid: Grid, run_dir: Path, seed: int = 0, timeout: float = 3600.0) -> dict[str, Any]:
    """Audit the run's published global model at every connected site; write and return audit.json."""
    model = MCM.load(Path(run_dir) / "model")
    config = ConfigRecord({"model-config": json.dumps(model.config.model_dump(mode="json")), "seed": seed})
    messages = [
        Message(
            content=RecordDict({"arrays": ArrayRecord(model.network_.state_dict()), "config": config}),
            dst_node_id=node_id,
            message_type=MessageType.QUERY,
        )
        for node_id in grid.get_node_ids()
    ]
    sites, failures = [], []
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    # Map each reply to the node it was sent to (an error the SuperLink writes for a dead node
    # need not carry that node as its source).
    destinations = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
    for reply in replies:
        node_id = destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        problem = _reply_problem(reply)
        if problem is not None:
            failures.append({"node_id": node_id, "reason": problem})
            continue
        sites.append(json.loads(str(reply.content[AUDIT_RECORD]["result"])))
    answered = {reply.metadata.reply_to_message_id for reply in replies}
    failures += [
        {"node_id": node_id, "reason": "no reply within the audit timeout"}
        for message_id, node_id in destinations.items()
        if message_id not in answered
    ]
    sites.sort(key=lambda s: s["site"])
    document = {
        "time": datetime.now(UTC).isoformat(),
        "seed": seed,
        "model_sha256": sites[0]["model_sha256"] if sites else None,
        "sites": sites,
        "failures": failures,
        # A release decision needs every site's evidence: with a site missing, its worst case
        # is unknown, so no "worst" figure is given at all.
        "complete": bool(sites) and not failures,
        "worst": worst_over_sites(sites) if sites and not failures else None,
    }
    write_text(Path(run_dir) / AUDIT_FILE, json.dumps(document, indent=2))
    return document


def audit_simulated_run(run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Run the federated audit on Flower's simulation engine over a simulation run's virtual sites."""
    from flwr.serverapp import ServerApp

    from fedsynth.client.app import make_client_app
    from fedsynth.server.simulation import run_on_ray

    run_dir = Path(run_dir)
    site_dirs = sorted((run_dir / "sites").glob("site-*"))
    if not site_dirs:
        raise FileNotFoundError(f"{run_dir}/sites holds no site-* directories: audit a simulation run")
    if not (run_dir / "model").exists():
        raise FileNotFoundError(f"{run_dir}/model is missing: train first (fedsynth train)")
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Any) -> None:
        run_audit(grid, run_dir, seed)

    run_on_ray(server_app, make_client_app(run_dir / "sites"), len(site_dirs))
    path = run_dir / AUDIT_FILE
    if not path.exists():
        raise RuntimeError(f"the federated audit wrote no {path}; see the log above")
    return json.loads(path.read_text())
