"""A sample streamed group by group holds exactly the rows of the same sample kept in memory.

The release gate regenerates a released file with ``MCM.sample`` and compares it with the
file ``fedsynth sample`` streamed, so the two must agree row for row, not just in law.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fedsynth.data.io import write_table
from fedsynth.model.mcm import MCM
from fedsynth.model.provenance import file_sha256, model_sample_record, sidecar_path, write_synthetic
from fedsynth.model.sampler import GROUP_ROWS, ConditionalSampler


@pytest.mark.parametrize("conditions", [[], ["chf=1", "60<=age<=80"]])
def test_small_groups_stream_the_rows_of_one_draw(small_model: MCM, conditions: list[str]) -> None:
    """Many groups of 64 rows (an odd n, groups of unequal size), threaded and not."""
    resolved = small_model.resolve(conditions)
    sampler = ConditionalSampler(small_model.network_, small_model.transformer, group_rows=64)
    whole = sampler.sample(1001, resolved, seed=4)
    assert len(sampler.group_starts(1001)) - 1 == 16
    for workers in (1, 2):
        frames = list(sampler.iter_frames(1001, resolved, seed=4, workers=workers))
        assert len(frames) == 16 and max(len(f) for f in frames) <= 64
        pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), whole)


def test_sample_chunks_are_the_rows_of_sample(small_model: MCM) -> None:
    n = GROUP_ROWS + 3000  # two groups
    frames = list(small_model.sample_chunks(n, ["fstat=1"], seed=9))
    assert [len(f) for f in frames] == [n // 2, n - n // 2]
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), small_model.sample(n, ["fstat=1"], seed=9))
    (empty,) = small_model.sample_chunks(0)
    assert list(empty.columns) == small_model.schema_.names and len(empty) == 0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_streamed_file_is_the_in_memory_sample_with_its_hash(small_model: MCM, tmp_path, suffix: str) -> None:
    n, seed = GROUP_ROWS + 3000, 3
    model_dir = small_model.save(tmp_path / "model")
    record = model_sample_record(model_dir, False, n, seed, ["chf=1"])
    path = write_synthetic(small_model.sample_chunks(n, ["chf=1"], seed=seed), tmp_path / f"s{suffix}", record)
    expected = small_model.sample(n, ["chf=1"], seed=seed)
    if suffix == ".csv":
        # Byte for byte what writing the in-memory frame gives: a regenerated file hashes the same.
        assert path.read_bytes() == write_table(expected, tmp_path / "expected.csv").read_bytes()
    else:
        pd.testing.assert_frame_equal(pd.read_parquet(path), expected)
        assert pq.ParquetFile(path).num_row_groups == 2
        embedded = json.loads(pq.read_schema(path).metadata[b"fedsynth.provenance"])
        assert embedded == record  # the file cannot hold its own hash
    sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert sidecar == {**record, "sha256": file_sha256(path)}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_a_replaced_files_sidecar_is_rewritten(small_model: MCM, tmp_path) -> None:
    path = tmp_path / "s.csv"
    write_synthetic(small_model.sample(10, seed=1), path, {"n": 10, "seed": 1})
    first = json.loads(sidecar_path(path).read_text(encoding="utf-8"))["sha256"]
    write_synthetic(small_model.sample_chunks(10, seed=2), path, {"n": 10, "seed": 2})
    second = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert second["seed"] == 2 and second["sha256"] == file_sha256(path) != first
