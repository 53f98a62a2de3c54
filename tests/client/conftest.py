"""Shared for the site tests: a site directory as a hospital would lay it out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fedsynth.client.app import SCHEMA_FILE, SITE_FILE, _sites
from fedsynth.data.io import write_table
from fedsynth.data.schema import Schema


def write_site(directory: Path, frame: pd.DataFrame, schema: Schema, privacy_and_training: str) -> Path:
    """``data.csv``, the public schema and a ``site.toml`` named hospital-a with the given sections."""
    write_table(frame, directory / "data.csv")
    (directory / SCHEMA_FILE).write_text(schema.to_toml())
    (directory / SITE_FILE).write_text(
        '[site]\nname = "hospital-a"\ndata = "data.csv"\nschema = "schema.toml"\n' + privacy_and_training
    )
    return directory


@pytest.fixture()
def site_dir(whas500, tmp_path):
    """A WHAS500 site of 250 rows, epsilon 2, one local epoch; closed from the ClientApp's cache after."""
    frame, schema = whas500
    yield write_site(
        tmp_path, frame.iloc[:250], schema, "[privacy]\ntarget_epsilon = 2.0\n[training]\nlocal_epochs = 1\n"
    )
    _sites.clear()


@pytest.fixture()
def server_identity():
    """The identity Flower's runtime gives a ServerApp before it builds messages."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
