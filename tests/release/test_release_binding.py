"""The release binds the data: `fedsynth signoff` signs only the very rows the sites audited,
regenerated from the run's model; real rows, edited rows, another seed's rows and a model whose
DP flag was flipped are refused (or FAIL) and no bundle is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app, console, err_console
from fedsynth.data.datasets import load_dataset
from fedsynth.model.generators import load_generator
from fedsynth.model.mcm import MCM
from fedsynth.model.provenance import model_sample_record, sidecar_path, write_synthetic
from fedsynth.model.rows_digest import rows_digest
from fedsynth.release.binding import ReleaseFileError, check_release_file
from fedsynth.release.policy import load_policy
from fedsynth.release.signoff import evaluate_policy
from fedsynth.server.run import RunDirectory
from tests.server.test_evidence import claim_dp


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages on one line each (rich wraps at 80 columns in a test runner)."""
    for printer in (console, err_console):
        monkeypatch.setattr(printer, "width", 1000)


def signoff(run: Path, key: Path, policy: Path | None = None):
    return CliRunner().invoke(
        app, ["signoff", str(run), "--key", str(key), *(["--policy", str(policy)] if policy else [])]
    )


def assert_refused(result, run: Path, *patterns: str) -> None:
    """Exit 2, one error naming the problem, and nothing written: no verdict, no bundle."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for pattern in patterns:
        assert pattern in result.output, result.output
    assert not (run / "release").exists() and not (run / "signoff.json").exists()
    assert not list(run.glob(".release.*"))


def audited(run: Path) -> dict:
    return json.loads((run / "audit.json").read_text())["sample"]


def test_the_audited_sample_regenerates_and_every_site_audited_it(demo_run: Path) -> None:
    sample = audited(demo_run)
    release = check_release_file(demo_run)
    assert release.sample == sample
    expected = load_generator(demo_run / "model").sample(sample["n"], sample["conditions"], seed=sample["seed"])
    assert release.rows_sha256 == rows_digest(expected)
    audit = json.loads((demo_run / "audit.json").read_text())
    assert {s["sample"]["sha256"] for s in audit["sites"]} == {release.rows_sha256}
    assert _rules(evaluate_policy(demo_run, load_policy()))["evidence"].passed


def test_an_evaluation_of_samples_of_another_size_than_the_release_fails_the_evidence(demo_run: Path) -> None:
    """Hazard ratios and distances read on a sample smaller (or larger) than the release carry more
    (or less) sampling noise than it has: the verdict must be about data of the released size."""
    path = demo_run / "evaluation.json"
    recorded = json.loads(path.read_text())
    size = audited(demo_run)["n"]
    assert recorded["sample"]["n"] == size and {s["sample"]["n"] for s in recorded["sites"]} == {size}
    assert _rules(evaluate_policy(demo_run, load_policy()))["evidence"].passed
    smaller = {**recorded, "sample": {"seed": 0, "n": size // 3}}
    path.write_text(json.dumps(smaller))
    rule = _rules(evaluate_policy(demo_run, load_policy()))["evidence"]
    assert not rule.passed and f"evaluated samples of {size // 3} rows, but synthetic.csv holds {size}" in rule.reason
    assert "re-run `fedsynth evaluate RUN_DIR`" in rule.reason
    # The document's own figure edited to match is not enough: each site names the size it drew.
    site_edited = {
        **recorded,
        "sites": [{**recorded["sites"][0], "sample": {"seed": 0, "n": size // 3}}, *recorded["sites"][1:]],
    }
    path.write_text(json.dumps(site_edited))
    rule = _rules(evaluate_policy(demo_run, load_policy()))["evidence"]
    assert not rule.passed and "site-0 evaluated samples of another size" in rule.reason
    older = {k: v for k, v in recorded.items() if k != "sample"}
    path.write_text(json.dumps(older))
    rule = _rules(evaluate_policy(demo_run, load_policy()))["evidence"]
    assert not rule.passed and "does not say how many synthetic rows the sites evaluated" in rule.reason


def _rules(verdict) -> dict:
    return {rule.name: rule for rule in verdict.rules}


def test_real_training_rows_as_synthetic_are_refused(demo_run: Path, board_keys) -> None:
    # The hostile tester's swap: the real rows (in the model's columns) as synthetic.csv.
    frame, _ = load_dataset("whas500")
    real = frame[load_generator(demo_run / "model").schema_.names].iloc[: audited(demo_run)["n"]]
    real.to_csv(demo_run / "synthetic.csv", index=False)
    assert_refused(signoff(demo_run, board_keys[0]), demo_run, "does not match the SHA-256", "fedsynth sample")

    # ... and with the sidecar's hash recomputed too: the rows are not the model's sample.
    record = json.loads(sidecar_path(demo_run / "synthetic.csv").read_text())
    write_synthetic(real, demo_run / "synthetic.csv", {k: v for k, v in record.items() if k != "sha256"})
    result = signoff(demo_run, board_keys[0])
    assert_refused(result, demo_run, "row 1, column", "is not that sample", "-n ", "--seed ")
    rule = _rules(evaluate_policy(demo_run, load_policy()))["evidence"]
    assert not rule.passed and "is not that sample" in rule.reason


def test_a_synthetic_file_edited_after_sampling_is_refused(demo_run: Path, board_keys) -> None:
    rows = pd.read_csv(demo_run / "synthetic.csv")
    rows.loc[3, "age"] = rows.loc[3, "age"] + 1
    rows.to_csv(demo_run / "synthetic.csv", index=False)
    assert_refused(signoff(demo_run, board_keys[0]), demo_run, "synthetic.csv does not match the SHA-256")
    sidecar_path(demo_run / "synthetic.csv").unlink()
    assert_refused(signoff(demo_run, board_keys[0]), demo_run, "has no provenance sidecar")
    with pytest.raises(ReleaseFileError, match="has no provenance sidecar"):
        check_release_file(demo_run)


def test_a_file_sampled_with_another_seed_than_audited_fails_and_the_audited_one_passes(
    demo_run: Path, board_keys, demo_policy_path: Path
) -> None:
    sample = audited(demo_run)
    model = str(demo_run / "model")
    out = str(demo_run / "synthetic.csv")
    made = CliRunner().invoke(
        app, ["sample", model, "-n", str(sample["n"]), "--seed", str(sample["seed"] + 7), "-o", out, "--force"]
    )
    assert made.exit_code == 0, made.output
    result = signoff(demo_run, board_keys[0], demo_policy_path)
    assert result.exit_code == 1 and "no release bundle" in result.output and not (demo_run / "release").exists()
    rule = _rules(evaluate_policy(demo_run, load_policy()))["evidence"]
    assert not rule.passed and "but the sites audited" in rule.reason
    assert f"-n {sample['n']} --seed {sample['seed']}" in rule.reason  # how to make a releasable file

    # The fix the message gives: the audited n and seed. The file then regenerates and passes.
    made = CliRunner().invoke(
        app, ["sample", model, "-n", str(sample["n"]), "--seed", str(sample["seed"]), "-o", out, "--force"]
    )
    assert made.exit_code == 0, made.output
    result = signoff(demo_run, board_keys[0], demo_policy_path)  # the demo run passes only a policy at its level
    assert result.exit_code == 0, result.output
    assert (demo_run / "release" / "synthetic.csv").read_bytes() == (demo_run / "synthetic.csv").read_bytes()


def test_a_flipped_dp_flag_is_refused_by_signoff(demo_run: Path, board_keys, small_model: MCM) -> None:
    # A non-DP `fit` model as RUN_DIR/model, flag flipped, manifest recomputed, and a file that is
    # truly its sample with a sidecar claiming DP: everything but the run's records agrees.
    shutil.rmtree(demo_run / "model")
    claim_dp(small_model.save(demo_run / "model"))
    sample = audited(demo_run)
    model = load_generator(demo_run / "model")
    record = model_sample_record(demo_run / "model", True, sample["n"], sample["seed"], sample["conditions"])
    chunks = model.sample_chunks(sample["n"], sample["conditions"], seed=sample["seed"])
    write_synthetic(chunks, demo_run / "synthetic.csv", record)
    assert check_release_file(demo_run).sample == sample  # the file itself is the model's output
    result = signoff(demo_run, board_keys[0])
    assert_refused(result, demo_run, "says the model is differentially private", "records no round")
    rule = _rules(evaluate_policy(demo_run, load_policy()))["evidence"]
    assert not rule.passed and "RUN_DIR/model is not shown to be trained with DP" in rule.reason
    assert RunDirectory(demo_run).checkpoint_records()  # the run's real record names other weights
