"""Writing a table chunk by chunk: same bytes as one write, its SHA-256, and no temp file left."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fedsynth.data.io import atomic_path, remove_stale_temps, sigterm_as_exit, write_table, write_table_chunks


def _frames() -> list[pd.DataFrame]:
    return [
        pd.DataFrame({"age": [61, 70], "bmi": [25.5, 1 / 3], "sex": ["f", "m"]}),
        pd.DataFrame({"age": [80], "bmi": [31.25], "sex": ["m"]}),
    ]


def test_csv_chunks_are_the_bytes_of_one_write_and_hashed(tmp_path: Path) -> None:
    frames = _frames()
    whole = write_table(pd.concat(frames, ignore_index=True), tmp_path / "whole.csv")
    digest = write_table_chunks(iter(frames), tmp_path / "chunks.csv", ".csv")
    data = (tmp_path / "chunks.csv").read_bytes()
    assert data == whole.read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()


def test_parquet_chunks_are_row_groups_with_metadata_and_hashed(tmp_path: Path) -> None:
    path = tmp_path / "chunks.parquet"
    digest = write_table_chunks(iter(_frames()), path, ".parquet", metadata={"provenance": '{"n": 3}'})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    file = pq.ParquetFile(path)
    assert file.num_row_groups == 2
    assert file.schema_arrow.metadata[b"fedsynth.provenance"] == b'{"n": 3}'
    pd.testing.assert_frame_equal(pd.read_parquet(path), pd.concat(_frames(), ignore_index=True))


def test_no_frame_is_refused(tmp_path: Path) -> None:
    for suffix in (".csv", ".parquet"):
        with pytest.raises(ValueError, match="no rows to write"):
            write_table_chunks(iter([]), tmp_path / f"empty{suffix}", suffix)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_writers_temp_file_is_removed_at_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    stale = tmp_path / f".out.csv.{_dead_pid()}.k2x9_a1b.tmp"
    live = tmp_path / f".out.csv.{os.getpid()}.zz1.tmp"  # another writer of ours, still running
    other = tmp_path / f".out.csv.1.{_dead_pid()}.abc.tmp"  # a temp file of 'out.csv.1', not ours
    for path in (stale, live, other):
        path.write_text("half", encoding="utf-8")
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(f".out.csv.{os.getpid()}.")
        tmp.write_text("a\n1\n", encoding="utf-8")
    assert not stale.exists() and live.exists() and other.exists()
    assert target.read_text(encoding="utf-8") == "a\n1\n"
    assert remove_stale_temps(target) == []


def test_sigterm_inside_the_block_unwinds_like_ctrl_c(tmp_path: Path) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    target = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as raised, sigterm_as_exit(), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as kill returns
        pytest.fail("SIGTERM did not interrupt the block")
    assert raised.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is previous


def test_an_output_that_cannot_be_written_there_is_a_user_error_naming_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.data.io import OutputNotWritableError

    blocker = tmp_path / "notes.txt"  # a file where a directory should be
    blocker.write_text("x", encoding="utf-8")
    with (
        pytest.raises(OutputNotWritableError, match=r"notes.txt/out.csv: cannot write there"),
        atomic_path(blocker / "out.csv"),
    ):
        pytest.fail("the block must not run")
    done = CliRunner().invoke(app, ["dataset", "export", "whas500", "-o", str(blocker / "whas500.csv")])
    assert done.exit_code == 2 and "cannot write there" in done.output and "Traceback" not in done.output
    assert blocker.read_text(encoding="utf-8") == "x"  # nothing half-written
