"""The Flower app directory that ``flwr run`` submits: fedsynth's installed ServerApp and ClientApp."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from fedsynth import __version__
from fedsynth.server.app_config import APP_CONFIG


def write_app_dir(app_dir: Path) -> None:
    """Write ``app_dir/pyproject.toml`` naming fedsynth's installed ServerApp and ClientApp.

    Generated rather than taken from a source checkout so that it works wherever fedsynth is
    installed; the FAB carries only this pyproject, the code comes from the installation.
    """
    app_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "project": {
            "name": "fedsynth",
            "version": __version__,
            "description": "fedsynth federated DP training",
            "license": "Apache-2.0",
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedsynth",
                    "components": {"serverapp": "fedsynth.server.app:app", "clientapp": "fedsynth.client.app:app"},
                    "config": dict(APP_CONFIG),
                }
            }
        },
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(document))
