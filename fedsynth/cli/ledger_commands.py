"""`fedsynth ledger`: back up, restore and check a site's privacy ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedsynth.cli.base import (
    SiteDirArgument,
    console,
    ledger_app,
    user_errors,
)


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
