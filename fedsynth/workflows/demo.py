"""`fedsynth demo` as a function: the whole path on one machine, from federated DP training to
the signed bundle and the report, with a short progress display.

Phases: training (DP marginal tables, then DP-SGD rounds), the quality score of a model-only
sample, the privacy audit and the survival evaluation at every site, the release sign-off
under the policy, the figures and the report. On the simulation engine, training, audit and
evaluation share one Flower/Ray launch: the engine's start-up is paid once, not three times.
Library output goes to ``RUN_DIR/logs/demo.log`` (``verbose``: to the terminal).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from fedsynth.data.io import write_text
from fedsynth.errors import UserError
from fedsynth.server.config import FederationConfig
from fedsynth.server.library_output import library_output_to
from fedsynth.workflows.demo_options import DemoOptions
from fedsynth.workflows.demo_output import DemoReporter

__all__ = ["DemoOptions", "prepare_run_dir", "run_demo"]

DEMO_MARKER = ".fedsynth-demo"  # the demo replaces a run directory only if it holds this file
DEMO_LOG = "logs/demo.log"
TIMINGS_FILE = "logs/demo-timings.json"
SOURCE = "fedsynth demo options"


class DemoDirectoryError(UserError, FileExistsError):
    """The demo's run directory exists and the demo did not make it: nothing is replaced."""


@dataclass(frozen=True)
class DemoResult:
    """Where the demo's results are, its verdict, and how long each phase took (seconds)."""

    run_dir: Path
    outcome: str
    bundle: Path | None
    report: Path
    seconds: dict[str, float] = field(default_factory=dict)


def cpus_per_site(sites: int) -> float:
    """Ray's CPU share per site: every site's actor runs at once, so no site waits for a second
    wave on a machine with fewer cores than sites (the work per core is the same)."""
    cores = os.cpu_count() or 1
    return 1.0 if cores >= sites else max(0.01, int(100 * cores / sites) / 100)


def demo_federation(options: DemoOptions) -> FederationConfig:
    return FederationConfig.from_dict(
        {
            "federation": {
                "engine": options.engine, "rounds": options.rounds, "min_sites": options.sites,
                "run_dir": str(options.output.resolve()),
            },
            "simulation": {
                "dataset": options.dataset, "sites": options.sites, "seed": options.seed,
                "cpus_per_site": cpus_per_site(options.sites),
            },
            "site": {"privacy": {"target_epsilon": options.epsilon}, "training": {"local_epochs": 5}},
        },
        source=SOURCE,
    )  # fmt: skip


def check_inputs(options: DemoOptions, federation: FederationConfig) -> None:
    """Everything the demo can refuse, refused before it replaces or writes anything."""
    from fedsynth.release.policy import load_policy
    from fedsynth.server.simulated_sites import check_simulated_sites

    # Checked as a fresh run: the directory is replaced, so a previous demo's run is not resumed.
    check_simulated_sites(federation.model_copy(update={"run_dir": Path(os.devnull) / "demo"}), SOURCE)
    load_policy(options.policy)
    if options.key is not None:
        from fedsynth.release.keys import load_private_key

        load_private_key(options.key)
        if options.key.resolve().is_relative_to(federation.run_dir):
            raise DemoDirectoryError(f"--key {options.key} lies inside the demo's run directory, which the demo "
                                     "replaces: keep the board key elsewhere")  # fmt: skip


def prepare_run_dir(run_dir: Path) -> bool:
    """Make ``run_dir`` for a new demo run; True if a previous demo run there was replaced.

    Only a directory holding the demo's marker is replaced; any other non-empty one is refused.
    """
    replaced = False
    if run_dir.exists():
        if (run_dir / DEMO_MARKER).is_file():
            shutil.rmtree(run_dir)
            replaced = True
        elif not run_dir.is_dir() or any(run_dir.iterdir()):
            raise DemoDirectoryError(
                f"{run_dir} exists and was not made by `fedsynth demo` (no {DEMO_MARKER} in it): choose another "
                "--output; the demo replaces only a run directory it made"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    made = {"made_by": "fedsynth demo", "time": datetime.now(UTC).isoformat()}
    write_text(run_dir / DEMO_MARKER, json.dumps(made) + "\n")
    return replaced


def run_demo(options: DemoOptions, console: Console) -> DemoResult:
    """Run the demo, printing its progress to ``console``; the verdict does not make it fail."""
    federation = demo_federation(options)
    check_inputs(options, federation)
    run_dir = federation.run_dir
    replaced = prepare_run_dir(run_dir)
    console.rule(
        f"fedsynth demo: {options.dataset}, {options.sites} sites, {options.rounds} rounds, "
        f"DP epsilon {options.epsilon:g} per site"
    )
    if replaced:
        console.print(f"replacing the previous demo run in {run_dir}")
    reporter = DemoReporter(console)
    quiet = not options.verbose
    with library_output_to(run_dir / DEMO_LOG) if quiet else contextlib.nullcontext():
        from fedsynth.workflows.demo_steps import release_and_report, train_audit_evaluate

        documents = train_audit_evaluate(options, federation, reporter)
        outcome, bundle, report = release_and_report(options, run_dir, documents, reporter)
    write_text(run_dir / TIMINGS_FILE, json.dumps(reporter.seconds, indent=2) + "\n")
    logs = ", logs/ (libraries)" if quiet else ""
    console.print(f"results in {run_dir}/:")
    console.print("  report.html, signoff.json, audit.json, evaluation.json, budget.json,")
    console.print(f"  summary.json, synthetic.csv, model/, plots/{logs}")
    # The quality line scored the virtual sites' rows on this machine, which a real coordinator never holds.
    over = "over the deployment engine" if options.engine == "deployment" else "in one simulation"
    console.print(f"[dim]Sites answered the audit and evaluation {over}; only the quality line read their rows.[/]")
    return DemoResult(run_dir, outcome, bundle, report, dict(reporter.seconds))
