"""DP status is evidence: a model is DP only where its run's records show the round that made
exactly its weights trained within every site's budget; model.json's flag alone is refused."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.model.generators import load_generator
from fedsynth.model.mcm import MCM
from fedsynth.model.persistence import MANIFEST, META
from fedsynth.server.evidence import DPClaimError, check_dp_claim, dp_evidence
from fedsynth.server.run import RunDirectory


def claim_dp(model_dir: Path) -> Path:
    """What the hostile tester did: set the flag in model.json and recompute the manifest hash."""
    meta = json.loads((model_dir / META).read_text())
    meta["differentially_private"] = True
    (model_dir / META).write_text(json.dumps(meta, indent=2))
    manifest = json.loads((model_dir / MANIFEST).read_text())
    manifest["files"][META] = hashlib.sha256((model_dir / META).read_bytes()).hexdigest()
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return model_dir


def budget_record(round_: int, site: str, epsilon: float, target: float = 4.0) -> dict:
    scalars = {"delta": 1e-3, "noise-multiplier": 1.1, "sample-rate": 0.1, "steps": 10, "num-examples": 300}
    return {"round": round_, "site": site, "status": "ok", "target-epsilon": target, "epsilon": epsilon, **scalars}


def federated_run(root: Path, model: MCM, epsilons: tuple[float, float] = (2.5, 2.25)) -> Path:
    """A run whose coordinator recorded two sites' replies for round 1, then saved and published
    round 1's checkpoint (RunDirectory's own code, as aggregate_train calls it)."""
    run = RunDirectory(root)
    run.initialise("run-evidence", model.schema_, {"rounds": 1})
    run.append_budget([budget_record(1, "site-a", epsilons[0]), budget_record(1, "site-b", epsilons[1])])
    info = {"round": 1, "sites": ["site-a", "site-b"]}
    run.publish_model(run.save_checkpoint(1, model.network_.state_dict(), model.schema_, model.config, info))
    return root


def trained_elsewhere(model: MCM) -> MCM:
    """A model with other weights than ``model`` (the federation's, not the `fit` model's)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in other.network_.parameters():
            parameter.add_(0.01)
    return other


def test_a_published_model_and_its_checkpoint_are_dp_by_their_records(small_model: MCM, tmp_path: Path) -> None:
    run_dir = federated_run(tmp_path / "run", small_model)
    (record,) = RunDirectory(run_dir).checkpoint_records()
    assert record["round"] == 1 and record["sites"] == ["site-a", "site-b"] and len(record["weights_sha256"]) == 64
    for model_dir in (run_dir / "model", run_dir / "checkpoints" / "round-0001"):
        evidence = check_dp_claim(model_dir, load_generator(model_dir))
        assert evidence.differentially_private and evidence.round == 1 and evidence.epsilon == 2.5
        assert "2 site(s) trained it with DP-SGD" in evidence.reason


def test_a_flipped_flag_with_a_recomputed_manifest_is_refused_by_sample_and_serve(
    small_model: MCM, tmp_path: Path
) -> None:
    # A non-DP `fit` model put where a run's model goes, its flag flipped and its manifest redone.
    run_dir = federated_run(tmp_path / "run", trained_elsewhere(small_model))
    shutil.rmtree(run_dir / "model")
    small_model.save(run_dir / "model")
    claim_dp(run_dir / "model")
    assert load_generator(run_dir / "model").differentially_private_  # the manifest check is satisfied
    assert not dp_evidence(run_dir / "model").differentially_private
    with pytest.raises(DPClaimError, match="checkpoints.jsonl records no round that produced these weights"):
        check_dp_claim(run_dir / "model", load_generator(run_dir / "model"))

    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(app, ["sample", str(run_dir / "model"), "-n", "5", "-o", str(out)])
    assert result.exit_code == 2 and "says the model is differentially private" in result.output
    assert "Traceback" not in result.output and not out.exists()

    from fedsynth.server.service import ServiceConfig, create_app
    from fedsynth.server.service.auth import add_token
    from fedsynth.server.service.served import ServiceStartError

    add_token(tmp_path / "tokens.json", "alice")
    settings = ServiceConfig(tokens=tmp_path / "tokens.json", allow_non_dp=True)
    with pytest.raises(ServiceStartError, match="says the model is differentially private"):
        create_app(run_dir, settings)  # not even as a non-DP model: its label cannot be trusted


def test_a_dp_model_outside_its_run_or_over_budget_is_not_dp(small_model: MCM, tmp_path: Path) -> None:
    run_dir = federated_run(tmp_path / "run", small_model)
    copied = Path(shutil.copytree(run_dir / "model", tmp_path / "elsewhere" / "model"))
    with pytest.raises(DPClaimError, match="not the model or a checkpoint of a federated run directory"):
        check_dp_claim(copied, load_generator(copied))
    over = federated_run(tmp_path / "over", small_model, epsilons=(2.5, 4.2))
    evidence = dp_evidence(over / "model")
    assert not evidence.differentially_private and "site-b in round 1: epsilon 4.2 is over its target 4" in (
        evidence.reason
    )
    # A run without the record (trained before it was kept): no evidence, so its DP claim is refused.
    (run_dir / "checkpoints.jsonl").unlink()
    with pytest.raises(DPClaimError, match="has no checkpoints.jsonl"):
        check_dp_claim(run_dir / "model", load_generator(run_dir / "model"))
    # The honest non-DP label of a `fit` model stands, and `sample` writes it with its notice.
    fitted = small_model.save(tmp_path / "fitted")
    assert not check_dp_claim(fitted, load_generator(fitted)).differentially_private
    out = tmp_path / "fit.csv"
    result = CliRunner().invoke(app, ["sample", str(fitted), "-n", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_name("fit.csv.provenance.json").read_text())["differentially_private"] is False


def test_sample_labels_a_model_dp_only_with_its_evidence(small_model: MCM, tmp_path: Path) -> None:
    run_dir = federated_run(tmp_path / "run", small_model)
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(app, ["sample", str(run_dir / "model"), "-n", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_name("rows.csv.provenance.json").read_text())
    assert record["differentially_private"] is True and "round 1 of run" in record["dp_evidence"]


def calibrated_run(root: Path, model: MCM, frame, with_release_lines: bool = True) -> Path:
    """A run whose two sites released DP marginal tables (round 0 lines) before round 1: the
    published model carries the run's consistent tables."""
    from fedsynth.marginals.tables import MarginalSpec, count_tables, tables_to_json

    spec = MarginalSpec.from_schema(model.schema_)
    tables = json.loads(tables_to_json(count_tables(frame, spec)))
    run = RunDirectory(root)
    run.initialise("run-evidence", model.schema_, {"rounds": 1})
    sites = [{"site": s, "epsilon": 0.8, "noise_multiplier": 3.0} for s in ("site-a", "site-b")]
    document = {"complete": True, "run_id": "run-evidence", "spec": spec.to_dict(), "sites": sites,
                "noisy_tables": tables, "consistent_tables": tables}  # fmt: skip
    (root / "marginals.json").write_text(json.dumps(document))
    if with_release_lines:
        release = {"mechanism": "marginals", "sample-rate": 1.0, "steps": 1}
        run.append_budget([{**budget_record(0, s["site"], 0.8), **release} for s in sites])
    run.append_budget([budget_record(1, "site-a", 2.5), budget_record(1, "site-b", 2.25)])
    info = {"round": 1, "sites": ["site-a", "site-b"]}
    run.publish_model(run.save_checkpoint(1, model.network_.state_dict(), model.schema_, model.config, info))
    return root


def test_a_model_calibrated_to_its_runs_release_is_dp_and_to_other_tables_is_not(
    small_model: MCM, whas_split, tmp_path: Path
) -> None:
    run_dir = calibrated_run(tmp_path / "run", small_model, whas_split[0])
    published = load_generator(run_dir / "model")
    assert published.calibration_ is not None
    assert dp_evidence(run_dir / "model", published).differentially_private
    # The same weights calibrated to other tables (here the holdout's exact counts: not a DP release).
    from fedsynth.marginals.tables import MarginalSpec, count_tables
    from fedsynth.marginals.target import MarginalTarget

    spec = MarginalSpec.from_schema(published.schema_)
    published.calibrate_to(MarginalTarget(spec, count_tables(whas_split[1], spec)))
    published.save(run_dir / "model", overwrite=True)
    evidence = dp_evidence(run_dir / "model")
    assert not evidence.differentially_private and "not" in evidence.reason and "marginals.json" in evidence.reason


def test_tables_without_the_sites_release_lines_are_not_dp(small_model: MCM, whas_split, tmp_path: Path) -> None:
    run_dir = calibrated_run(tmp_path / "run", small_model, whas_split[0], with_release_lines=False)
    evidence = dp_evidence(run_dir / "model")
    assert not evidence.differentially_private and "no DP marginal release of site-a, site-b" in evidence.reason
