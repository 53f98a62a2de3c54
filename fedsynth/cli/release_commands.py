"""`fedsynth signoff`, `report`, `verify` and `fedsynth release`: the release gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedsynth.cli.base import (
    app,
    console,
    err_console,
    release_app,
    user_errors,
)


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
