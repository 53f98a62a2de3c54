from __future__ import annotations

import json

import pandas as pd
import pytest

from fedsynth.model.generator import NotFittedError
from fedsynth.model.generators import load_generator
from fedsynth.model.mcm import MCM
from fedsynth.model.persistence import MANIFEST, META, SCHEMA, WEIGHTS, ModelFileError


def test_round_trip_gives_identical_samples(small_model: MCM, tmp_path) -> None:
    path = small_model.save(tmp_path / "model")
    loaded = load_generator(path)
    assert loaded.schema_ == small_model.schema_
    assert loaded.config == small_model.config
    assert loaded.differentially_private_ is False
    pd.testing.assert_frame_equal(loaded.sample(500, ["sho=1"], seed=4), small_model.sample(500, ["sho=1"], seed=4))


@pytest.mark.parametrize("name", [WEIGHTS, SCHEMA, META])
def test_flipped_byte_in_any_file_is_refused_by_name(small_model: MCM, tmp_path, name: str) -> None:
    path = small_model.save(tmp_path / "model")
    target = path / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=rf"{name} does not match its SHA-256"):
        load_generator(path)


def test_missing_or_corrupt_manifest(small_model: MCM, tmp_path) -> None:
    path = small_model.save(tmp_path / "model")
    (path / MANIFEST).write_text("{not json")
    with pytest.raises(ModelFileError, match="corrupted"):
        load_generator(path)
    (path / MANIFEST).unlink()
    with pytest.raises(ModelFileError, match="not a fedsynth model directory"):
        load_generator(path)
    with pytest.raises(ModelFileError, match="not found"):
        load_generator(tmp_path / "nowhere")


def test_refuses_to_overwrite_without_permission(small_model: MCM, tmp_path) -> None:
    path = small_model.save(tmp_path / "model")
    with pytest.raises(FileExistsError, match="--force"):
        small_model.save(path)
    small_model.save(path, overwrite=True)
    assert json.loads((path / MANIFEST).read_text())["files"].keys() == {WEIGHTS, SCHEMA, META}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging directories left


def test_unfitted_model_cannot_sample() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        MCM().sample(3)
