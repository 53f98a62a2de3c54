"""`fedsynth sample` streams: the rows of ``MCM.sample``, their hash in the sidecar, and a kill
leaves neither a temporary file nor a half-written output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.data.io import write_table
from fedsynth.model.mcm import MCM
from fedsynth.model.provenance import file_sha256, sidecar_path
from fedsynth.model.sampler import GROUP_ROWS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, small_model: MCM) -> Path:
    return small_model.save(tmp_path_factory.mktemp("streaming") / "model")


def _sample(*args: object) -> object:
    return CliRunner().invoke(app, ["sample", *map(str, args)])


def test_the_file_is_model_sample_and_the_sidecar_holds_its_hash(model_dir: Path, small_model: MCM, tmp_path) -> None:
    n, out = GROUP_ROWS + 1000, tmp_path / "s.csv"
    result = _sample(model_dir, "-n", n, "--seed", 5, "--where", "chf=1", "-o", out)
    assert result.exit_code == 0, result.output
    expected = write_table(small_model.sample(n, ["chf=1"], seed=5), tmp_path / "expected.csv")
    assert out.read_bytes() == expected.read_bytes()
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert record["sha256"] == file_sha256(out) and (record["n"], record["seed"]) == (n, 5)


def _temps(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


def _start_and_kill(model_dir: Path, out: Path, sig: int, *extra: str) -> int:
    """Start a large `fedsynth sample` in its own process; send ``sig`` once it is writing."""
    command = [sys.executable, "-m", "fedsynth.cli", "sample", str(model_dir), "-n", "3000000", "-o", str(out), *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(path.stat().st_size > 0 for path in _temps(out.parent) if path.exists()):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the sample never started writing"
            time.sleep(0.05)
        process.send_signal(sig)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_terminated_sample_leaves_nothing(model_dir: Path, tmp_path, sig: int) -> None:
    out = tmp_path / "big.csv"
    status = _start_and_kill(model_dir, out, sig)
    assert status != 0
    if sig == signal.SIGTERM:
        assert status == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == [], "a killed sample left files behind"


def test_a_killed_force_run_keeps_the_previous_file_and_its_sidecar(model_dir: Path, tmp_path) -> None:
    out = tmp_path / "s.parquet"
    assert _sample(model_dir, "-n", 50, "-o", out).exit_code == 0
    before = (out.read_bytes(), sidecar_path(out).read_text(encoding="utf-8"))
    assert _start_and_kill(model_dir, out, signal.SIGTERM, "--force") == 128 + signal.SIGTERM
    assert (out.read_bytes(), sidecar_path(out).read_text(encoding="utf-8")) == before
    assert json.loads(before[1])["sha256"] == file_sha256(out)
    assert _temps(tmp_path) == []


def test_sigkill_leaves_a_temp_file_the_next_run_removes(model_dir: Path, tmp_path) -> None:
    out = tmp_path / "big.csv"
    assert _start_and_kill(model_dir, out, signal.SIGKILL) == -signal.SIGKILL
    (stale,) = _temps(tmp_path)  # SIGKILL runs no cleanup: the temporary file is all there is
    assert not out.exists() and stale.name.startswith(".big.csv.")
    result = _sample(model_dir, "-n", 10, "-o", out)
    assert result.exit_code == 0, result.output
    assert _temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv", "big.csv.provenance.json"]
    assert os.path.getsize(out) > 0


def test_a_run_directory_samples_its_global_model(small_model: MCM, whas_split, tmp_path) -> None:
    import pandas as pd

    from tests.server.test_evidence import calibrated_run

    run_dir = calibrated_run(tmp_path / "run", small_model, whas_split[0])
    result = _sample(run_dir, "-n", 300, "-o", tmp_path / "out.csv", "--seed", 5)
    assert result.exit_code == 0, result.output
    written = pd.read_csv(tmp_path / "out.csv")
    expected = MCM.load(run_dir / "model").sample(300, seed=5)
    assert len(written) == 300 and MCM.load(run_dir / "model").calibration_ is not None
    pd.testing.assert_frame_equal(written, expected, check_dtype=False, atol=1e-6)
    assert json.loads(sidecar_path(tmp_path / "out.csv").read_text())["differentially_private"] is True
