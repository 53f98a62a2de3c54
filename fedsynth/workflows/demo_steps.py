"""The demo's phases: train, score, audit and evaluate on the chosen engine, then sign off and report.

Imported inside the demo's log redirection: the libraries these imports load (Flower, Ray,
Opacus, anonymeter) write to the run's log from their first line on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsynth.data.io import write_text
from fedsynth.data.schema import Schema
from fedsynth.server.audit import AUDIT_FILE, run_audit
from fedsynth.server.config import FederationConfig
from fedsynth.server.evaluation import EVALUATION_FILE, run_evaluation
from fedsynth.server.outcome import check_training_outcome
from fedsynth.workflows.demo_output import (
    DemoReporter,
    budget_line,
    outcome_of,
    site_table,
    verdict_line,
    verdict_table,
)

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from fedsynth.workflows.demo_options import DemoOptions

# A rare subgroup per bundled dataset (binary column, level), drawn aged 60-80 from the model alone.
COHORTS = {"whas500": ("chf", 1), "flchain": ("mgus", "yes")}


def _training(reporter: DemoReporter, run_dir: Path, rounds: int, sites: int) -> None:
    from fedsynth.server.budget import write_budget_report

    check_training_outcome(run_dir, 1, rounds, run_dir / "logs")
    report, _, _ = write_budget_report(run_dir)
    reporter.done("training", f"DP marginal tables, then {rounds} round(s) of DP-SGD, {sites} sites")
    reporter.line(f"  {budget_line(report)}")
    for problem in (p for site in report["sites"] for p in site["problems"]):
        reporter.line(f"  [bold red]NOT within budget: {problem}[/]")


def _quality(options: DemoOptions, run_dir: Path, reporter: DemoReporter) -> None:
    """The model-only sample scored against every virtual site's holdout (summary.json)."""
    from fedsynth.server.simulation_score import score_simulated_run

    with reporter.phase("quality", "sampling from the global model alone, scoring against each holdout"):
        score, _ = score_simulated_run(run_dir, seed=options.seed + 1)
        cohort, subgroup = None, COHORTS.get(options.dataset)
        if subgroup is not None:
            from fedsynth.model.generators import load_generator

            conditions = [f"{subgroup[0]}={subgroup[1]}", "60<=age<=80"]
            cohort = load_generator(run_dir / "model").sample(1000, conditions, seed=options.seed + 2)
    summary = {"dataset": options.dataset, "engine": options.engine, "sites": options.sites,
               "rounds": options.rounds, "target_epsilon": options.epsilon, **score.to_dict()}  # fmt: skip
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    reporter.done(
        "quality",
        f"C-index real {score.cindex_trtr:.3f} / synth {score.cindex_tstr:.3f}, "
        f"HR in CI {score.hr_in_ci_fraction:.0%}, KS {score.mean_ks:.3f}",
    )
    if cohort is not None and subgroup is not None:
        column, level = subgroup
        reporter.line(
            f"  cohort {column}={level}, age 60-80: {len(cohort)} rows, age {cohort['age'].min()}-"
            f"{cohort['age'].max()}, {column} all {level}: {bool((cohort[column] == level).all())}"
        )


def _audit_line(document: dict[str, Any]) -> str:
    worst = document.get("worst") or {}
    if not worst:
        return f"[red]incomplete: {len(document['failures'])} site(s) did not answer; see {AUDIT_FILE}[/]"
    share, upper = worst.get("dcr_share_pooled"), worst.get("dcr_share_pooled_upper_ci")
    dcr = f"pooled DCR share {share:.3f} (upper {upper:.3f})" if share is not None else "DCR share not pooled"
    return (
        f"{dcr}, {worst['exact_matches']} exact copies\n  MIA AUC upper {worst['mia_auc_upper_ci']:.3f}, "
        f"Anonymeter risk upper {worst.get('anonymeter_risk_pooled_upper_ci') or 0:.3f} (95% limits)"
    )


def _evaluation_line(document: dict[str, Any]) -> str:
    worst = document.get("worst") or {}
    if not worst:
        return f"[red]incomplete: {len(document['failures'])} site(s) did not answer; see {EVALUATION_FILE}[/]"
    pooled = worst.get("hr_in_ci_pooled_fraction")
    shortfall = worst.get("tstr_uno_c_shortfall")
    return (
        f"HR in real CI {'n/a' if pooled is None else f'{pooled:.0%}'} (pooled), "
        f"worst C shortfall {'n/a' if shortfall is None else f'{shortfall:.3f}'}"
    )


def _on_grid(
    grid: Grid, options: DemoOptions, federation: FederationConfig, schema: Schema, reporter: DemoReporter
) -> dict[str, dict[str, Any]]:
    """Training, then the audit and the evaluation, through one grid (one engine launch)."""
    from fedsynth.server.app import run_federation

    run_dir, sites = federation.run_dir, options.sites
    with reporter.phase("training", "DP marginal tables, then DP-SGD rounds at every site"):
        run_federation(grid, federation, schema)
    _training(reporter, run_dir, federation.rounds, sites)
    _quality(options, run_dir, reporter)
    documents = {}
    with reporter.phase("audit", "each site audits the release sample against its own rows (not DP)"):
        documents["audit"] = run_audit(grid, run_dir, options.seed, federation.round_timeout, expected_sites=sites)
    reporter.done("audit", _audit_line(documents["audit"]))
    with reporter.phase("evaluation", "each site evaluates the model's samples against its own rows"):
        documents["evaluation"] = run_evaluation(
            grid, run_dir, options.seed, None, federation.round_timeout, expected_sites=sites
        )
    reporter.done("evaluation", _evaluation_line(documents["evaluation"]))
    return documents


def train_audit_evaluate(
    options: DemoOptions, federation: FederationConfig, reporter: DemoReporter
) -> dict[str, dict[str, Any]]:
    """The federated phases; returns the audit and evaluation documents."""
    if federation.engine == "deployment":
        return _on_loopback(options, federation, reporter)
    from flwr.serverapp import ServerApp

    from fedsynth.client.app import make_client_app
    from fedsynth.server.simulation import prepare_sites, run_on_ray

    schema, sites_root = prepare_sites(federation, "fedsynth demo options")
    outcome: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Any) -> None:
        try:
            outcome["documents"] = _on_grid(grid, options, federation, schema, reporter)
        except BaseException as exc:  # the engine logs a ServerApp's error; the demo must raise it
            outcome["error"] = exc

    run_on_ray(server_app, make_client_app(sites_root), options.sites, federation.simulation.cpus_per_site)
    if "error" in outcome:
        raise outcome["error"]
    if "documents" not in outcome:
        raise RuntimeError(f"the simulation ended before the demo's phases did; see {federation.run_dir / 'logs'}")
    return outcome["documents"]


def _on_loopback(
    options: DemoOptions, federation: FederationConfig, reporter: DemoReporter
) -> dict[str, dict[str, Any]]:
    """The deployment engine on loopback: SuperLink, one SuperNode per site, TLS, node auth."""
    from fedsynth.deploy.loopback_runs import query_on_loopback, run_on_loopback

    run_dir = federation.run_dir
    with reporter.phase("training", "flower-superlink + one flower-supernode per site (TLS, node auth)"):
        run_on_loopback(federation)
    _training(reporter, run_dir, federation.rounds, options.sites)
    _quality(options, run_dir, reporter)
    documents = {}
    with reporter.phase("audit", "each site audits the release sample against its own rows (not DP)"):
        documents["audit"] = query_on_loopback(run_dir, "audit", seed=options.seed)
    reporter.done("audit", _audit_line(documents["audit"]))
    with reporter.phase("evaluation", "each site evaluates the model's samples against its own rows"):
        documents["evaluation"] = query_on_loopback(run_dir, "evaluate", seed=options.seed)
    reporter.done("evaluation", _evaluation_line(documents["evaluation"]))
    return documents


def _board_key(run_dir: Path, key: Path | None, reporter: DemoReporter) -> Path:
    """The board key: the given one, or a demo key made under RUN_DIR/keys (announced as such)."""
    if key is not None:
        return key
    from fedsynth.release.keys import keygen

    private = run_dir / "keys" / "board.key.pem"
    if private.exists():  # the closing steps run again on the same directory
        return private
    private, _ = keygen(run_dir / "keys", "board")
    reporter.line(f"  made a demo board key {private} (0600; a real board keeps its own)")
    return private


def release_and_report(
    options: DemoOptions, run_dir: Path, documents: dict[str, dict[str, Any]], reporter: DemoReporter
) -> tuple[str, Path | None, Path]:
    """The release file, the sign-off (a bundle on PASS), the figures and the report.

    The release is the very sample the sites audited (audit.json's n, seed and conditions), as
    `fedsynth signoff` requires. Returns (outcome, bundle or None, report)."""
    from fedsynth.evaluation.plots import evaluation_figures
    from fedsynth.privacy.plots import audit_figures
    from fedsynth.release.binding import write_audited_sample
    from fedsynth.release.bundle import sign_off
    from fedsynth.release.keys import load_private_key
    from fedsynth.release.policy import default_policy_path, load_policy
    from fedsynth.release.report import REPORT_FILE, write_report

    reporter.table(site_table(documents["audit"], documents["evaluation"]))
    with reporter.phase("sign-off", "writing the audited sample and testing the release policy"):
        release = write_audited_sample(run_dir)
        policy_path = options.policy or default_policy_path()
        key = load_private_key(_board_key(run_dir, options.key, reporter))
        verdict, bundle = sign_off(run_dir, load_policy(policy_path), policy_path.read_text(encoding="utf-8"), key)
    reporter.done("sign-off", f"{release}, the audited sample")
    reporter.table(verdict_table(verdict))
    reporter.line(verdict_line(verdict))
    if bundle is not None:
        public = run_dir / "keys" / "board.pub.pem" if options.key is None else "BOARD.pub.pem"
        reporter.line(f"signed release bundle: {bundle} (check: fedsynth verify {bundle} --key {public})")
    else:
        reporter.line("no release bundle: only a PASS verdict is bundled")
    with reporter.phase("report", "drawing the figures and writing the report"):
        plots = run_dir / "plots"
        figures = audit_figures(documents["audit"], plots)
        figures += evaluation_figures(documents["evaluation"], plots, Schema.from_toml(run_dir / "schema.toml"))
        report = write_report(run_dir, run_dir / REPORT_FILE)
    reporter.done("report", f"{report}, {len(figures)} figures in plots/")
    return outcome_of(verdict), bundle, report
