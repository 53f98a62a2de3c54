"""The privacy budget report of a federated run, for a privacy officer.

Built from the run's ``budget.jsonl``: the scalars each site returned each round (its
ledger's epsilon after the round, computed by Opacus' RDP accountant from the site's
durable history) and any refusal. Per site: target and spent (epsilon, delta), accountant,
noise multiplier, sample rate, steps, epsilon after each round, remaining budget.

The report never says less than the record shows. A site's spent epsilon is the largest it
ever reported in the run, and at least what the rounds it reported compose to (its DP-SGD
parameters in the record, by the same accountant): a site whose ledger was reset mid-run
reports a smaller epsilon afterwards, and that reset shows here as a fall in its figures,
which takes the site (and the run) out of budget, rather than as a smaller spend.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedsynth.client.rdp import rdp_epsilon
from fedsynth.data.io import write_text
from fedsynth.server.run import RunDirectory

ACCOUNTANT = "Opacus RDP (per record, Poisson sampling); ledger at each site"
# One-off Gaussian releases (one step at sample rate 1), told apart from DP-SGD rounds by mechanism.
RELEASES = frozenset({"marginals", "head-slope"})


# A reply that trained and reported its spend, but whose weights were not aggregated (a SecAgg+
# round whose sum could not be unmasked): its spend counts like an "ok" reply's.
SPENT_NOT_AGGREGATED = "spent"
SPEND_STATUSES = ("ok", SPENT_NOT_AGGREGATED)


def _spend_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") in SPEND_STATUSES and "site" in r and "epsilon" in r]


def site_epsilon_floors(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Per site, the largest epsilon it ever reported in these budget records."""
    floors: dict[str, float] = {}
    for record in _spend_records(records):
        floors[record["site"]] = max(floors.get(record["site"], 0.0), float(record["epsilon"]))
    return floors


def _site_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One site's figures from its records (in the order recorded), never below what they show."""
    # The marginal release (round 0) and the head's slope release (after the last round), one step
    # at sample rate 1 each, compose with the rounds; the DP-SGD figures (noise, rate, steps,
    # records) are the training replies'.
    training = [r for r in records if r.get("mechanism") not in RELEASES] or records
    marginals = [r for r in records if r.get("mechanism") == "marginals"]
    slope = [r for r in records if r.get("mechanism") == "head-slope"]
    first = training[0]
    # Falls are looked for over every record in order; "rounds" lists the training rounds.
    spends = [{"round": r["round"], "epsilon": r["epsilon"]} for r in records]
    rounds = [{"round": r["round"], "epsilon": r["epsilon"]} for r in training if r.get("mechanism") not in RELEASES]
    history = [(float(r["noise-multiplier"]), float(r["sample-rate"]), int(r["steps"])) for r in records]
    # The weakest delta and the smallest target any of its replies gave: a swapped ledger with
    # a looser budget cannot move the bar.
    delta = max(float(r["delta"]) for r in records)
    target = min(float(r["target-epsilon"]) for r in records)
    reported = max(float(r["epsilon"]) for r in records)
    composed = rdp_epsilon(history, delta)
    falls = [b["round"] for a, b in zip(spends, spends[1:], strict=False) if b["epsilon"] < a["epsilon"]]
    spent = max(reported, composed)
    problems = []
    if falls:
        problems.append(
            f"the site's epsilon fell at round(s) {', '.join(map(str, falls))}: its ledger was reset or replaced, "
            "so its true spend is above every figure it reported"
        )
    if spent > target:
        problems.append(f"epsilon {spent:.4f} exceeds the target {target:g}")
    return {
        "site": first["site"],
        "target_epsilon": target,
        "delta": delta,
        "accountant": ACCOUNTANT,
        "noise_multiplier": first["noise-multiplier"],
        "sample_rate": first["sample-rate"],
        "steps": sum(int(r["steps"]) for r in training if r.get("mechanism") not in RELEASES),
        "rounds": rounds,
        "records": first.get("num-examples"),
        "marginals": [
            {"noise_multiplier": r["noise-multiplier"], "epsilon_step": r.get("epsilon-step"), "epsilon": r["epsilon"]}
            for r in marginals
        ],
        "head_slope": [
            {"noise_multiplier": r["noise-multiplier"], "epsilon_step": r.get("epsilon-step"), "epsilon": r["epsilon"]}
            for r in slope
        ],
        "epsilon_spent": spent,
        "epsilon_max_reported": reported,
        "epsilon_composed_from_record": composed,
        "remaining_epsilon": max(0.0, target - spent),
        "within_budget": not problems,
        "problems": problems,
    }


def budget_report(run_dir: str | Path) -> dict[str, Any]:
    run = RunDirectory(run_dir)
    info = run.info()
    records = run.budget_records()
    by_site: dict[str, list[dict[str, Any]]] = {}
    for record in _spend_records(records):
        by_site.setdefault(record["site"], []).append(record)
    refusals = [
        {k: record[k] for k in ("round", "site", "node_id", "status", "reason") if k in record}
        for record in records
        if record.get("status") != "ok" and "reason" in record
    ]
    sites = [_site_summary(by_site[name]) for name in sorted(by_site)]
    return {
        "run_id": info["run_id"],
        "within_budget": all(site["within_budget"] for site in sites),
        "sites": sites,
        "refusals": refusals,
        "note": (
            "Epsilon is per record at each site (record-level DP), composed over every round the site trained "
            "and its marginal-table release (round 0) and survival-head slope release (after the last round), "
            "as reported by the site's own ledger, and never below the largest figure the site ever reported "
            "in this run or what its recorded rounds compose to. The global model and samples drawn from it "
            "are post-processing."
        ),
    }


def write_budget_report(run_dir: str | Path) -> tuple[dict[str, Any], Path, Path]:
    """Write RUN_DIR/budget.json and RUN_DIR/budget.png (epsilon per round per site)."""
    from fedsynth.privacy.plots import budget_figure

    run_dir = Path(run_dir)
    report = budget_report(run_dir)
    json_path = write_text(run_dir / "budget.json", json.dumps(report, indent=2) + "\n")
    return report, json_path, budget_figure(report, run_dir / "budget.png")
