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


def train_instruction(schema: Schema, server_round: int = 1, planned_rounds: int = 2, node: int = 1, config=None):  # noqa: ANN001, ANN201
    """A coordinator's train instruction for ``node``: fresh global weights of ``config`` (a small MCM)."""
    import json

    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from fedsynth.client.app import WEIGHTS_LAYOUT
    from fedsynth.client.packed_weights import layout_of, layout_to_json, pack
    from fedsynth.model.config import MCMConfig
    from fedsynth.model.generators import config_to_dict, new_generator

    config = config or MCMConfig(hidden=16, n_bins=16)
    state = new_generator(config).build(schema).network_.state_dict()
    settings = {
        "run-id": "test-run",
        "server-round": server_round,
        "planned-rounds": planned_rounds,
        "model-config": json.dumps(config_to_dict(config)),
        WEIGHTS_LAYOUT: layout_to_json(layout_of(state)),
    }
    content = RecordDict({"arrays": pack(state), "config": ConfigRecord(settings)})
    return Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN, group_id=str(server_round))
