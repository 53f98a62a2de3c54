"""`fedsynth train`, `audit`, `evaluate` and `budget`: a federated run and the sites' answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fedsynth.cli.base import (
    app,
    console,
    err_console,
    user_errors,
)


@app.command()
@user_errors
def train(
    config: Annotated[
        Path, typer.Option("--config", help="Federation TOML: \\[federation], \\[simulation], \\[site], \\[model].")
    ],
    rounds: Annotated[int | None, typer.Option(help="Override federation.rounds.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Override federation.run_dir.")] = None,
    sites: Annotated[int | None, typer.Option(help="Override simulation.sites.")] = None,
    engine: Annotated[
        str | None, typer.Option(help="Override federation.engine: simulation or deployment (loopback).")
    ] = None,
) -> None:
    """Federated DP training of the generator in [model] (MCM by default); resumes RUN_DIR from its last checkpoint."""
    from fedsynth.client.config import SiteConfig
    from fedsynth.data.minimum import training_records
    from fedsynth.server.config import FederationConfig
    from fedsynth.server.outcome import check_training_outcome, rounds_done
    from fedsynth.server.simulated_sites import check_simulated_sites, partition_summary

    overrides = {
        key: value
        for key, value in {
            "federation.rounds": rounds,
            "federation.run_dir": str(run_dir.resolve()) if run_dir else None,
            "simulation.sites": sites,
            "federation.engine": engine,
        }.items()
        if value is not None
    }
    federation = FederationConfig.from_toml(config, overrides)
    # Everything checkable is refused before a file is written or a process starts.
    checked = check_simulated_sites(federation, source=str(config))
    fraction = SiteConfig.from_dict(checked.documents[0]).training.holdout_fraction
    warn_low_power(
        {f"site-{i}": len(table) - training_records(len(table), fraction) for i, table in enumerate(checked.tables)},
        "the sites' privacy audits and evaluations will lack power, and the sign-off will say INCONCLUSIVE",
    )
    console.print(f"sites ({federation.simulation.partition}): " + "; ".join(
        partition_summary(checked.tables, federation.simulation.partition)), highlight=False)  # fmt: skip
    first_round = rounds_done(federation.run_dir) + 1
    if federation.engine == "deployment":
        from fedsynth.deploy.loopback_runs import run_on_loopback

        logs = federation.run_dir / "deployment" / "logs"
        with console.status("deployment engine on loopback: flower-superlink + one flower-supernode per site"):
            status = run_on_loopback(federation)
        console.print(f"Flower run {status['run-id']}: {status['status']} in {float(status['elapsed']):.0f} s")
    else:
        from fedsynth.server.simulation import TRAIN_LOG, simulate

        logs = federation.run_dir / TRAIN_LOG
        # No spinner: Ray's output goes to the log file, and so would the spinner's frames.
        console.print(f"Flower simulation engine (Ray), {federation.simulation.sites} sites; its log: {logs}")
        simulate(federation, source=str(config))
    check_training_outcome(federation.run_dir, first_round, federation.rounds, logs)
    _report_budget(federation.run_dir)
    console.print(f"Flower's and Ray's log: {logs}")


def print_site_query_summary(document: dict[str, Any]) -> None:
    """The worst-site figures, each failed site, and whether every site answered."""
    if document["worst"]:
        numbers = {k: v for k, v in document["worst"].items() if isinstance(v, int | float)}
        worst = {k: v for k, v in numbers.items() if "pooled" not in k and "compared" not in k}
        pooled = {k: v for k, v in numbers.items() if k not in worst}
        console.print("worst site: " + ", ".join(f"{k} {v:.3g}" for k, v in worst.items()))
        if pooled:
            console.print("pooled over sites: " + ", ".join(f"{k} {v:.3g}" for k, v in pooled.items()))
        unscored = document["worst"].get("sites_not_scored")  # evaluation: sites whose TSTR fit failed
        if unscored:
            console.print(f"[red]no TSTR scores at {', '.join(unscored)} (a fit failed there; see evaluation.json)[/]")
    for failure in document["failures"]:
        console.print(f"[yellow]node {failure['node_id']}: {failure['reason']}[/]")
    if not document["complete"]:
        console.print("[red]incomplete: not every site answered, so no worst-site figures are given[/]")


def warn_low_power(holdouts: dict[str, int], what: str) -> None:
    """Say which sites hold too few holdout rows for ``what`` to measure anything."""
    from fedsynth.privacy.membership import MIN_NON_MEMBERS

    small = {site: n for site, n in holdouts.items() if n < MIN_NON_MEMBERS}
    if small:
        listed = ", ".join(f"{site} {n}" for site, n in small.items())
        err_console.print(
            f"[yellow]low power: holdout rows at {listed}, under {MIN_NON_MEMBERS}: {what}; "
            "more rows per site (fewer sites) or a larger training.holdout_fraction give it power[/]"
        )


def _max_or_withheld(values: list[float | None]) -> str:
    measured = [v for v in values if v is not None]
    return f"{max(measured):.3f}" if measured else "withheld (< 100 holdout)"


QUERY_ENGINES = ("auto", "simulation", "deployment")
QueriedRunArgument = Annotated[Path, typer.Argument(help="A run directory made by `fedsynth train` (either engine).")]
QuerySeedOption = Annotated[int, typer.Option(help="Seed of the synthetic sample each site draws.")]
EngineOption = Annotated[
    str,
    typer.Option(
        help="Where the sites answer: 'simulation' (Flower's simulation engine over the run's virtual sites), "
        "'deployment' (flower-superlink + one flower-supernode per site on loopback, TLS, as for a run trained "
        "with engine = \"deployment\"), or 'auto': the engine the run was trained on."
    ),
]


def _query_engine(run_dir: Path, engine: str) -> str:
    if engine not in QUERY_ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(QUERY_ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine
    return "deployment" if (run_dir / "deployment" / "federation.toml").exists() else "simulation"


def _query_sites(
    run_dir: Path,
    task: str,
    seed: int,
    engine: str,
    horizons: list[float] | None = None,
    fairness_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Ask every site of the run to audit or evaluate its global model, on the chosen engine."""
    from fedsynth.server.simulated_queries import audit_simulated_run, evaluate_simulated_run

    if _query_engine(run_dir, engine) == "deployment":
        from fedsynth.deploy.loopback_runs import query_on_loopback

        return query_on_loopback(run_dir, task, seed=seed, horizons=horizons, fairness_columns=fairness_columns)
    if task == "audit":
        return audit_simulated_run(run_dir, seed=seed)
    return evaluate_simulated_run(run_dir, seed=seed, horizons=horizons, fairness_columns=fairness_columns)


def _run_audit(run_dir: Path, seed: int, engine: str = "auto") -> dict[str, Any]:
    """The federated audit, its table and figures (`fedsynth audit` and the demo)."""
    from fedsynth.privacy.plots import audit_figures
    from fedsynth.server.audit import AUDIT_FILE

    with console.status("each site samples from the global model and audits it against its own rows"):
        document = _query_sites(run_dir, "audit", seed, engine)
    table = Table(title="Privacy audit per site (aggregates the sites returned)")
    for header in ("site", "DCR share [95% CI]", "exact", "max TPR@1%FPR", "max AUC", "max Anonymeter risk"):
        table.add_column(header, justify="left" if header == "site" else "right")
    for site in document["sites"]:
        nn = site["nearest_neighbour"]
        low, high = nn["dcr_share_ci"]
        table.add_row(
            site["site"],
            f"{nn['dcr_share']:.3f} [{low:.3f}, {high:.3f}]",
            str(nn["exact_matches"]),
            _max_or_withheld([a["tpr_at_1pct_fpr"] for a in site["attacks"]]),
            f"{max(a['auc'] for a in site['attacks']):.3f}",
            f"{max(r['risk'] for r in site['anonymeter']):.3f}",
        )
    console.print(table)
    print_site_query_summary(document)
    warn_low_power(
        {site["site"]: site["nearest_neighbour"]["n_holdout"] for site in document["sites"]},
        "a membership attack's TPR at 1% FPR is withheld there and DCR intervals are wide",
    )
    flagged = [
        f"{site['site']} ({attack['attack']})"
        for site in document["sites"]
        for attack in site["attacks"]
        if attack["empirical_epsilon"]["exceeds_accountant"]
    ]
    if flagged:
        console.print(
            "[red]probable DP bug: an attack's empirical epsilon exceeds the site's accountant epsilon at "
            + ", ".join(flagged)
            + "[/]"
        )
    figures = audit_figures(document, run_dir / "plots")
    console.print(f"audit results: {run_dir / AUDIT_FILE}; {len(figures)} figures in {run_dir / 'plots'}")
    return document


@app.command()
@user_errors
def audit(
    run_dir: QueriedRunArgument,
    seed: QuerySeedOption = 0,
    engine: EngineOption = "auto",
) -> None:
    """Federated privacy audit: each site audits the global model on its own rows; aggregates only."""
    _run_audit(run_dir, seed, engine)


@app.command()
@user_errors
def evaluate(
    run_dir: QueriedRunArgument,
    seed: QuerySeedOption = 0,
    engine: EngineOption = "auto",
    horizon: Annotated[
        list[float] | None,
        typer.Option(
            help="Calibration horizon in the time column's unit (repeat for several). Sites answer only at "
            "horizons they declare (privacy.evaluation_horizons); default: each site's declared horizons, "
            "or a quarter of the time column's public bound."
        ),
    ] = None,
    fairness_column: Annotated[
        list[str] | None,
        typer.Option(
            help="A binary or categorical column of the public schema to report subgroup fairness across "
            "(C-index, calibration and event rate per level, and their gaps; repeat for several). The model's "
            "own fairness_column is always reported."
        ),
    ] = None,
) -> None:
    """Federated survival-utility evaluation: each site evaluates the global model on its own rows."""
    if horizon is not None and any(not h > 0 for h in horizon):
        raise ValueError(f"--horizon must be positive, got {horizon}: give a time in the time column's unit")
    if fairness_column and (run_dir / "schema.toml").exists():  # refused before any site is asked
        from fedsynth.data.schema import Schema
        from fedsynth.evaluation.site_fairness import check_sensitive_column

        schema = Schema.from_toml(run_dir / "schema.toml")
        for column in fairness_column:
            check_sensitive_column(schema, column)
    _run_evaluation(run_dir, seed, horizon, engine, fairness_column)


def _run_evaluation(
    run_dir: Path,
    seed: int,
    horizons: list[float] | None,
    engine: str = "auto",
    fairness_columns: list[str] | None = None,
) -> dict[str, Any]:
    """The federated evaluation, its table and figures (`fedsynth evaluate` and the demo)."""
    from fedsynth.data.schema import Schema
    from fedsynth.evaluation.plots import evaluation_figures
    from fedsynth.server.evaluation import EVALUATION_FILE

    with console.status("each site samples from the global model and evaluates it against its own rows"):
        document = _query_sites(run_dir, "evaluate", seed, engine, horizons, fairness_columns)
    table = Table(title="Survival utility per site (aggregates the sites returned)")
    for header in ("site", "mean KS", "HR in real CI", "Uno C TRTR", "Uno C TSTR", "Uno C augmented", "ICI TSTR"):
        table.add_column(header, justify="left" if header == "site" else "right")

    def uno(site: dict[str, Any], model: str) -> str:
        scores = site["models"][model].get("discrimination", {})
        return f"{scores['uno_c']:.3f}" if "uno_c" in scores else "failed"

    for site in document["sites"]:
        tstr = site["models"]["tstr"]
        overall = tstr["calibration"][0]["overall"] if "calibration" in tstr else None
        hr = site["hazard_ratios"].get("hr_in_ci_fraction")
        table.add_row(
            site["site"],
            f"{site['fidelity']['mean_ks']:.3f}",
            "fit failed" if hr is None else f"{hr:.2f}",
            uno(site, "trtr"),
            uno(site, "tstr"),
            uno(site, "augmented"),
            "n/a" if overall is None else f"{overall['ici']:.3f}",
        )
    console.print(table)
    print_site_query_summary(document)
    for column, pooled in ((document["worst"] or {}).get("fairness") or {}).items():
        gaps = ", ".join(f"{k} {v:.3g}" for k, v in (pooled.get("gaps") or {}).items() if v is not None)
        console.print(f"subgroup fairness across {column}, gaps between its levels (pooled): {gaps or 'none'}")
    warn_low_power(
        {site["site"]: site["n_holdout"] for site in document["sites"]},
        "C-index, calibration and hazard-ratio figures from so few real rows are noise",
    )
    figures = evaluation_figures(document, run_dir / "plots", Schema.from_toml(run_dir / "schema.toml"))
    console.print(f"evaluation results: {run_dir / EVALUATION_FILE}; {len(figures)} figures in {run_dir / 'plots'}")
    return document


def _report_budget(run_dir: Path) -> None:
    from fedsynth.client.site_errors import site_reason
    from fedsynth.server.budget import write_budget_report

    report, json_path, png_path = write_budget_report(run_dir)
    table = Table(title=f"Privacy budget, run {report['run_id']}")
    for header in ("site", "records", "target eps", "spent eps", "remaining", "delta", "noise", "q", "steps"):
        table.add_column(header, justify="right" if header != "site" else "left")
    for site in report["sites"]:
        table.add_row(
            site["site"],
            str(site["records"]),
            f"{site['target_epsilon']:g}",
            f"{site['epsilon_spent']:.3f}",
            f"{site['remaining_epsilon']:.3f}",
            f"{site['delta']:.2e}",
            f"{site['noise_multiplier']:.3f}",
            f"{site['sample_rate']:.3f}",
            str(site["steps"]),
        )
    console.print(table)
    for site in report["sites"]:  # composed into "spent eps" above; noise, q and steps are DP-SGD's
        for release in site.get("marginals", []):
            console.print(
                f"{site['site']}: marginal tables: one Gaussian step (noise {release['noise_multiplier']:.3f}, "
                f"q 1), epsilon {release['epsilon_step'] or 0:.3f} alone, {release['epsilon']:.3f} with prior spend"
            )
    for refusal in report["refusals"]:
        # The site's own words: Flower wraps them in Ray's traceback (simulation) or its error format.
        reason = escape(site_reason(str(refusal["reason"])))
        console.print(f"[yellow]round {refusal['round']}: {refusal['status']}: {reason}[/]", highlight=False)
    for site in report["sites"]:
        for problem in site["problems"]:
            console.print(f"[bold red]{site['site']}: NOT within budget: {problem}[/]", highlight=False)
    console.print(f"accountant: {report['sites'][0]['accountant'] if report['sites'] else '-'}")
    console.print(f"budget report: {json_path} and {png_path}; global model: {run_dir / 'model'}")


@app.command()
@user_errors
def budget(run_dir: Annotated[Path, typer.Argument(help="A run directory made by `fedsynth train`.")]) -> None:
    """Print and write (budget.json, budget.png) the privacy budget report of a run."""
    _report_budget(run_dir)
