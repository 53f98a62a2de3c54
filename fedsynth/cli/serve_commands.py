"""`fedsynth serve` and `fedsynth serve-token`: the sampling service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedsynth.cli.base import (
    app,
    console,
    err_console,
    serve_token_app,
    user_errors,
)


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
    days: Annotated[float, typer.Option("--days", help="Days until the token expires (at most 366).")] = 90,
) -> None:
    """Issue a token: printed once on stdout, only its SHA-256 and expiry are stored."""
    from fedsynth.server.service.auth import add_token, read_tokens

    token = add_token(tokens_file, name, days)
    expires = next(e.expires for e in read_tokens(tokens_file) if e.name == name)
    err_console.print(f"token for '{name}', expires {expires} (shown only now; {tokens_file} keeps its SHA-256):")
    typer.echo(token)


@serve_token_app.command("list")
@user_errors
def serve_token_list(tokens_file: Annotated[Path, typer.Argument(help="Tokens file.")]) -> None:
    """Who holds a token, since when, until when (the tokens themselves are never stored)."""
    from datetime import UTC, datetime

    from fedsynth.server.service.auth import read_tokens

    now = datetime.now(UTC)
    for entry in read_tokens(tokens_file):
        state = "EXPIRED" if entry.expired(now) else "valid"
        console.print(f"{entry.name}  created {entry.created}  expires {entry.expires or 'never'}  {state}")


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
