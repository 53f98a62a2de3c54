"""`fedsynth deploy`: TLS credentials, SuperNode keys, the Flower app directory, the Fleet gateway, systemd units."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedsynth.cli.base import (
    console,
    deploy_app,
    user_errors,
)


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


@deploy_app.command("renew-server")
@user_errors
def deploy_renew_server(
    directory: Annotated[Path, typer.Argument(help="The coordinator's credential directory (with ca.key).")],
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Host name or IP (repeat); default: the current certificate's.")
    ] = None,
    days: Annotated[int, typer.Option(help="Validity of the new certificate in days.")] = 365,
) -> None:
    """Renew the SuperLink's TLS certificate with the federation's own CA (sites need nothing new)."""
    from fedsynth.deploy.certs import TLSFiles, renew_server_certificate

    cert = renew_server_certificate(directory, hosts=tuple(host or ()), days=days)
    files = TLSFiles(directory)
    console.print(f"new SuperLink certificate {files.server_cert} (key {files.server_key}), "
                  f"valid until {cert.not_valid_after_utc:%Y-%m-%d}")  # fmt: skip
    console.print("restart the SuperLink and the gateway to serve it; sites keep their ca.crt")


@deploy_app.command("app")
@user_errors
def deploy_app_directory(
    directory: Annotated[Path, typer.Argument(help="Where to write the app's pyproject.toml (created if missing).")],
) -> None:
    """Write the Flower app directory that `flwr run DIRECTORY ...` submits (the installed fedsynth's apps)."""
    from fedsynth.deploy.app_dir import write_app_dir

    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a directory: name a directory for the Flower app")
    write_app_dir(directory)
    console.print(f"Flower app: {directory / 'pyproject.toml'} (submit it with `flwr run {directory} <superlink> ...`)")


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


@deploy_app.command("systemd-coordinator")
@user_errors
def deploy_systemd_coordinator(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the unit files (e.g. /etc/systemd/system).")],
    certs: Annotated[Path, typer.Option(help="The credential directory (ca.crt, server.pem, server.key).")],
    state: Annotated[Path, typer.Option(help="The SuperLink's state directory (its database lives there).")],
    user: Annotated[str, typer.Option(help="The unprivileged user the services run as.")] = "fedsynth",
    listen: Annotated[str, typer.Option(help="The gateway's public host:port.")] = "0.0.0.0:9092",
    superlink_port: Annotated[int, typer.Option(help="The SuperLink's loopback port.")] = 9093,
    force: Annotated[bool, typer.Option("--force", help="Replace existing unit files.")] = False,
) -> None:
    """Write systemd units for the SuperLink and the Fleet gateway, with this installation's paths."""
    from fedsynth.deploy.systemd import coordinator_units, write_units

    units = coordinator_units(certs, state, user=user, listen=listen, superlink_port=superlink_port)
    for path in write_units(out_dir, units, overwrite=force):
        console.print(f"wrote {path}")
    console.print("then: systemctl daemon-reload && systemctl enable --now fedsynth-superlink fedsynth-gateway")


@deploy_app.command("systemd-site")
@user_errors
def deploy_systemd_site(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the unit file (e.g. /etc/systemd/system).")],
    name: Annotated[str, typer.Option(help="The site's name (it names the unit).")],
    site_dir: Annotated[Path, typer.Option(help="The site directory (site.toml, schema.toml, the data).")],
    superlink: Annotated[str, typer.Option(help="HOST:PORT of the coordinator's gateway.")],
    root_certificates: Annotated[Path, typer.Option(help="The federation's CA certificate (ca.crt).")],
    auth_key: Annotated[Path, typer.Option(help="The site's SuperNode private key.")],
    user: Annotated[str, typer.Option(help="The unprivileged user the service runs as.")] = "fedsynth",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing unit file.")] = False,
) -> None:
    """Write a systemd unit for a site's SuperNode that runs `fedsynth site check` before starting."""
    from fedsynth.deploy.systemd import site_units, write_units

    units = site_units(name, site_dir, superlink, root_certificates, auth_key, user=user)
    for path in write_units(out_dir, units, overwrite=force):
        console.print(f"wrote {path}")
    console.print(f"then: systemctl daemon-reload && systemctl enable --now fedsynth-supernode-{name}")
