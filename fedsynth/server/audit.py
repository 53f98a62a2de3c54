"""The coordinator's half of the federated privacy audit: ask every site, combine the aggregates.

The server sends each site the global weights and a sampling seed (a QUERY message); each site
audits the model against its own rows (``fedsynth.client.audit``) and replies with aggregates.
The coordinator checks every reply against the aggregate-only contract, keeps a per-site table
and, for each figure a sign-off policy tests, the worst value over sites and, where sites can
be pooled (the DCR share, Anonymeter's attacks), the pooled estimate; writes
``RUN_DIR/audit.json``.

Why pooled: sites hold different patients and draw their own synthetic rows
(``site_sampling_seed``), so their audits are independent samples of how the one global model
treats its training patients. At small sites one site's 95% CI is wide (about +-0.14 for the
DCR share at 33 holdout rows) and the worst of several upper limits mostly measures the sample
size; the pooled estimate's CI is narrower by about sqrt(number of sites). Each site's own
estimate is kept too: a policy fails a site whose estimate alone is over the threshold.
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
from fedsynth.model.mcm import MCM
from fedsynth.privacy.anonymeter_audit import pooled_risk, risk_key
from fedsynth.privacy.nearest_neighbour import pooled_dcr_share
from fedsynth.server.site_queries import on_simulated_sites, query_sites, site_query_document

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


def run_audit(
    grid: Grid, run_dir: Path, seed: int = 0, timeout: float = 3600.0, expected_sites: int = 1
) -> dict[str, Any]:
    """Audit the run's published global model at every connected site; write and return audit.json."""
    model = MCM.load(Path(run_dir) / "model")

    sites, failures = query_sites(
        grid,
        model,
        "audit",
        AUDIT_RECORD,
        check_site_audit_result,
        seed=seed,
        timeout=timeout,
        expected_sites=expected_sites,
    )
    document = site_query_document(sites, failures, seed, worst_over_sites)
    write_text(Path(run_dir) / AUDIT_FILE, json.dumps(document, indent=2))
    return document


def audit_simulated_run(run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Run the federated audit on Flower's simulation engine over a simulation run's virtual sites."""
    return on_simulated_sites(run_dir, AUDIT_FILE, lambda grid, n: run_audit(grid, run_dir, seed, expected_sites=n))
