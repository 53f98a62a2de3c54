"""The `fedsynth` app, its command groups, consoles and the user-error boundary (exit 2)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedsynth.errors import UserError

if TYPE_CHECKING:
    from fedsynth.data.schema import Schema

app = typer.Typer(
    help="Federated, differentially private synthetic clinical survival data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(help="Draft and check the public schema.", no_args_is_help=True)
dataset_app = typer.Typer(help="Bundled public survival datasets.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(dataset_app, name="dataset")
deploy_app = typer.Typer(help="Deployment: TLS credentials, SuperNode keys, the Fleet gateway.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")
serve_token_app = typer.Typer(help="Bearer tokens for `fedsynth serve` (only hashes kept).", no_args_is_help=True)
app.add_typer(serve_token_app, name="serve-token")

console = Console()
err_console = Console(stderr=True)
# UserError is the one base for bad input; the builtins stay until every raise of bad input
# is a UserError (a ValueError from a library call on a user's file is still the user's to fix).
USER_ERRORS = (UserError, FileExistsError, FileNotFoundError, KeyError, ValueError)
F = TypeVar("F", bound=Callable[..., Any])


def _print_version(value: bool) -> None:
    if value:
        from fedsynth import __version__

        console.print(f"fedsynth {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Federated, differentially private synthetic clinical survival data."""


def user_errors(func: F) -> F:
    """Turn expected errors into one clear message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            # Escaped: messages name TOML tables ("[federation]"), which rich would take for markup.
            err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; choose another path or pass --force to replace it")


def check_table_output(path: Path, force: bool) -> None:
    """Fail before any work if the output has an unknown format or would replace a file."""
    from fedsynth.data.io import table_suffix

    table_suffix(path)
    refuse_existing(path, force)


def load_validated(data: Path, schema: Schema) -> tuple[Any, Schema]:
    from fedsynth.data.io import read_table
    from fedsynth.data.validation import validate_frame

    frame, report = validate_frame(read_table(data), schema, source=str(data))
    if report.ignored_columns:
        err_console.print(f"note: columns not in the schema are ignored: {', '.join(report.ignored_columns)}")
    for column, count in report.dropped_rows.items():
        err_console.print(f"note: dropped {count} row(s) with missing '{column}' (schema policy drop_row)")
    for column, count in report.filled_values.items():
        err_console.print(f"note: filled {count} missing value(s) of '{column}' (schema policy fill)")
    for column, count in report.kept_missing.items():
        err_console.print(f"note: kept {count} missing value(s) of '{column}' as missing (schema policy model)")
    if len(frame) < report.n_input_rows:
        lost = report.n_input_rows - len(frame)
        err_console.print(
            f"[yellow]warning: {lost} of {report.n_input_rows} rows ({lost / report.n_input_rows:.0%}) are dropped "
            'by the schema\'s missing-value policies; if that is too many, use missing = "fill" for those columns[/]'
        )
    return frame, schema


ledger_app = typer.Typer(help="Back up, restore and check a site's privacy ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
SiteDirArgument = Annotated[Path, typer.Argument(help="The site directory (site.toml; the ledger is in state/).")]
site_app = typer.Typer(
    help="At a site: its privacy status, and a pre-flight check before starting its SuperNode.", no_args_is_help=True
)
app.add_typer(site_app, name="site")


release_app = typer.Typer(help="Release keys and site approvals (sign-off: `fedsynth signoff`).", no_args_is_help=True)
app.add_typer(release_app, name="release")


def training_progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def fit_with_progress(frame: Any, schema: Schema, config: Any) -> Any:
    from fedsynth.model.ck4gen import CK4Gen, CK4GenConfig
    from fedsynth.model.mcm import MCM
    from fedsynth.model.medvae import MedVAE, MedVAEConfig

    if isinstance(config, MedVAEConfig):
        model, name, epochs = MedVAE(config), "Med-VAE", config.epochs
    elif isinstance(config, CK4GenConfig):
        model, name, epochs = CK4Gen(config), "CK4Gen", config.epochs
    else:
        model, name, epochs = MCM(config), "MCM", config.resolved_epochs(len(frame))
    with training_progress() as progress:
        task = progress.add_task(f"training {name}", total=epochs, loss="-")

        def report(epoch: int, total: int, loss: float) -> None:
            progress.update(task, completed=epoch, loss=f"{loss:.4f}")

        return model.fit(frame, schema, progress=report)
