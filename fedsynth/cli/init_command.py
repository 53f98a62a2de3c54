"""`fedsynth init`: a project for your own CSV, as `flwr new` scaffolds a Flower app.

It drafts the public schema (reading the data, so every line of the draft is to be reviewed),
a ``federation.toml`` that trains on the file's rows split over simulated sites, and the
``site.toml`` a real hospital fills in for the deployment engine. Nothing is written when any
of the three cannot be made, and nothing is replaced without ``--force``.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated

import typer

from fedsynth.cli.base import app, console, err_console, refuse_existing, user_errors
from fedsynth.cli.data_commands import EventColumnOption, TimeColumnOption, print_draft_notes

SCHEMA, FEDERATION, SITE = "schema.toml", "federation.toml", "site.toml"


def _federation_toml(data: Path, name: str, sites: int, epsilon: float, partition: str) -> str:
    return f"""# Federated DP training of a synthetic-data generator on {data.name}, split over {sites} simulated
# sites (Flower's simulation engine). Review {SCHEMA} first: it is the public contract.
#   fedsynth train --config {FEDERATION}
#   fedsynth budget runs/{name}
[federation]
engine = "simulation"     # "deployment": Flower SuperLink + SuperNodes on this machine (loopback)
rounds = 3
min_sites = {sites}
run_dir = "runs/{name}"

[simulation]
data = {json.dumps(str(data))}
schema = "{SCHEMA}"
sites = {sites}
partition = "{partition}"   # or "column:NAME": every row with one value of NAME on one site

[site]                      # every simulated site's budget; a real site sets its own in {SITE}
privacy = {{ target_epsilon = {epsilon:g} }}
"""


def _site_toml(name: str, epsilon: float) -> str:
    return f"""# One hospital's own settings for the deployment engine: its data never leaves it, and it
# enforces its own privacy budget whatever the coordinator asks. Copy this file to the site.
[site]
name = "{name}-site-1"
data = "/secure/path/to/your-extract.csv"   # this site's rows (same columns as the schema)
schema = "{SCHEMA}"                         # the federation's public schema, identical at every site

[privacy]
target_epsilon = {epsilon:g}        # the most this site will ever spend on its data
max_audits = 10             # audits and evaluations it will ever answer (their results are not DP)

[training]
local_epochs = 5
holdout_fraction = 0.2      # rows kept back for the site's audits and evaluations
"""


@app.command("init")
@user_errors
def init(
    data: Annotated[Path, typer.Argument(help="Your CSV or Parquet file (one row per patient).")],
    time: TimeColumnOption,
    event: EventColumnOption,
    output: Annotated[Path, typer.Option("-o", "--output", help="Project directory to write.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the file's name).")] = None,
    sites: Annotated[int, typer.Option(min=1, max=1000, help="Simulated sites to split the rows over.")] = 3,
    epsilon: Annotated[float, typer.Option(min=0.01, max=100, help="Each site's privacy budget.")] = 4.0,
    partition: Annotated[str, typer.Option(help='"iid", or "column:NAME" (e.g. an institution code).')] = "iid",
    force: Annotated[bool, typer.Option("--force", help="Replace files already there.")] = False,
) -> None:
    """Scaffold schema.toml (a draft to review), federation.toml and site.toml for DATA."""
    from fedsynth.data.infer import draft_header, draft_schema
    from fedsynth.data.io import read_table, write_text
    from fedsynth.server.config import FederationConfig

    if partition != "iid" and not partition.startswith("column:"):
        raise typer.BadParameter(f'--partition {partition!r}: use "iid" or "column:NAME"')
    dataset = name or data.stem
    targets = {kind: output / kind for kind in (SCHEMA, FEDERATION, SITE)}
    for path in targets.values():
        refuse_existing(path, force)
    frame = read_table(data)
    schema, notes = draft_schema(frame, time=time, event=event, name=dataset, source=str(data))
    if partition.startswith("column:") and partition.split(":", 1)[1] not in frame.columns:
        raise typer.BadParameter(f"--partition {partition!r}: {data} has no such column")
    # Relative to the project directory, as federation.toml's paths are read.
    location = Path(os.path.relpath(data.resolve(), output.resolve()))
    federation = _federation_toml(location, dataset, sites, epsilon, partition)
    FederationConfig.from_dict(tomllib.loads(federation), source="the drafted federation.toml")
    output.mkdir(parents=True, exist_ok=True)
    write_text(targets[SCHEMA], draft_header(str(data), len(frame)) + schema.to_toml())
    write_text(targets[FEDERATION], federation)
    write_text(targets[SITE], _site_toml(dataset, epsilon))
    err_console.print(f"[yellow]Read {len(frame)} rows of {data} to draft {targets[SCHEMA]}; review it before sharing:")
    print_draft_notes(notes)
    console.print(f"wrote {targets[SCHEMA]}, {targets[FEDERATION]}, {targets[SITE]}")
    console.print(f"next: review {targets[SCHEMA]}, then `fedsynth train --config {targets[FEDERATION]}`")
