"""The report's privacy-audit section: distance to closest record, membership-inference attacks
with their low-FPR power and empirical epsilon, Anonymeter risks, and their figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsynth.release.html import Html, figure, interval, note, number, section, table, tag
from fedsynth.release.report_parts import short, site_query_notes
from fedsynth.release.rules import AUDIT, HOW_TO_MAKE, Document
from fedsynth.suppression import MIN_CELL_ROWS


def _tpr_cell(attack: dict[str, Any], key: str, fpr: float) -> str:
    value = attack.get(key)
    if value is not None:
        return number(value)
    return f"withheld ({attack.get('n_non_members')} non-members < {round(1 / fpr)} needed)"


NN_HEADERS = ["site", "train", "holdout", "synthetic", "DCR share", "95% CI", "exact matches", "DCR p5 synthetic",
              "DCR p5 holdout"]  # fmt: skip
DCR_NOTE = (
    "DCR share: the share of synthetic rows closer to a training row than to a holdout row (training rows "
    "subsampled to the holdout's size); 0.5 means no closer to the model's training patients than to unseen ones."
)
ATTACK_HEADERS = ["site", "attack", "members / non-members", "AUC", "95% CI", "TPR at 1% FPR", "TPR at 0.1% FPR",
                  "empirical ε (lower bound)", "accountant ε", "empirical > accountant"]  # fmt: skip
ATTACK_NOTE = (
    "A TPR at an FPR below one non-member is not a measurement: sites withhold it below 1/FPR non-members, and DP "
    "bounds it (TPR ≤ e^ε × FPR + δ). The empirical ε is a 95%-confidence lower bound on the privacy loss the attack "
    "proves; above the accountant's ε it would mean the DP accounting is wrong."
)


def audit_section(audit: Document, workdir: Path) -> Html:
    from fedsynth.privacy.plots import audit_figures, withheld_holdout_cells

    if audit.data is None:
        return section("Privacy audits", note(audit.problem, "warn"), id_="audits")
    sites = audit.data.get("sites") or []
    parts: list[object] = site_query_notes(audit)
    nn_rows = []
    for s in sites:
        nn = s["nearest_neighbour"]
        nn_rows.append([s["site"], s["n_train"], s["n_holdout"], s["n_synthetic"], number(nn["dcr_share"]),
                        interval(nn["dcr_share_ci"]), nn["exact_matches"], number(nn["dcr_synthetic_p5"]),
                        number(nn["dcr_holdout_p5"])])  # fmt: skip
    parts += [
        tag("h3", "Distance to closest record"),
        table(NN_HEADERS, nn_rows, numeric=(1, 2, 3, 4, 6, 7, 8)),
        note(DCR_NOTE),
    ]
    attack_rows = []
    for s in sites:
        for a in s["attacks"]:
            empirical = a.get("empirical_epsilon") or {}
            exceeds = empirical.get("exceeds_accountant")
            attack_rows.append([
                s["site"], a["attack"], f"{a['n_members']} / {a['n_non_members']}", number(a["auc"]),
                interval(a["auc_ci"]), _tpr_cell(a, "tpr_at_1pct_fpr", 0.01), _tpr_cell(a, "tpr_at_0_1pct_fpr", 0.001),
                number(empirical.get("epsilon_lower_bound")), number(s["accountant_epsilon"], 4),
                tag("span", "EXCEEDS: probable DP bug", class_="bad") if exceeds else "no",
            ])  # fmt: skip
    parts += [
        tag("h3", "Membership inference"),
        table(ATTACK_HEADERS, attack_rows, numeric=(3, 7, 8)),
        note(ATTACK_NOTE),
    ]
    risk_rows = [[s["site"], r["attack"], number(r["risk"]), interval(r["ci"]), r["n_attacks"]]
                 for s in sites for r in s["anonymeter"]]  # fmt: skip
    parts += [tag("h3", "Anonymeter"),
              table(["site", "attack", "risk", "95% CI", "attacks"], risk_rows, numeric=(2, 4))]  # fmt: skip
    captions = {
        "audit_dcr.png": "DCR histograms: synthetic-to-train vs holdout-to-train, on the public edges",
        "audit_roc.png": "Membership-attack ROC curves, log-log; TPR at 1% and 0.1% FPR marked where measured",
        "audit_anonymeter.png": "Anonymeter risks with 95% CIs",
    }
    try:
        cells = sum(withheld_holdout_cells(s["nearest_neighbour"]) for s in sites)
        if cells:
            captions["audit_dcr.png"] += f"; {cells} holdout cells withheld (hatched): fewer than {MIN_CELL_ROWS} rows"
        parts += [figure(path, captions[path.name]) for path in audit_figures(audit.data, workdir / "audit")]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        parts.append(note(f"audit figures not drawn ({short(exc)}): {HOW_TO_MAKE[AUDIT]} with this version", "warn"))
    return section("Privacy audits", *parts, id_="audits")
