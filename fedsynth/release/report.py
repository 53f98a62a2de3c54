"""The run report (``report.html``): what a release board reads before it signs, in one file.

Sections: the sign-off verdict with every rule's value, threshold and reason; the privacy budget
per site and epsilon per round; the audits (DCR histograms, membership-attack ROC curves on
log-log axes, Anonymeter risks, empirical next to accountant epsilon); survival utility (the
evaluation's figures and its worst-site figures); subgroup fairness across the levels of each
sensitive column; and, in plain words, what was and was not
differentially private. Everything is read from the run directory; a missing or incomplete input
becomes a note naming the command that makes it, never a crash, because a board must be able
to see what evidence is absent. Older documents without the newest figures' data get a note per
skipped figure.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from fedsynth import __version__
from fedsynth.release.html import Html, join, note, number, page, section, table, tag
from fedsynth.release.report_audit import audit_section
from fedsynth.release.report_budget import budget_section
from fedsynth.release.report_fairness import fairness_section
from fedsynth.release.report_fidelity import fidelity_section
from fedsynth.release.report_parts import load_schema, short
from fedsynth.release.report_utility import utility_section
from fedsynth.release.rules import AUDIT, BUDGET, EVALUATION, HOW_TO_MAKE, Document, load_document, synthetic_file
from fedsynth.release.signoff import SIGNOFF_FILE, ForcedRelease, Verdict

REPORT_FILE = "report.html"
SIGNOFF_HOW = "run `fedsynth signoff RUN_DIR --key BOARD.key.pem`"


# -- inputs -------------------------------------------------------------------------------------------


def load_signoff(run_dir: Path) -> tuple[Verdict | None, ForcedRelease | None, str | None]:
    """The recorded verdict and forced release from RUN_DIR/signoff.json, or why there is none."""
    path = run_dir / SIGNOFF_FILE
    if not path.exists():
        return None, None, f"{SIGNOFF_FILE} is missing: {SIGNOFF_HOW}"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        verdict = Verdict.model_validate(record["verdict"])
        forced = ForcedRelease.model_validate(record["forced"]) if record.get("forced") else None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValidationError) as exc:
        return None, None, f"{SIGNOFF_FILE} is unreadable ({short(exc)}); {SIGNOFF_HOW} again"
    return verdict, forced, None


def load_budget(run_dir: Path) -> Document:
    """budget.json (what the sign-off tested and the bundle carries), else rebuilt from the ledger
    records (budget.jsonl) the way `fedsynth budget` would."""
    document = load_document(run_dir, BUDGET)
    if document.data is not None or not (run_dir / "budget.jsonl").exists():
        return document
    from fedsynth.server.budget import budget_report

    try:
        return Document(BUDGET, budget_report(run_dir), None)
    except (OSError, ValueError, KeyError) as exc:
        return Document(BUDGET, None, f"{document.problem}; budget.jsonl could not be read ({short(exc)})")


# -- sections -----------------------------------------------------------------------------------------


OUTCOME_CLASS = {"PASS": "ok", "FAIL": "bad", "INCONCLUSIVE": "unsure"}
# What each rule checks, in words a privacy officer reads without the source.
RULE_GLOSSES = {
    "evidence": "The audits and evaluations are of this very model and these very released rows, from every site.",
    "max_epsilon": "The privacy loss each site spent on its patients (ε) is within the policy's ceiling.",
    "delta_below_1_over_n": "The chance the privacy guarantee fails (δ) is below one patient's worth (1/n) at "
    "every site.",
    "site_approvals": "Each site's data custodian signed their approval of this release.",
    "dcr_share_upper_ci": "Synthetic rows are no closer to the training patients than to patients the model never saw "
    "(no sign of copying).",
    "exact_matches": "Synthetic rows equal a training patient no more often than unseen patients do by chance.",
    "mia_tpr_at_1pct_fpr": "An attacker guessing who was in the training data, allowed 1 false accusation in 100, "
    "finds few real members.",
    "mia_auc_upper_ci": "Membership attacks do no better than chance overall, allowing for their uncertainty.",
    "empirical_epsilon": "The privacy loss the attacks demonstrate does not exceed what the accounting claims.",
    "anonymeter_risk_upper_ci": "Singling out, linking and inferring a patient's attributes from the synthetic rows "
    "succeeds no more than the policy allows.",
    "fidelity_mean_ks": "Numeric columns' distributions look like the real ones, on average.",
    "fidelity_mean_tvd": "Yes/no and category columns have the real shares, on average.",
    "fidelity_column_ks": "No single numeric column's distribution is far from the real one.",
    "fidelity_column_tvd": "No single yes/no or category column's shares are far from the real ones.",
    "fidelity_missing_share": "Values are missing about as often as in the real data.",
    "hr_in_ci_fraction": "Each covariate's effect on survival (hazard ratio) in the synthetic data is mostly "
    "within the real data's confidence interval.",
    "tstr_c_index_gap": "A survival model trained on synthetic rows ranks real patients' risk almost as well as "
    "one trained on real rows.",
    "tstr_calibration_ici": "Risks predicted by a model trained on synthetic rows match what happens to real patients.",
}


def _rule_rows(verdict: Verdict) -> list[list[object]]:
    return [
        [
            join([tag("code", rule.name), tag("div", RULE_GLOSSES.get(rule.name, ""), class_="gloss")]),
            number(rule.value, 4),
            rule.threshold,
            tag("span", rule.outcome, class_=OUTCOME_CLASS[rule.outcome]),
            rule.reason + (f" Would decide with: {rule.power}." if rule.power else ""),
        ]
        for rule in verdict.rules
    ]


def verdict_section(verdict: Verdict | None, forced: ForcedRelease | None, problem: str | None) -> Html:
    """The banner a board reads first, then each rule's value, threshold and reason."""
    if verdict is None:
        banner = tag("div", "Not signed off", class_="banner none")
        return section("Verdict", banner, note(problem or SIGNOFF_HOW), id_="verdict")
    failed = ", ".join(rule.name for rule in verdict.failed_rules)
    if verdict.passed:
        banner = tag("div", f"PASS: every rule of policy '{verdict.policy}' holds", class_="banner pass")
    elif forced is not None:
        text = (
            f"FORCED release: the verdict was {verdict.outcome} ({failed}); the board released anyway. "
            f"Reason: {forced.reason}"
        )
        banner = tag("div", text, class_="banner forced")
    elif verdict.outcome == "INCONCLUSIVE":
        text = f"INCONCLUSIVE under policy '{verdict.policy}': too little evidence to tell for {failed}"
        banner = tag("div", text, class_="banner inconclusive")
    else:
        banner = tag("div", f"FAIL under policy '{verdict.policy}': {failed}", class_="banner fail")
    meta = tag("p", f"run {verdict.run_id}, signed off {verdict.time}", class_="meta")
    rules = table(["rule", "value", "threshold", "result", "reason"], _rule_rows(verdict), numeric=(1,))
    return section("Verdict", banner, meta, rules, id_="verdict")


def _max_audits(run_dir: Path) -> str:
    """The sites' cap on audits and evaluations, as far as the coordinator knows it."""
    from fedsynth.client.config import PrivacyConfig

    run = load_document(run_dir, "run.json").data or {}
    privacy = (((run.get("config") or {}).get("site") or {}).get("privacy")) or {}
    configured = privacy.get("max_audits")
    if configured is not None:
        return f"{configured} (this run's site configuration)"
    return f"{PrivacyConfig().max_audits} unless a site's own configuration sets another"


def dp_section(run_dir: Path, budget: Document, audit: Document, evaluation: Document) -> Html:
    """What was and was not differentially private, in plain words, with this run's numbers."""
    sites = (budget.data or {}).get("sites") or []
    budgets = "; ".join(f"{s.get('site')}: ε = {number(s.get('epsilon_spent'), 4)}, δ = {number(s.get('delta'))}"
                        for s in sites) or "no site's budget is recorded (budget.json is missing)"  # fmt: skip
    queries: dict[str, list[str]] = {}
    for document, key, kind in ((audit, "audit_number", "audit"), (evaluation, "query_number", "evaluation")):
        for s in (document.data or {}).get("sites") or []:
            queries.setdefault(s.get("site", "?"), []).append(f"{kind} = query {s.get(key)}")
    answered = "; ".join(f"{site}: {', '.join(kinds)}" for site, kinds in sorted(queries.items()))
    data = synthetic_file(run_dir)
    provenance = "no synthetic data in the run directory"
    if data is not None:
        try:
            record = json.loads(data.with_name(data.name + ".provenance.json").read_text(encoding="utf-8"))
            dp = "differentially private" if record.get("differentially_private") else "NOT differentially private"
            provenance = f"{data.name}, {dp} (provenance: {record.get('mode')})"
        except (OSError, json.JSONDecodeError) as exc:
            provenance = f"{data.name}: provenance unreadable ({short(exc)}); its origin is unknown"
    items = [
        "Differentially private: the global model's weights and every synthetic row sampled from it. Each site "
        "trained with DP-SGD (per-record clipping and Gaussian noise, Opacus), accounted over all its rounds: "
        f"{budgets}. Sites hold different patients, so the model is (largest site ε, largest site δ)-DP for any one "
        "patient, and sampling from the model alone is post-processing, which DP survives.",
        f"Released rows: {provenance}.",
        "Not differentially private: every audit and evaluation number in this report. Each is an exact function "
        "of a site's real training and holdout rows (distances, attack scores, Kaplan-Meier curves, Cox fits), "
        "computed at the site; only aggregates left it. Each site caps how many such queries it ever answers "
        f"(privacy.max_audits = {_max_audits(run_dir)}){'; answered so far: ' + answered if answered else ''}. "
        "This is why the public release bundle carries only their pass/fail unless the policy asks for more.",
        "Not differentially private: the MCM paper's copy-and-mask synthesis (copy a real record, mask half of it, "
        "reconstruct) keeps real values. It exists only for augmentation inside a site and is never used for "
        "released rows.",
    ]
    return section("What was and was not differentially private", tag("ul", join(tag("li", i) for i in items)),
                   id_="dp")  # fmt: skip


def missing_section(problems: list[str]) -> Html | None:
    if not problems:
        return None
    items = join(tag("li", problem) for problem in problems)
    return section("Missing inputs", note("This report is incomplete; each item says how to make it."),
                   tag("ul", items), id_="missing")  # fmt: skip


# -- the report -----------------------------------------------------------------------------------------


def _guarded(title: str, source: str, build: Callable[[], Html | None]) -> Html | None:
    """A section, or a note saying its document does not have the expected shape: a board
    still gets the rest of the report from a hand-edited or foreign document."""
    try:
        return build()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        return section(title, note(f"{source} does not have the expected structure ({short(exc)}); "
                                   f"{HOW_TO_MAKE[source]} again with this fedsynth", "warn"))  # fmt: skip


def render_report(run_dir: Path, verdict: Verdict | None = None, forced: ForcedRelease | None = None) -> str:
    """The report's HTML for ``run_dir``; ``verdict`` None: the one recorded in signoff.json, if any."""
    run_dir = Path(run_dir)
    problem = None
    if verdict is None:
        verdict, forced, problem = load_signoff(run_dir)
    run = load_document(run_dir, "run.json")
    budget, audit, evaluation = load_budget(run_dir), load_document(run_dir, AUDIT), load_document(run_dir, EVALUATION)
    missing = [d.problem for d in (run, budget, audit, evaluation) if d.problem]
    if problem is not None:
        missing.append(problem)
    run_id = (run.data or {}).get("run_id") or (verdict.run_id if verdict else None) or run_dir.name
    created = datetime.now(UTC).isoformat(timespec="seconds")
    header = [
        tag("h1", f"fedsynth run report: {run_id}"),
        tag("p", f"run directory {run_dir.name}; report written {created} by fedsynth {__version__}", class_="meta"),
    ]
    schema = load_schema(run_dir)[0]  # its problem, if any, is noted in the fidelity section
    with tempfile.TemporaryDirectory(prefix="fedsynth-report-") as scratch:
        workdir = Path(scratch)
        sections = [
            verdict_section(verdict, forced, problem),
            missing_section(missing),
            _guarded("Privacy budget", BUDGET, lambda: budget_section(budget, run_dir, workdir)),
            _guarded("Privacy audits", AUDIT, lambda: audit_section(audit, workdir)),
            _guarded("Fidelity", EVALUATION, lambda: fidelity_section(evaluation, verdict, run_dir, workdir)),
            _guarded("Survival utility", EVALUATION, lambda: utility_section(evaluation, schema, workdir)),
            _guarded("Subgroup fairness", EVALUATION, lambda: fairness_section(evaluation, run.data)),
            dp_section(run_dir, budget, audit, evaluation),
        ]
    return page(f"fedsynth report {run_id}", [*header, *(s for s in sections if s is not None)])


def write_report(
    run_dir: Path, path: Path, verdict: Verdict | None = None, *, forced: ForcedRelease | None = None
) -> Path:
    """Write the self-contained report of ``run_dir`` to ``path``; returns it, mode 0600 when it
    carries non-DP site results (audits, evaluations), else 0644.

    ``verdict`` None reads RUN_DIR/signoff.json if present ("not signed off" otherwise); the
    bundle passes its verdict (and a forced release) because signoff.json is written after it.
    """
    from fedsynth.data.io import write_text

    written = write_text(Path(path), render_report(Path(run_dir), verdict, forced))
    written.chmod(0o600 if carries_site_results(Path(run_dir)) else 0o644)
    return written


def carries_site_results(run_dir: Path) -> bool:
    """Whether the report shows audit or evaluation results: exact functions of real rows, not DP,
    so the file is its owner's alone until someone decides to share it."""
    return any(load_document(run_dir, name).data is not None for name in (AUDIT, EVALUATION))
