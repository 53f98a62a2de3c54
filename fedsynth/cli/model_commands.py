"""`fedsynth fit`, `sample` and `augment`: one model, at one site or from a run."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fedsynth.cli.base import (
    app,
    check_table_output,
    console,
    err_console,
    fit_with_progress,
    load_validated,
    refuse_existing,
    user_errors,
)


class GeneratorName(StrEnum):
    """The generators `fedsynth fit` trains."""

    MCM = "mcm"
    MEDVAE = "medvae"
    CK4GEN = "ck4gen"


def model_directory(path: Path) -> Path:
    """A model directory, or a run directory's global model (as serve, audit and report take it)."""
    return path / "model" if (path / "run.json").exists() and (path / "model").is_dir() else path


@app.command()
@user_errors
def fit(
    data: Annotated[Path, typer.Argument(help="Training data (CSV or Parquet).")],
    schema: Annotated[Path, typer.Option("--schema", help="Schema TOML.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model directory to create.")],
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: enough for the configured steps).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML with a \\[model] table of the generator's config fields.")
    ] = None,
    generator: Annotated[
        GeneratorName,
        typer.Option(
            "--generator", help="mcm (Masked Clinical Modelling), medvae (Med-VAE) or ck4gen (Cox-distilled CK4Gen)."
        ),
    ] = GeneratorName.MCM,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model directory.")] = False,
) -> None:
    """Train a generator (MCM by default) on DATA (non-DP, for one site's own use; federated DP
    training is `fedsynth train`, MCM or Med-VAE: `[model] generator`).

    At least 100 rows (fedsynth.data.minimum.MIN_FIT_ROWS)."""
    from fedsynth.data.minimum import check_fit_rows
    from fedsynth.data.schema import Schema
    from fedsynth.model.ck4gen import CK4GenConfig
    from fedsynth.model.config import MCMConfig
    from fedsynth.model.medvae import MedVAEConfig

    refuse_existing(output, force)
    config_types = {
        GeneratorName.MCM: MCMConfig,
        GeneratorName.MEDVAE: MedVAEConfig,
        GeneratorName.CK4GEN: CK4GenConfig,
    }
    config_type = config_types[generator]
    base = config_type.from_toml(config) if config else config_type()
    overrides = {k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None}
    model_config = config_type.model_validate({**base.model_dump(), **overrides})
    frame, parsed = load_validated(data, Schema.from_toml(schema))
    check_fit_rows(str(data), len(frame))  # on a handful of rows the model copies the patients
    model = fit_with_progress(frame, parsed, model_config)
    model.save(output, overwrite=force)
    console.print(
        f"saved model to {output} ({model.n_parameters()} parameters, {model.n_train_} rows, "
        f"final loss {model.history_[-1]:.4f}). [yellow]Not differentially private.[/]"
    )
    if isinstance(model_config, CK4GenConfig) and model_config.outcome == "copy":
        err_console.print(
            '[bold red]outcome = "copy": this model stores the training rows\' times and events and copies '
            "them into every sample (model.json: copies_real_values). Use only where the data is held; "
            "never release or share it.[/]"
        )


@app.command()
@user_errors
def sample(
    model_dir: Annotated[
        Path, typer.Argument(help="Model directory from `fedsynth fit`, or a run directory (samples RUN_DIR/model).")
    ],
    n: Annotated[int | None, typer.Option("-n", help="Number of rows.", min=1)] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="CSV or Parquet (by suffix).")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Condition, e.g. 'chf=1', 'stage in {2,3}', '60<=age<=80'. Repeatable."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same rows).")] = 0,
    audited: Annotated[
        bool, typer.Option("--audited", help="Write RUN_DIR/synthetic.csv: the sample the sites audited (for signoff).")
    ] = False,
    force: Annotated[bool, typer.Option("--force")] = False,
) -> None:
    """Draw N synthetic rows from the model alone (no real row is read)."""
    from fedsynth.model.generators import load_generator
    from fedsynth.model.provenance import model_sample_record, write_synthetic
    from fedsynth.server.evidence import check_dp_claim

    if audited:
        _audited_sample(model_dir, n, output, where, force)
        return
    if n is None or output is None:
        raise typer.BadParameter("give -n N and -o FILE, or --audited for the sample the sites audited")
    check_table_output(output, force)
    model_dir = model_directory(model_dir)
    model = load_generator(model_dir)
    resolved = model.resolve(list(where or []))
    dp = check_dp_claim(model_dir, model)  # the run's records, not model.json's flag; an unbacked claim exits 2
    copies = bool(getattr(model, "copies_real_values", False))
    record = model_sample_record(
        model_dir, dp.differentially_private, n, seed, list(where or []), dp.reason, model.title, copies
    )
    # Streamed a row group at a time: bounded memory for any n, the rows of model.sample(n, seed).
    write_synthetic(model.sample_chunks(n, resolved, seed=seed), output, record)
    conditions = f" satisfying {len(resolved)} condition(s)" if resolved else ""
    console.print(f"wrote {n} rows{conditions} to {output}")
    if not record["differentially_private"]:
        err_console.print(f"[yellow]{record['notice']}[/]")


def _audited_sample(run_dir: Path, n: int | None, output: Path | None, where: list[str] | None, force: bool) -> None:
    """RUN_DIR/synthetic.csv with audit.json's n, seed and conditions: the file signoff releases."""
    from fedsynth.release.binding import write_audited_sample

    if n is not None or output is not None or where:
        raise typer.BadParameter("--audited takes n, seed, conditions and the file from the run; drop -n, -o, --where")
    if not (run_dir / "audit.json").exists():
        raise FileNotFoundError(
            f"{run_dir / 'audit.json'} not found: --audited needs a run directory after `fedsynth audit`"
        )
    check_table_output(run_dir / "synthetic.csv", force)
    written = write_audited_sample(run_dir)
    console.print(f"wrote the audited sample to {written}")


# -- sampling service ---------------------------------------------------------------------------


@app.command()
@user_errors
def augment(
    data: Annotated[Path, typer.Argument(help="This site's real data.")],
    model_dir: Annotated[Path, typer.Option("--model", help="Model directory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV or Parquet (by suffix).")],
    n: Annotated[int | None, typer.Option("-n", help="Rows (default: one per real/subgroup row).")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Subgroup to augment (repeatable).")] = None,
    mask_ratio: Annotated[
        float, typer.Option(help="Share of features masked (papers: 0.5 augment, 0.75 synth).")
    ] = 0.5,
    seed: Annotated[int, typer.Option()] = 0,
    force: Annotated[bool, typer.Option("--force")] = False,
) -> None:
    """Site-local paper mode (copy a real row, mask, reconstruct). NOT differentially private."""
    from fedsynth.model.mcm import MCM
    from fedsynth.model.paper import NOT_DP_NOTICE, augment_subgroup, copy_and_mask
    from fedsynth.model.provenance import provenance, write_synthetic

    check_table_output(output, force)
    model_dir = model_directory(model_dir)
    model = MCM.load(model_dir)
    real, _ = load_validated(data, model._schema())
    if where:
        frame = augment_subgroup(model, real, n or len(real), list(where), mask_ratio=mask_ratio, seed=seed)
    else:
        chosen = real if n is None else real.sample(n=n, replace=n > len(real), random_state=seed)
        frame = copy_and_mask(model, chosen, mask_ratio=mask_ratio, seed=seed)
    record = provenance(
        "paper-copy-and-mask",
        False,
        model=str(model_dir),
        source=str(data),
        n=len(frame),
        mask_ratio=mask_ratio,
        seed=seed,
        conditions=list(where or []),
    )
    write_synthetic(frame, output, record)
    err_console.print(f"[bold red]{NOT_DP_NOTICE}[/]")
    console.print(f"wrote {len(frame)} rows to {output} (not differentially private)")
