"""The coordinator's half of the federated privacy audit: ask every site, combine the aggregates.

The server sends each site the global weights and a sampling seed (a QUERY message); each site
audits the model against its own rows (``fedsynth.client.audit``) and replies with aggregates.
The coordinator checks every reply against the aggregate-only contract, keeps a per-site table
and, for each figure a sign-off policy tests, the worst value over sites and, where sites can
be pooled (the DCR share, Anonymeter's attacks), the pooled estimate; writes
``RUN_DIR/audit.json``.

What is audited is the release itself: every site audits the same rows,
``model.sample(n, conditions, seed)`` for the audit's seed, ``n`` (default: the pooled training
size the budget record shows) and conditions, recorded in ``audit.json``'s ``sample``; each
site names the rows it audited by their digest. ``fedsynth signoff`` releases only a file that
regenerates to exactly those rows (``fedsynth sample RUN_DIR/model -n N --seed SEED``), so the
exact-match and nearest-neighbour evidence covers the file released, not a fresh draw.

Why pooled: sites hold different patients, so given the released rows their audits are
independent measurements of how close those rows come to each site's training patients. At
small sites one site's 95% CI is wide (about +-0.14 for the DCR share at 33 holdout rows) and
the worst of several upper limits mostly measures the sample size; the pooled estimate's CI is
narrower by about sqrt(number of sites). Each site's own estimate is kept too: a policy fails a
site whose estimate alone is over the threshold.
If a site's reply lacks what pooling needs (an older fedsynth), the pooled figures are None
and the rules that read them fail with that reason, instead of the audit failing unwritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from fedsynth.client.app import AUDIT_RECORD
from fedsynth.client.audit import check_site_audit_result
from fedsynth.data.io import write_text
from fedsynth.model.generators import load_generator
from fedsynth.privacy.anonymeter_audit import pooled_risk, risk_key
from fedsynth.privacy.nearest_neighbour import pooled_dcr_share
from fedsynth.server.run import RunDirectory
from fedsynth.server.site_queries import query_sites, site_query_document

AUDIT_FILE = "audit.json"


def _max_measured(values: Any) -> float | None:
    measured = [v for v in values if v is not None]
    return max(measured) if measured else None


def _pooled_anonymeter(sites: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each Anonymeter attack pooled over the sites that ran it: risk and 95% CI."""
    by_attack: dict[str, list[dict[str, Any]]] = {}
    for site in sites:
        for risk in site["anonymeter"]:
            by_attack.setdefault(risk_key(risk), []).append(risk)
    pooled = {}
    for key, risks in sorted(by_attack.items()):
        value, ci = pooled_risk(risks)
        pooled[key] = {"risk": value, "ci": list(ci), "n_sites": len(risks)}
    return pooled


def _exact_match_baseline(audits: list[dict[str, Any]]) -> dict[str, int | None]:
    """Pooled counts for the exact-match rule: synthetic rows audited, and holdout rows equal to a
    training row out of all holdout rows (None where a site's reply predates the count)."""
    if any("exact_matches_holdout" not in a for a in audits):
        return {"exact_matches_holdout": None, "exact_matches_n_holdout": None, "exact_matches_n_synthetic": None}
    return {
        "exact_matches_holdout": sum(a["exact_matches_holdout"] for a in audits),
        "exact_matches_n_holdout": sum(a["n_holdout"] for a in audits),
        "exact_matches_n_synthetic": sum(a["n_synthetic"] for a in audits),
    }


def worst_over_sites(sites: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures a sign-off policy tests: each at its worst site, and pooled where it pools."""
    attacks = [a for s in sites for a in s["attacks"]]
    risks = [r for s in sites for r in s["anonymeter"]]
    try:
        share, share_ci = pooled_dcr_share([s["nearest_neighbour"] for s in sites])
        anonymeter: dict[str, dict[str, Any]] | None = _pooled_anonymeter(sites)
        pooled_problem = None
    except ValueError as exc:  # a reply from an older fedsynth: no SE or attack counts
        share, share_ci, anonymeter, pooled_problem = None, (None, None), None, str(exc)
    return {
        "dcr_share_upper_ci": max(s["nearest_neighbour"]["dcr_share_ci"][1] for s in sites),
        "dcr_share_pooled": share,
        "dcr_share_pooled_upper_ci": share_ci[1],
        # Each site's own estimate: a policy fails a site whose share alone is over the bound.
        "dcr_share_site_max": max(s["nearest_neighbour"]["dcr_share"] for s in sites),
        "pooling_problem": pooled_problem,
        "exact_matches": sum(s["nearest_neighbour"]["exact_matches"] for s in sites),
        **_exact_match_baseline([s["nearest_neighbour"] for s in sites]),
        # None where no site had enough non-members to measure it (see AttackResult).
        "mia_tpr_at_1pct_fpr": _max_measured(a["tpr_at_1pct_fpr"] for a in attacks),
        "mia_tpr_at_0_1pct_fpr": _max_measured(a["tpr_at_0_1pct_fpr"] for a in attacks),
        "mia_auc_upper_ci": max(a["auc_ci"][1] for a in attacks),
        "anonymeter_risk_upper_ci": max(r["ci"][1] for r in risks) if risks else 0.0,
        "anonymeter_pooled": anonymeter,
        "anonymeter_risk_pooled_upper_ci": (
            None if anonymeter is None else max((a["ci"][1] for a in anonymeter.values()), default=0.0)
        ),
        "anonymeter_risk_site_max": max((r["risk"] for r in risks), default=0.0),
        # Largest excess of an attack's empirical epsilon over its site's accountant epsilon:
        # > 0 means some site measured more leakage than its DP accounting allows (a DP bug).
        "empirical_minus_accountant_epsilon": max(
            a["empirical_epsilon"]["epsilon_lower_bound"] - s["accountant_epsilon"] for s in sites for a in s["attacks"]
        ),
    }


def pooled_training_size(run_dir: Path) -> int:
    """The records every site that trained reported (its latest ok reply): the default release size."""
    records: dict[str, int] = {}
    for record in RunDirectory(run_dir).budget_records():
        if record.get("status") == "ok" and "num-examples" in record:  # a marginal release has no count
            records[str(record["site"])] = int(record["num-examples"])
    if not records:
        raise ValueError(f"{run_dir}/budget.jsonl records no site that trained: train the run before auditing it")
    return sum(records.values())


def _sample_problem(site: dict[str, Any], sample: dict[str, Any]) -> str | None:
    """Why a site's audit is not of the asked sample (None if it is)."""
    audited = site.get("sample") or {}
    asked = {"seed": sample["seed"], "n": sample["n"], "conditions": json.dumps(sample["conditions"])}
    if {k: audited.get(k) for k in asked} != asked or not audited.get("sha256"):
        return f"audited another sample ({audited or 'none named'}) than the one asked ({asked})"
    return None


def run_audit(
    grid: Grid,
    run_dir: Path,
    seed: int = 0,
    timeout: float = 3600.0,
    expected_sites: int = 1,
    n: int | None = None,
    conditions: list[str] | None = None,
) -> dict[str, Any]:
    """Audit the run's published global model at every connected site; write and return audit.json.

    Every site audits ``model.sample(n, conditions, seed)``: the rows a release sampled with
    ``fedsynth sample RUN_DIR/model -n N --seed SEED`` holds (``n`` default: the pooled size).
    """
    model = load_generator(Path(run_dir) / "model")
    sample = {"seed": seed, "n": pooled_training_size(run_dir) if n is None else n, "conditions": conditions or []}
    model.resolve(sample["conditions"])  # a bad condition is the coordinator's error, before any site works

    sites, failures = query_sites(
        grid,
        model,
        "audit",
        AUDIT_RECORD,
        check_site_audit_result,
        seed=seed,
        extra={"sample": {"n": sample["n"], "conditions": sample["conditions"]}},
        timeout=timeout,
        expected_sites=expected_sites,
    )
    # A site that audited other rows (an older fedsynth) gave no evidence about this release.
    kept = [site for site in sites if _sample_problem(site, sample) is None]
    failures += [
        {"node_id": None, "reason": f"{s['site']}: {_sample_problem(s, sample)}"} for s in sites if s not in kept
    ]
    document = site_query_document(kept, failures, seed, worst_over_sites, sample=sample)
    write_text(Path(run_dir) / AUDIT_FILE, json.dumps(document, indent=2))
    return document
