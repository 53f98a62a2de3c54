"""`fedsynth site status|check SITE_DIR`: run at a hospital, on its own site directory, reading only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fedsynth.cli.base import SiteDirArgument, console, site_app, user_errors
from fedsynth.errors import UserError

if TYPE_CHECKING:
    from fedsynth.client.site_status import SiteStatus

OUTCOME_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}


def _when(created: str | None) -> str:
    """A ledger time (ISO, UTC) to the second: 2026-06-01 14:02:11."""
    return created[:19].replace("T", " ") if created else "-"


def _ledger_rows(status: SiteStatus) -> list[tuple[str, str]]:
    from fedsynth.client.site_status import FAILED, NEVER_TRAINED

    ledger = status.ledger
    if ledger.state == FAILED:
        return [
            ("ledger", f"[bold red]FAILED verification[/]: {escape(str(ledger.problem))}"),
            ("epsilon spent", "unknown: the ledger does not verify"),
        ]
    delta = ledger.target_delta if ledger.target_delta is not None else status.target_delta
    delta_text = "1/n^1.1 of the training rows" if delta is None else f"{delta:g}"
    rows = [
        ("budget", f"epsilon {status.budget_epsilon:g}, delta {delta_text}"),
        (
            "ledger",
            "never trained: no ledger yet" if ledger.state == NEVER_TRAINED else f"verified, {ledger.entries} entries",
        ),
        ("epsilon spent", f"{ledger.epsilon:.4f} (RDP, composed over the ledger's entries)"),
        ("epsilon remaining", f"{status.remaining_epsilon:.4f} of {status.budget_epsilon:g}"),
    ]
    if ledger.target_epsilon is not None and ledger.target_epsilon != status.target_epsilon:
        rows.append(("[yellow]note[/]", f"site.toml sets epsilon {status.target_epsilon:g}; the ledger's is binding"))
    return rows


def _data_rows(status: SiteStatus) -> list[tuple[str, str]]:
    data = status.data
    rows = [("data", escape(str(data.path)))]
    if data.file_sha256:
        rows.append(("data file sha256", data.file_sha256))
    if data.problem:
        rows.append(("[bold red]data problem[/]", escape(data.problem)))
    if data.rows_sha256:
        rows.append(("data rows sha256", f"{data.rows_sha256} ({data.n_rows} valid rows)"))
    if data.split_sha256 is None:
        rows.append(("split", "no split yet (made at the first round)"))
    else:
        verdict = {
            True: "[green]matches the data[/]",
            False: "[bold red]DIFFERS from the data[/]: the site refuses to train on them",
            None: "not compared: the data cannot be read",
        }[data.matches_split]
        rows.append(("split", f"{verdict} (split {_when(data.split_created)})"))
        rows.append(("split rows sha256", data.split_sha256))
    return rows


def _print_status(status: SiteStatus) -> None:
    table = Table(title=f"site {escape(status.name)}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    audits = status.audits
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(audits.by_kind.items()))
    for row in [
        ("site directory", escape(status.site_dir)),
        *_ledger_rows(status),
        *_data_rows(status),
        (
            "audits answered",
            f"{audits.answered} of {audits.cap} (privacy.max_audits)" + (f": {kinds}" if kinds else ""),
        ),
    ]:
        table.add_row(*row)
    console.print(table)
    if status.ledger.runs:
        runs = Table(title="runs in the ledger", title_justify="left")
        for column in ("run id", "rounds", "last round", "last round at (UTC)", "marginal release"):
            runs.add_column(column, overflow="fold")
        for run in status.ledger.runs:
            release = "-"
            if run.marginals_time:
                release = f"{_when(run.marginals_time)} (noise {run.marginals_noise_multiplier:.3g})"
                release += "" if run.marginals_stored else "; tables not stored (interrupted)"
            runs.add_row(
                escape(run.run_id), str(run.rounds), str(run.last_round or "-"), _when(run.last_round_time), release
            )
        console.print(runs)


@site_app.command("status")
@user_errors
def site_status_command(
    site_dir: SiteDirArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """The site's privacy budget, verified ledger, runs, data digest and audits; reads only, writes nothing."""
    from fedsynth.client.site_status import site_status

    status = site_status(site_dir)
    if as_json:
        typer.echo(json.dumps(status.to_dict(), indent=1))
    else:
        _print_status(status)


@site_app.command("check")
@user_errors
def site_check_command(
    site_dir: SiteDirArgument,
    superlink: Annotated[
        str | None, typer.Option("--superlink", help="HOST:PORT the SuperNode will connect to (the gateway).")
    ] = None,
    root_certificates: Annotated[
        Path | None, typer.Option("--root-certificates", help="The federation's CA certificate (ca.crt).")
    ] = None,
    auth_key: Annotated[
        Path | None, typer.Option("--auth-key", help="This SuperNode's private key (NAME.key).")
    ] = None,
) -> None:
    """Pre-flight before starting the SuperNode: one PASS/WARN/FAIL line per check; exit 2 on any FAIL."""
    from fedsynth.deploy.site_check import FAIL, PASS, check_site

    checks = check_site(site_dir, superlink=superlink, root_certificates=root_certificates, auth_key=auth_key)
    for check in checks:
        line = f"[{OUTCOME_STYLE[check.outcome]}]{check.outcome}[/] {check.name}: {escape(check.reason)}"
        if check.fix and check.outcome != PASS:
            line += f"; fix: {escape(check.fix)}"
        console.print(line, soft_wrap=True, highlight=False)
    failed = [check.name for check in checks if check.outcome == FAIL]
    if failed:
        raise UserError(
            f"{len(failed)} of {len(checks)} checks failed ({', '.join(failed)}); "
            "fix them before starting the SuperNode"
        )
    warned = sum(check.outcome != PASS for check in checks)
    console.print(f"all {len(checks)} checks passed" + (f", {warned} with a warning" if warned else ""))
