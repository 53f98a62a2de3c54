"""The privacy budget report of a federated run, for a privacy officer.

Built from the run's ``budget.jsonl``: the scalars each site returned each round (its
ledger's epsilon after the round, computed by Opacus' RDP accountant from the site's
durable history) and any refusal. Per site: target and spent (epsilon, delta), accountant,
noise multiplier, sample rate, steps, epsilon after each round, remaining budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsynth.data.io import write_text
from fedsynth.server.run import RunDirectory

ACCOUNTANT = "Opacus RDP (per record, Poisson sampling); ledger at each site"


def budget_report(run_dir: str | Path) -> dict[str, Any]:
    run = RunDirectory(run_dir)
    info = run.info()
    sites: dict[str, dict[str, Any]] = {}
    refusals: list[dict[str, Any]] = []
    for record in run.budget_records():
        if record["status"] != "ok":
            refusals.append({k: record[k] for k in ("round", "site", "node_id", "status", "reason") if k in record})
            continue
        site = sites.setdefault(
            record["site"],
            {
                "site": record["site"],
                "target_epsilon": record["target-epsilon"],
                "delta": record["delta"],
                "accountant": ACCOUNTANT,
                "noise_multiplier": record["noise-multiplier"],
                "sample_rate": record["sample-rate"],
                "steps": 0,
                "rounds": [],
                "records": record["num-examples"],
            },
        )
        site["steps"] += int(record["steps"])
        site["rounds"].append({"round": record["round"], "epsilon": record["epsilon"]})
    for site in sites.values():
        site["epsilon_spent"] = max(r["epsilon"] for r in site["rounds"])
        site["remaining_epsilon"] = max(0.0, site["target_epsilon"] - site["epsilon_spent"])
        site["within_budget"] = site["epsilon_spent"] <= site["target_epsilon"]
    return {
        "run_id": info["run_id"],
        "sites": sorted(sites.values(), key=lambda s: s["site"]),
        "refusals": refusals,
        "note": (
            "Epsilon is per record at each site (record-level DP), composed over every round the site trained, "
            "as reported by the site's own ledger. The global model and samples drawn from it are post-processing."
        ),
    }


def write_budget_report(run_dir: str | Path) -> tuple[dict[str, Any], Path, Path]:
    """Write RUN_DIR/budget.json and RUN_DIR/budget.png (epsilon per round per site)."""
    from fedsynth.privacy.plots import budget_figure

    run_dir = Path(run_dir)
    report = budget_report(run_dir)
    json_path = write_text(run_dir / "budget.json", json.dumps(report, indent=2) + "\n")
    return report, json_path, budget_figure(report, run_dir / "budget.png")
