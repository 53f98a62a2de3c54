"""The `fedsynth` command line: thin wrappers over the packages, with clear errors.

Every command validates all of its inputs before it writes anything; a user error prints
one readable message (no traceback) and exits with status 2. One module per command group;
importing this package registers them all on ``app``.
"""

from fedsynth.cli import (  # noqa: F401 - each module registers its commands on ``app``
    data_commands,
    demo_command,
    deploy_commands,
    federation_commands,
    init_command,
    ledger_commands,
    model_commands,
    release_commands,
    serve_commands,
    site_commands,
)
from fedsynth.cli.base import app, console, err_console

__all__ = ["app", "console", "err_console", "main"]


def main() -> None:  # pragma: no cover - console entry
    app()
