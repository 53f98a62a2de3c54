"""Shared for the site tests: a site directory as a hospital would lay it out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedsynth.client.app import SCHEMA_FILE, SITE_FILE
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
