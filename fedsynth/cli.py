"""The `fedsynth` command line: thin wrappers over the packages, with clear errors.

Every command validates all of its inputs before it writes anything; a user error prints
one readable message (no traceback) and exits with status 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fedsynth.data.conditions import ConditionError
from fedsynth.data.io import TableFormatError, read_table, write_text
from fedsynth.data.schema import Schema, SchemaError
from fedsynth.data.validation import DataValidationError, validate_frame
from fedsynth.deploy import DeploymentError
from fedsynth.model.persistence import ModelFileError

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
USER_ERRORS = (
    DataValidationError,
    SchemaError,
    ConditionError,
    ModelFileError,
    TableFormatError,
    FileExistsError,
    FileNotFoundError,
    KeyError,
    ValueError,
    DeploymentError,
)
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


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; choose another path or pass --force to replace it")


def _check_table_output(path: Path, force: bool) -> None:
    """Fail before any work if the output has an unknown format or would replace a file."""
    from fedsynth.data.io import table_suffix

    table_suffix(path)
    _refuse_existing(path, force)


def _load_validated(data: Path, schema: Schema) -> tuple[Any, Schema]:
    frame, report = validate_frame(read_table(data), schema, source=str(data))
    if report.ignored_columns:
        err_console.print(f"note: columns not in the schema are ignored: {', '.join(report.ignored_columns)}")
    for column, count in report.dropped_rows.items():
        err_console.print(f"note: dropped {count} row(s) with missing '{column}' (schema policy drop_row)")
    for column, count in report.filled_values.items():
        err_console.print(f"note: filled {count} missing value(s) of '{column}' (schema policy fill)")
    return frame, schema


# -- schema -------------------------------------------------------------------------------------


@schema_app.command("infer")
@user_errors
def schema_infer(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file at this site.")],
    time: Annotated[str, typer.Option("--time", help="Survival time column.")],
    event: Annotated[str, typer.Option("--event", help="Event indicator column (1 = event).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the draft schema (TOML).")],
    name: Annotated[str, typer.Option(help="Dataset name in the schema.")] = "dataset",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
) -> None:
    """Draft a schema from DATA for review. This READS the data: review before sharing."""
    from fedsynth.data.infer import draft_header, infer_schema

    _refuse_existing(output, force)
    frame = read_table(data)
    schema = infer_schema(frame, time=time, event=event, name=name, source=str(data))
    write_text(output, draft_header(str(data), len(frame)) + schema.to_toml())
    err_console.print(
        f"[yellow]Read {len(frame)} rows of {data} to draft {output}.[/] The draft describes this site's data: "
        "review every bound, category and transform, and coarsen bounds, before sharing it as the public schema."
    )


@schema_app.command("check")
@user_errors
def schema_check(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file to validate.")],
    schema: Annotated[Path, typer.Option("--schema", help="Schema TOML.")],
) -> None:
    """Validate DATA against the schema, reporting every problem at once."""
    frame, parsed = _load_validated(data, Schema.from_toml(schema))
    console.print(f"[green]OK[/]: {len(frame)} rows of {data} match {schema} ({len(parsed.columns)} columns)")


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
    from fedsynth.data.io import write_table

    schema_path = output.with_suffix(".schema.toml")
    _refuse_existing(output, force)
    _refuse_existing(schema_path, force)
    frame, schema = load_dataset(name)
    write_table(frame, output)
    write_text(schema_path, schema.to_toml())
    console.print(f"wrote {len(frame)} rows to {output} and its schema to {schema_path}")


# -- fit / sample / augment ----------------------------------------------------------------------


def _progress() -> Progress:
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
    from fedsynth.model.mcm import MCM

    model = MCM(config)
    with _progress() as progress:
        task = progress.add_task("training MCM", total=config.resolved_epochs(len(frame)), loss="-")

        def report(epoch: int, total: int, loss: float) -> None:
            progress.update(task, completed=epoch, loss=f"{loss:.4f}")

        return model.fit(frame, schema, progress=report)


@app.command()
@user_errors
def fit(
    data: Annotated[Path, typer.Argument(help="Training data (CSV or Parquet).")],
    schema: Annotated[Path, typer.Option("--schema", help="Schema TOML.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model directory to create.")],
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: enough for the configured steps).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML with a [model] table of MCMConfig fields.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model directory.")] = False,
) -> None:
    """Train MCM on DATA (non-DP, for one site's own use; federated DP training is `fedsynth train`).

    At least 100 rows (fedsynth.data.minimum.MIN_FIT_ROWS)."""
    from fedsynth.data.minimum import check_fit_rows
    from fedsynth.model.config import MCMConfig

    _refuse_existing(output, force)
    base = MCMConfig.from_toml(config) if config else MCMConfig()
    overrides = {k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None}
    model_config = MCMConfig.model_validate({**base.model_dump(), **overrides})
    frame, parsed = _load_validated(data, Schema.from_toml(schema))
    check_fit_rows(str(data), len(frame))  # on a handful of rows the model copies the patients
    model = fit_with_progress(frame, parsed, model_config)
    model.save(output, overwrite=force)
    console.print(
        f"saved model to {output} ({model.n_parameters()} parameters, {model.n_train_} rows, "
        f"final loss {model.history_[-1]:.4f}). [yellow]Not differentially private.[/]"
    )


@app.command()
@user_errors
def sample(
    model_dir: Annotated[
        Path, typer.Argument(help="Model directory from `fedsynth fit`, or a run directory (samples RUN_DIR/model).")
    ],
    n: Annotated[int, typer.Option("-n", help="Number of rows.", min=1)],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV or Parquet (by suffix).")],
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Condition, e.g. 'chf=1', 'stage in {2,3}', '60<=age<=80'. Repeatable."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same rows).")] = 0,
    force: Annotated[bool, typer.Option("--force")] = False,
) -> None:
    """Draw N synthetic rows from the model alone (no real row is read)."""
    from fedsynth.model.mcm import MCM
    from fedsynth.model.provenance import model_sample_record, write_synthetic
    from fedsynth.privacy.evidence import check_dp_claim

    _check_table_output(output, force)
    if (model_dir / "run.json").exists() and (model_dir / "model").is_dir():
        model_dir = model_dir / "model"  # a run directory: its global model, as serve/audit/report take it
    model = MCM.load(model_dir)
    resolved = model.resolve(list(where or []))
    dp = check_dp_claim(model_dir, model)  # the run's records, not model.json's flag; an unbacked claim exits 2
    record = model_sample_record(model_dir, dp.differentially_private, n, seed, list(where or []), dp.reason)
    # Streamed a row group at a time: bounded memory for any n, the rows of model.sample(n, seed).
    write_synthetic(model.sample_chunks(n, resolved, seed=seed), output, record)
    conditions = f" satisfying {len(resolved)} condition(s)" if resolved else ""
    console.print(f"wrote {n} rows{conditions} to {output}")
    if not dp.differentially_private:
        err_console.print(f"[yellow]{record['notice']}[/]")


# -- sampling service ---------------------------------------------------------------------------


@app.command()
@user_errors
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `fedsynth train` (serves RUN_DIR/model).")],
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    tokens: Annotated[Path | None, typer.Option(help="Tokens file from `fedsynth serve-token add`.")] = None,
    max_rows: Annotated[int | None, typer.Option(help="Most rows one request may ask (default 100000).")] = None,
    config: Annotated[Path | None, typer.Option(help="Service config TOML; the options above override it.")] = None,
    allow_non_dp: Annotated[
        bool, typer.Option("--allow-non-dp", help="Serve a model trained without DP; every answer says so.")
    ] = False,
    allow_unsigned: Annotated[
        bool, typer.Option("--allow-unsigned", help="Serve without a PASS release sign-off (recorded in the log).")
    ] = False,
) -> None:
    """Serve synthetic cohorts over HTTP from a run's global model alone (OpenAPI at /docs).

    Only a model whose release sign-off passed (`fedsynth signoff`) is served, unless --allow-unsigned.
    """
    import uvicorn

    from fedsynth.server.service import ServiceConfig, create_app

    settings = ServiceConfig.from_toml(config) if config else ServiceConfig()
    settings = settings.with_overrides(host=host, port=port, tokens=tokens, max_rows_per_request=max_rows,
                                       allow_non_dp=allow_non_dp or None,
                                       allow_unsigned=allow_unsigned or None)  # fmt: skip
    service = create_app(run_dir, settings)
    served = service.state.service.served
    scheme = "https" if settings.tls_certfile else "http"
    console.print(f"serving {run_dir / 'model'} (SHA-256 {served.sha256[:16]}...) at "
                  f"{scheme}://{settings.host}:{settings.port} (API docs: /docs); access log "
                  f"{settings.access_log_path(run_dir)}")  # fmt: skip
    if not served.differentially_private:
        err_console.print(f"[yellow]{served.notice}[/]")
    if allow_unsigned or settings.allow_unsigned:
        from fedsynth.server.service.release_status import release_status

        status = release_status(run_dir, served.sha256)
        if not status.signed:
            err_console.print(f"[yellow]serving without a release sign-off (--allow-unsigned): {status.problem}[/]")
    if scheme == "http" and not settings.is_loopback:
        err_console.print("[yellow]plain HTTP on a network interface: bearer tokens travel in clear text; "
                          "set tls_certfile/tls_keyfile or put a TLS proxy in front[/]")  # fmt: skip
    uvicorn.run(service, host=settings.host, port=settings.port, access_log=False,
                ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile)  # fmt: skip


@serve_token_app.command("add")
@user_errors
def serve_token_add(
    tokens_file: Annotated[Path, typer.Argument(help="Tokens file (created if absent).")],
    name: Annotated[str, typer.Option("--name", help="Who holds the token; written to the access log.")],
) -> None:
    """Issue a token: printed once on stdout, only its SHA-256 is stored."""
    from fedsynth.server.service.auth import add_token

    token = add_token(tokens_file, name)
    err_console.print(f"token for '{name}' (shown only now; {tokens_file} keeps its SHA-256):")
    typer.echo(token)


@serve_token_app.command("revoke")
@user_errors
def serve_token_revoke(
    tokens_file: Annotated[Path, typer.Argument(help="Tokens file.")],
    name: Annotated[str, typer.Option("--name", help="Whose token to remove.")],
) -> None:
    """Remove a token; a running service refuses it from its next request."""
    from fedsynth.server.service.auth import revoke_token

    revoke_token(tokens_file, name)
    console.print(f"revoked the token of '{name}' in {tokens_file}")


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

    _check_table_output(output, force)
    if (model_dir / "run.json").exists() and (model_dir / "model").is_dir():
        model_dir = model_dir / "model"  # a run directory: its global model, as serve/audit/report take it
    model = MCM.load(model_dir)
    real, _ = _load_validated(data, model._schema())
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


# -- demo -----------------------------------------------------------------------------------------


@app.command()
@user_errors
def train(
    config: Annotated[
        Path, typer.Option("--config", help="Federation TOML ([federation], [simulation], [site], [model]).")
    ],
    rounds: Annotated[int | None, typer.Option(help="Override federation.rounds.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Override federation.run_dir.")] = None,
    sites: Annotated[int | None, typer.Option(help="Override simulation.sites.")] = None,
    engine: Annotated[
        str | None, typer.Option(help="Override federation.engine: simulation or deployment (loopback).")
    ] = None,
) -> None:
    """Federated DP training of the MCM generator; resumes RUN_DIR from its last checkpoint."""
    from fedsynth.server.config import FederationConfig
    from fedsynth.server.outcome import check_training_outcome, rounds_done
    from fedsynth.server.simulated_sites import check_simulated_sites

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
    check_simulated_sites(federation, source=str(config))
    first_round = rounds_done(federation.run_dir) + 1
    if federation.engine == "deployment":
        from fedsynth.deploy.local import run_on_loopback

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


@deploy_app.command("certs")
@user_errors
def deploy_certs(
    directory: Annotated[Path, typer.Argument(help="Where to write ca.crt, server.pem/.key and nodes/*.key/.pub.")],
    host: Annotated[
        list[str] | None, typer.Option("--host", help="SuperLink host name or IP (repeat); default loopback.")
    ] = None,
    node: Annotated[
        list[str] | None, typer.Option("--node", help="A SuperNode to make a key pair for (repeat).")
    ] = None,
    days: Annotated[int, typer.Option(help="Validity of the certificates in days.")] = 365,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing credential set.")] = False,
) -> None:
    """Make a federation CA, the SuperLink's TLS certificate and SuperNode authentication keys."""
    from fedsynth.deploy.certs import DEFAULT_HOSTS, make_credentials

    files = make_credentials(directory, nodes=tuple(node or ()), hosts=tuple(host or DEFAULT_HOSTS), days=days,
                             overwrite=force)  # fmt: skip
    console.print(f"CA certificate (give to every site and `flwr` user): {files.ca_cert}")
    console.print(f"SuperLink certificate and key: {files.server_cert}, {files.server_key}  (key is private)")
    for name in node or ():
        console.print(f"SuperNode {name}: private key {files.node_key(name)} (stays at the site), "
                      f"public key {files.node_public_key(name)} (register: flwr supernode register)")  # fmt: skip
    console.print(f"[bold]{files.ca_key} signs certificates: keep it offline, never copy it to a site.[/]")


@deploy_app.command("node-key")
@user_errors
def deploy_node_key(
    directory: Annotated[Path, typer.Argument(help="A credential directory made by `fedsynth deploy certs`.")],
    name: Annotated[str, typer.Argument(help="The SuperNode's name, e.g. site-4.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make one more SuperNode authentication key pair (for a site joining later)."""
    from fedsynth.deploy.certs import add_node_key

    private, public = add_node_key(directory, name, overwrite=force)
    console.print(f"private key {private} (stays at the site); public key {public} (register it at the SuperLink)")


@deploy_app.command("gateway")
@user_errors
def deploy_gateway(
    certs: Annotated[Path, typer.Argument(help="The credential directory (server.pem, server.key, ca.crt).")],
    listen: Annotated[str, typer.Option(help="Public host:port that SuperNodes connect to.")] = "0.0.0.0:9092",
    superlink: Annotated[
        str, typer.Option(help="The SuperLink's loopback host:port (flower-superlink --host 127.0.0.1 --port).")
    ] = "127.0.0.1:9093",
) -> None:
    """Serve the coordinator's only public port: Flower's Fleet API over TLS, nothing else (deploy/README.md)."""
    from fedsynth.deploy.gateway import serve

    serve(certs, listen, superlink, announce=console.print)


def _print_site_query_summary(document: dict[str, Any]) -> None:
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


def _max_or_withheld(values: list[float | None]) -> str:
    measured = [v for v in values if v is not None]
    return f"{max(measured):.3f}" if measured else "withheld (< 100 holdout)"


QUERY_ENGINES = ("auto", "simulation", "deployment")
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
    run_dir: Path, task: str, seed: int, engine: str, horizons: list[float] | None = None
) -> dict[str, Any]:
    """Ask every site of the run to audit or evaluate its global model, on the chosen engine."""
    from fedsynth.server.audit import audit_simulated_run
    from fedsynth.server.evaluation import evaluate_simulated_run

    if _query_engine(run_dir, engine) == "deployment":
        from fedsynth.deploy.local import query_on_loopback

        return query_on_loopback(run_dir, task, seed=seed, horizons=horizons)
    if task == "audit":
        return audit_simulated_run(run_dir, seed=seed)
    return evaluate_simulated_run(run_dir, seed=seed, horizons=horizons)


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
    _print_site_query_summary(document)
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
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `fedsynth train` (either engine).")],
    seed: Annotated[int, typer.Option(help="Seed of the synthetic sample each site draws.")] = 0,
    engine: EngineOption = "auto",
) -> None:
    """Federated privacy audit: each site audits the global model on its own rows; aggregates only."""
    _run_audit(run_dir, seed, engine)


@app.command()
@user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `fedsynth train` (either engine).")],
    seed: Annotated[int, typer.Option(help="Seed of the synthetic sample each site draws.")] = 0,
    engine: EngineOption = "auto",
    horizon: Annotated[
        list[float] | None,
        typer.Option(
            help="Calibration horizon in the time column's unit (repeat for several). Sites answer only at "
            "horizons they declare (privacy.evaluation_horizons); default: each site's declared horizons, "
            "or a quarter of the time column's public bound."
        ),
    ] = None,
) -> None:
    """Federated survival-utility evaluation: each site evaluates the global model on its own rows."""
    if horizon is not None and any(not h > 0 for h in horizon):
        raise ValueError(f"--horizon must be positive, got {horizon}: give a time in the time column's unit")
    _run_evaluation(run_dir, seed, horizon, engine)


def _run_evaluation(run_dir: Path, seed: int, horizons: list[float] | None, engine: str = "auto") -> dict[str, Any]:
    """The federated evaluation, its table and figures (`fedsynth evaluate` and the demo)."""
    from fedsynth.evaluation.plots import evaluation_figures
    from fedsynth.server.evaluation import EVALUATION_FILE

    with console.status("each site samples from the global model and evaluates it against its own rows"):
        document = _query_sites(run_dir, "evaluate", seed, engine, horizons)
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
    _print_site_query_summary(document)
    figures = evaluation_figures(document, run_dir / "plots", Schema.from_toml(run_dir / "schema.toml"))
    console.print(f"evaluation results: {run_dir / EVALUATION_FILE}; {len(figures)} figures in {run_dir / 'plots'}")
    return document


def _report_budget(run_dir: Path) -> None:
    from fedsynth.client.site_errors import site_reason
    from fedsynth.privacy.budget import write_budget_report

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


# -- a site's privacy ledger ---------------------------------------------------------------------

ledger_app = typer.Typer(help="Back up, restore and check a site's privacy ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
SiteDirArgument = Annotated[Path, typer.Argument(help="The site directory (site.toml; the ledger is in state/).")]


def _print_ledger(verb: str, head: Any, where: Path) -> None:
    console.print(f"{verb} {where}: {head.entries} entries, epsilon {head.epsilon:.4f}, head {head.head_sha256[:12]}")


@ledger_app.command("backup")
@user_errors
def ledger_backup(
    site_dir: SiteDirArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="The backup file to write.")],
    force: Annotated[bool, typer.Option(help="Replace an existing backup file.")] = False,
) -> None:
    """Copy the site's verified ledger to a backup file (SQLite online backup)."""
    from fedsynth.client.ledger_backup import backup_ledger

    _print_ledger("backed up to", backup_ledger(site_dir, output, force=force), output)


@ledger_app.command("restore")
@user_errors
def ledger_restore(
    site_dir: SiteDirArgument,
    backup_file: Annotated[Path, typer.Argument(help="A file made by `fedsynth ledger backup`.")],
) -> None:
    """Restore the site's ledger from a backup that is not behind it (stop the site first)."""
    from fedsynth.client.ledger_backup import restore_ledger

    _print_ledger("restored", restore_ledger(site_dir, backup_file), site_dir)


@ledger_app.command("verify")
@user_errors
def ledger_verify(site_dir: SiteDirArgument) -> None:
    """Check the site's ledger against its hash chain and witness, as the site does before training."""
    from fedsynth.client.ledger_backup import verify_ledger

    _print_ledger("verified", verify_ledger(site_dir), site_dir)


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


# -- release: sign-off, bundle, approvals, verify ---------------------------------------------------

release_app = typer.Typer(help="Release keys and site approvals (sign-off: `fedsynth signoff`).", no_args_is_help=True)
app.add_typer(release_app, name="release")


@release_app.command("keygen")
@user_errors
def release_keygen(
    directory: Annotated[Path, typer.Argument(help="Where to write NAME.key.pem (private, 0600) and NAME.pub.pem.")],
    name: Annotated[str, typer.Option("--name", help="Whose key: 'board', or a site's name such as site-0.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make an Ed25519 signing key pair for the release board or a site."""
    from fedsynth.release.keys import fingerprint, keygen, load_public_key

    private, public = keygen(directory, name, overwrite=force)
    console.print(f"private key {private} (mode 0600: keep it, never copy it into a bundle)")
    console.print(f"public key {public} (give it to verifiers), fingerprint {fingerprint(load_public_key(public))}")


@release_app.command("approve")
@user_errors
def release_approve(
    bundle: Annotated[Path, typer.Argument(help="A release bundle made by `fedsynth signoff`.")],
    key: Annotated[Path, typer.Option("--key", help="This site's private key (NAME.key.pem).")],
    site: Annotated[str, typer.Option("--site", help="This site's name in the release, e.g. site-0.")],
    force: Annotated[bool, typer.Option("--force", help="Replace this site's existing approval.")] = False,
) -> None:
    """Approve a release as one site: sign its manifest (its files must match it)."""
    from fedsynth.release.approvals import approve
    from fedsynth.release.keys import load_private_key

    path = approve(bundle, load_private_key(key), site, overwrite=force)
    console.print(f"{site} approved {bundle}: {path}")


def _verdict_table(verdict: Any) -> Table:
    table = Table(title=f"Sign-off of run {verdict.run_id} under policy '{verdict.policy}'")
    for header in ("rule", "value", "threshold", "result", "reason"):
        table.add_column(
            header, justify="right" if header in ("value", "threshold") else "left", no_wrap=header != "reason"
        )
    for rule in verdict.rules:
        value = f"{rule.value:.4g}" if isinstance(rule.value, float) else str(rule.value)
        result = {"PASS": "[green]PASS[/]", "FAIL": "[bold red]FAIL[/]"}.get(rule.outcome, "[yellow]INCONCLUSIVE[/]")
        table.add_row(rule.name, value, rule.threshold, result, rule.reason)
    return table


@app.command()
@user_errors
def signoff(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with budget, audit and evaluation results.")],
    key: Annotated[Path, typer.Option("--key", help="The board's private key (`fedsynth release keygen`).")],
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy TOML (default: the shipped default policy).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Bundle directory (default RUN_DIR/release).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Release although the verdict fails (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why the board releases despite a FAIL.")] = None,
) -> None:
    """Test the release policy against a run; on PASS (or --force --reason) write a signed bundle.

    Exits 1 on FAIL and 3 on INCONCLUSIVE (some rule's evidence lacks the power to tell), without a bundle.
    """
    if force and not (reason and reason.strip()):
        raise ValueError('--force needs --reason "...": a forced release records why the verdict was overridden')
    if reason and not force:
        raise ValueError("--reason is recorded only with --force; drop it, or add --force to override a FAIL")
    verdict, bundle = _sign_off(run_dir, key, policy, output, reason if force else None)
    if bundle is None:
        raise typer.Exit(code=3 if verdict.outcome == "INCONCLUSIVE" else 1)


def _sign_off(
    run_dir: Path, key: Path, policy: Path | None, output: Path | None, force_reason: str | None
) -> tuple[Any, Path | None]:
    """Evaluate the policy, print the verdict, bundle on PASS or when forced (`fedsynth signoff` and the demo)."""
    from fedsynth.release.bundle import sign_off
    from fedsynth.release.keys import load_private_key
    from fedsynth.release.policy import default_policy_path, load_policy

    policy_path = policy or default_policy_path()
    parsed = load_policy(policy_path)
    private_key = load_private_key(key)  # before any work: a bad key must not cost an evaluation
    verdict, bundle = sign_off(
        run_dir, parsed, policy_path.read_text(encoding="utf-8"), private_key, output, force_reason
    )
    console.print(_verdict_table(verdict))
    if verdict.passed:
        console.print(f"[bold green]PASS[/]: every rule of '{verdict.policy}' holds")
    elif verdict.outcome == "INCONCLUSIVE":
        lacking = "; ".join(
            f"{rule.name} ({rule.power or 'more rows at the sites'})" for rule in verdict.inconclusive_rules
        )
        console.print(  # one line, however long: scripts and logs read it whole
            f"[bold yellow]INCONCLUSIVE[/]: these rules lack the power to tell; they would decide with: {lacking}",
            soft_wrap=True,
        )
    else:
        failed = ", ".join(rule.name for rule in verdict.failed_rules if rule.outcome == "FAIL")
        unsure = ", ".join(rule.name for rule in verdict.inconclusive_rules)
        console.print(f"[bold red]FAIL[/]: {failed}" + (f" (and inconclusive: {unsure})" if unsure else ""))
    console.print(f"verdict: {run_dir / 'signoff.json'}")
    if bundle is None:
        console.print(
            f"no release bundle written (the verdict is {verdict.outcome}; --force --reason overrides, and is recorded)"
        )
        return verdict, None
    if not verdict.passed:
        console.print(f"[yellow]forced release, reason recorded in the signed manifest: {force_reason}[/]")
    console.print(f"signed release bundle: {bundle}  (check it: fedsynth verify {bundle} --key BOARD.pub.pem)")
    return verdict, bundle


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (budget, audit, evaluation, sign-off results).")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="HTML file to write (default RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write the run report: one self-contained HTML file (verdict, budget, audits, utility, what was DP)."""
    from fedsynth.release.report import REPORT_FILE, write_report

    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    path = write_report(run_dir, output or run_dir / REPORT_FILE)
    console.print(f"report: {path} (one file, opens offline in any browser)")


@app.command()
@user_errors
def verify(
    bundle: Annotated[Path, typer.Argument(help="A release bundle directory.")],
    key: Annotated[Path, typer.Option("--key", help="The board's public key (NAME.pub.pem), obtained from the board.")],
    site_keys: Annotated[
        Path | None, typer.Option("--site-keys", help="Directory of trusted site keys (SITE.pub.pem).")
    ] = None,
) -> None:
    """Check a bundle's signature, every file's SHA-256, that nothing was added, and site approvals."""
    from fedsynth.release.keys import load_public_key
    from fedsynth.release.verify import verify_bundle

    result = verify_bundle(bundle, load_public_key(key), site_keys)
    for note in result.notes:
        console.print(f"note: {note}")
    if not result.ok:
        for problem in result.problems:
            err_console.print(f"[bold red]FAIL[/]: {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    manifest = result.manifest or {}
    forced = manifest.get("forced")
    console.print(
        f"[bold green]OK[/]: {bundle} is signed by the given key; {len(manifest.get('files', {}))} files match "
        f"their SHA-256; run {manifest.get('run_id')}, verdict {'PASS' if manifest['verdict']['passed'] else 'FAIL'}"
        + (f", [yellow]forced: {forced['reason']}[/]" if forced else "")
    )


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
