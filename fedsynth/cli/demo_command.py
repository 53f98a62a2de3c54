"""`fedsynth demo`: the whole release path on a bundled dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedsynth.cli.base import (
    app,
    console,
    user_errors,
)


@app.command()
@user_errors
def demo(
    dataset: Annotated[str, typer.Option(help="Bundled dataset, split over the virtual sites.")] = "flchain",
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Run directory (a previous demo's run there is replaced).")
    ] = Path("runs/demo"),
    sites: Annotated[int, typer.Option(help="Number of sites (hospitals).")] = 3,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 3,
    epsilon: Annotated[float, typer.Option(help="Each site's DP budget (epsilon).")] = 4.0,
    engine: Annotated[
        str, typer.Option(help="simulation (Flower + Ray) or deployment (SuperLink + SuperNodes over TLS).")
    ] = "simulation",
    seed: Annotated[int, typer.Option()] = 0,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Board private key for the bundle (default: a demo key made in RUN_DIR/keys)."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Release policy TOML (default: the shipped default policy).")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show Flower's, Ray's and other libraries' logs (default: RUN_DIR/logs).")
    ] = False,
) -> None:
    """Whole path on one machine: federated DP training, samples, audits, utility, sign-off, bundle, report.

    Exits 0 when every step ran, whatever the verdict (the report names each rule's outcome);
    `fedsynth signoff` is the gate.
    """
    from fedsynth.server.library_output import terminal_stream
    from fedsynth.workflows.demo import DemoOptions, run_demo

    options = DemoOptions(dataset=dataset, output=output, sites=sites, rounds=rounds, epsilon=epsilon, engine=engine,
                          seed=seed, key=key, policy=policy, verbose=verbose)  # fmt: skip
    # Its own stream to the terminal: the demo sends everything else printed to its log file.
    run_demo(options, Console(file=terminal_stream(), width=console.width if console.width < 80 else 80))
