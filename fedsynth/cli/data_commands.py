"""`fedsynth schema` and `fedsynth dataset`: the public schema and the bundled datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedsynth.cli.base import (
    console,
    dataset_app,
    err_console,
    load_validated,
    refuse_existing,
    schema_app,
    user_errors,
)

# The survival columns a schema is drafted around (`schema infer` and `init`).
TimeColumnOption = Annotated[str, typer.Option("--time", help="Survival time column.")]
EventColumnOption = Annotated[str, typer.Option("--event", help="Event indicator column (1 = event, 0 = censored).")]


@schema_app.command("infer")
@user_errors
def schema_infer(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file at this site.")],
    time: TimeColumnOption,
    event: EventColumnOption,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the draft schema (TOML).")],
    name: Annotated[str, typer.Option(help="Dataset name in the schema.")] = "dataset",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
) -> None:
    """Draft a schema from DATA for review. This READS the data: review before sharing."""
    from fedsynth.data.infer import draft_header, draft_schema
    from fedsynth.data.io import read_table, write_text

    refuse_existing(output, force)
    frame = read_table(data)
    schema, notes = draft_schema(frame, time=time, event=event, name=name, source=str(data))
    write_text(output, draft_header(str(data), len(frame)) + schema.to_toml())
    err_console.print(
        f"[yellow]Read {len(frame)} rows of {data} to draft {output}.[/] The draft describes this site's data: "
        "review every bound, category and transform, and coarsen bounds, before sharing it as the public schema."
    )
    print_draft_notes(notes)


def print_draft_notes(notes: list[Any]) -> None:
    """What the custodian should review, a column per line (identifiers left out first)."""
    for note in sorted(notes, key=lambda n: not n.excluded):
        mark = " [red](left out)[/]" if note.excluded else ""
        err_console.print(f"  [bold]{note.column}[/]{mark}: {note.text}", highlight=False)


@schema_app.command("check")
@user_errors
def schema_check(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file to validate.")],
    schema: Annotated[Path, typer.Option("--schema", help="Schema TOML.")],
) -> None:
    """Validate DATA against the schema, reporting every problem at once."""
    from fedsynth.data.schema import Schema

    frame, parsed = load_validated(data, Schema.from_toml(schema))
    console.print(f"[green]OK[/]: {len(frame)} usable rows of {data} match {schema} ({len(parsed.columns)} columns)")


# -- datasets -------------------------------------------------------------------------------------


@dataset_app.command("list")
def dataset_list() -> None:
    """List the bundled datasets."""
    from fedsynth.data.datasets import DATASETS, bundled_schema

    for name in DATASETS:
        console.print(f"[bold]{name}[/]: {bundled_schema(name).description}")


@dataset_app.command("export")
@user_errors
def dataset_export(
    name: Annotated[str, typer.Argument(help="Bundled dataset name (see `fedsynth dataset list`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV/Parquet to write; the schema goes beside it.")],
    force: Annotated[bool, typer.Option("--force")] = False,
) -> None:
    """Write a bundled dataset and its schema, e.g. to try the CLI on real files."""
    from fedsynth.data.datasets import load_dataset
    from fedsynth.data.io import write_table, write_text

    schema_path = output.with_suffix(".schema.toml")
    refuse_existing(output, force)
    refuse_existing(schema_path, force)
    frame, schema = load_dataset(name)
    write_table(frame, output)
    write_text(schema_path, schema.to_toml())
    console.print(f"wrote {len(frame)} rows to {output} and its schema to {schema_path}")


# -- fit / sample / augment ----------------------------------------------------------------------
