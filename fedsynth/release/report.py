"""The run report (``report.html``): what a release board reads before it signs, in one file.

Sections: the sign-off verdict with every rule's value, threshold and reason; the privacy budget
per site and epsilon per round; the audits (DCR histograms, membership-attack ROC curves on
log-log axes, Anonymeter risks, empirical next to accountant epsilon); survival utility (the
evaluation's figures and its worst-site figures); and, in plain words, what was and was not
differentially private. Everything is read from the run directory; a missing or incomplete input
becomes a note naming the command that makes it, never a crash, because a board must be able
to see what evidence is absent. Older documents without the newest figures' data get a note per
skipped figure.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fedsynth import __version__
from fedsynth.release.html import Html, figure, interval, join, note, number, page, section, table, tag
from fedsynth.release.rules import AUDIT, BUDGET, EVALUATION, HOW_TO_MAKE, Document, load_document, synthetic_file
from fedsynth.release.signoff import SIGNOFF_FILE, ForcedRelease, Verdict

REPORT_FILE = "report.html"
SIGNOFF_HOW = "run `fedsynth signoff RUN_DIR --key BOARD.key.pem`"


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


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
        return None, None, f"{SIGNOFF_FILE} is unreadable ({_short(exc)}); {SIGNOFF_HOW} again"
    return verdict, forced, None


def load_budget(run_dir: Path) -> Document:
    """budget.json (what the sign-off tested and the bundle carries), else rebuilt from the ledger
    records (budget.jsonl) the way `fedsynth budget` would."""
    document = load_document(run_dir, BUDGET)
    if document.data is not None or not (run_dir / "budget.jsonl").exists():
        return document
    from fedsynth.privacy.budget import budget_report

    try:
        return Document(BUDGET, budget_report(run_dir), None)
    except (OSError, ValueError, KeyError) as exc:
        return Document(BUDGET, None, f"{document.problem}; budget.jsonl could not be read ({_short(exc)})")


# -- sections -----------------------------------------------------------------------------------------


OUTCOME_CLASS = {"PASS": "ok", "FAIL": "bad", "INCONCLUSIVE": "unsure"}


def _rule_rows(verdict: Verdict) -> list[list[object]]:
    return [
        [
            rule.name,
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


def budget_section(budget: Document, workdir: Path) -> Html:
    from fedsynth.privacy.plots import budget_figure

    if budget.data is None:
        return section("Privacy budget", note(budget.problem, "warn"), id_="budget")
    sites = budget.data.get("sites") or []
    rows = [
        [
            s.get("site"),
            s.get("records"),
            number(s.get("target_epsilon")),
            number(s.get("epsilon_spent"), 4),
            number(s.get("remaining_epsilon")),
            number(s.get("delta")),
            number(s["delta"] * s["records"]) if "delta" in s and "records" in s else "n/a",
            s.get("accountant", "n/a"),
            number(s.get("noise_multiplier"), 4),
            number(s.get("sample_rate")),
            s.get("steps"),
        ]
        for s in sites
    ]
    headers = ["site", "records", "target ε", "spent ε", "remaining ε", "δ", "δ × n", "accountant", "noise multiplier",
               "sample rate", "steps"]  # fmt: skip
    parts: list[object] = [table(headers, rows, numeric=(1, 2, 3, 4, 5, 6, 8, 9, 10))]
    for refusal in budget.data.get("refusals") or []:
        parts.append(note(f"round {refusal.get('round')}, {refusal.get('site')}: {refusal.get('status')}: "
                          f"{refusal.get('reason')}", "warn"))  # fmt: skip
    if budget.data.get("note"):
        parts.append(note(budget.data["note"]))
    try:
        parts.append(figure(budget_figure(budget.data, workdir / "budget.png"), "Cumulative epsilon per round"))
    except (KeyError, TypeError, ValueError) as exc:
        parts.append(note(f"epsilon-per-round figure not drawn: {_short(exc)}", "warn"))
    return section("Privacy budget", *parts, id_="budget")


def _site_query_notes(document: Document) -> list[Html]:
    """Incomplete queries: the sites that did not answer, so no reader takes the tables for all."""
    assert document.data is not None
    notes = [note(f"node {f.get('node_id')}: {f.get('reason')}", "warn") for f in document.data.get("failures") or []]
    if not document.data.get("complete"):
        notes.append(note(f"{document.name} is incomplete: not every site answered; "
                          f"{HOW_TO_MAKE[document.name]} again once every site is up", "warn"))  # fmt: skip
    return notes


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
    from fedsynth.privacy.plots import audit_figures

    if audit.data is None:
        return section("Privacy audits", note(audit.problem, "warn"), id_="audits")
    sites = audit.data.get("sites") or []
    parts: list[object] = _site_query_notes(audit)
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
        parts += [figure(path, captions[path.name]) for path in audit_figures(audit.data, workdir / "audit")]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        parts.append(note(f"audit figures not drawn ({_short(exc)}): {HOW_TO_MAKE[AUDIT]} with this version", "warn"))
    return section("Privacy audits", *parts, id_="audits")


# evaluation_figures' files, the document field each needs, and the caption.
EVALUATION_FIGURES = (
    ("km", None, "Kaplan-Meier curves, real vs synthetic"),
    ("hazard_ratios", "hazard_ratios.covariates", "Cox hazard ratios: real 95% CI and synthetic estimate"),
    ("marginals", "fidelity.histograms", "Marginal histograms on the public bins"),
    ("correlations", "fidelity.correlation_matrices", "Correlation heatmaps: real, synthetic, difference"),
    ("calibration", "models.*.calibration[].overall.curve", "Calibration curves on the real holdout"),
)
WORST_ROWS = (
    ("tstr_uno_c_shortfall", "TSTR C-index shortfall (TRTR − TSTR Uno C), worst site"),
    ("hr_in_ci_fraction", "hazard ratios inside the real 95% CI (fraction), worst site"),
    ("hr_in_ci_pooled_fraction", "the same, every site's covariates pooled"),
    ("tstr_ici", "TSTR calibration ICI, worst site"),
)


def _has_calibration_curves(site: dict[str, Any]) -> bool:
    return any(
        (entry.get("overall") or {}).get("curve")
        for model in site.get("models", {}).values()
        for entry in model.get("calibration", [])
    )


def _site_figures(site: dict[str, Any], directory: Path, schema: Any) -> list[object]:
    """One site's evaluation figures, each one its data lacks replaced by a note."""
    from fedsynth.evaluation.plots import evaluation_figures

    name = str(site.get("site", "?"))
    # evaluation_figures names its files after the site: a name that is not a safe file name
    # (it comes from a site's config) is drawn under a sanitised one.
    safe = re.sub(r"[^\w.-]", "_", name)
    try:
        drawn = evaluation_figures({"sites": [{**site, "site": safe}]}, directory, schema)
        written = {p.name.removesuffix(f"_{safe}.png"): p for p in drawn}
    except (KeyError, TypeError, ValueError, IndexError, OSError) as exc:
        return [note(f"{name}: figures not drawn ({_short(exc)}); {HOW_TO_MAKE[EVALUATION]} with this version", "warn")]
    if not _has_calibration_curves(site):
        written.pop("calibration", None)  # drawn with the diagonal alone: an empty panel, not a figure
    parts: list[object] = []
    for key, field, caption in EVALUATION_FIGURES:
        if key in written:
            parts.append(figure(written[key], f"{name}: {caption}"))
        else:
            parts.append(note(f"{name}: {caption.split(':')[0].lower()} skipped: evaluation.json has no {field} "
                              f"(an older fedsynth wrote it); {HOW_TO_MAKE[EVALUATION]} to draw it"))  # fmt: skip
    return parts


def _uno(site: dict[str, Any], model: str) -> str:
    return number(site.get("models", {}).get(model, {}).get("discrimination", {}).get("uno_c"))


def utility_section(evaluation: Document, run_dir: Path, workdir: Path) -> Html:
    if evaluation.data is None:
        return section("Survival utility", note(evaluation.problem, "warn"), id_="utility")
    sites = evaluation.data.get("sites") or []
    parts: list[object] = _site_query_notes(evaluation)
    worst = evaluation.data.get("worst") or {}
    if worst:
        parts.append(table(["over sites", "value"], [[label, number(worst.get(key))] for key, label in WORST_ROWS],
                           numeric=(1,)))  # fmt: skip
        if worst.get("sites_not_scored"):
            parts.append(note(f"no TSTR scores at {', '.join(worst['sites_not_scored'])} (a fit failed there)", "warn"))
    rows = []
    for s in sites:
        calibration = s.get("models", {}).get("tstr", {}).get("calibration") or [{}]
        ici = (calibration[0].get("overall") or {}).get("ici")
        rows.append([s["site"], number(s.get("fidelity", {}).get("mean_ks")),
                     number(s.get("hazard_ratios", {}).get("hr_in_ci_fraction")), _uno(s, "trtr"), _uno(s, "tstr"),
                     _uno(s, "augmented"), number(ici)])  # fmt: skip
    parts.append(table(["site", "mean KS", "HR in real CI", "Uno C TRTR", "Uno C TSTR", "Uno C augmented",
                        "ICI TSTR"], rows, numeric=(1, 2, 3, 4, 5, 6)))  # fmt: skip
    schema = None
    if (run_dir / "schema.toml").exists():
        from fedsynth.data.schema import Schema, SchemaError

        try:
            schema = Schema.from_toml(run_dir / "schema.toml")
        except SchemaError as exc:
            parts.append(note(f"schema.toml unreadable ({_short(exc)}): histograms on bin numbers", "warn"))
    for index, site in enumerate(sites):
        parts += [tag("h3", f"{site.get('site', '?')}"), *_site_figures(site, workdir / f"site{index}", schema)]
    return section("Survival utility", *parts, id_="utility")


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
            provenance = f"{data.name}: provenance unreadable ({_short(exc)}); its origin is unknown"
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


def _guarded(title: str, source: str, build: Callable[[], Html]) -> Html:
    """A section, or a note saying its document does not have the expected shape: a board
    still gets the rest of the report from a hand-edited or foreign document."""
    try:
        return build()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        return section(title, note(f"{source} does not have the expected structure ({_short(exc)}); "
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
    with tempfile.TemporaryDirectory(prefix="fedsynth-report-") as scratch:
        workdir = Path(scratch)
        sections = [
            verdict_section(verdict, forced, problem),
            missing_section(missing),
            _guarded("Privacy budget", BUDGET, lambda: budget_section(budget, workdir)),
            _guarded("Privacy audits", AUDIT, lambda: audit_section(audit, workdir)),
            _guarded("Survival utility", EVALUATION, lambda: utility_section(evaluation, run_dir, workdir)),
            dp_section(run_dir, budget, audit, evaluation),
        ]
    return page(f"fedsynth report {run_id}", [*header, *(s for s in sections if s is not None)])


def write_report(
    run_dir: Path, path: Path, verdict: Verdict | None = None, *, forced: ForcedRelease | None = None
) -> Path:
    """Write the self-contained report of ``run_dir`` to ``path``; returns it.

    ``verdict`` None reads RUN_DIR/signoff.json if present ("not signed off" otherwise); the
    bundle passes its verdict (and a forced release) because signoff.json is written after it.
    """
    from fedsynth.data.io import write_text

    written = write_text(Path(path), render_report(Path(run_dir), verdict, forced))
    written.chmod(0o644)  # written via a private temporary file (0600); the report is for its readers
    return written
