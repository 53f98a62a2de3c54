"""A real DP demo run's evidence, board keys, and a signed bundle made from them.

``data/demo_run.tar.gz`` is what ``fedsynth demo -o RUN`` (WHAS500 over 3 sites, epsilon 4,
3 rounds, hazard survival head; recorded 2026-12-03, when the sites began to audit the release
sample itself) wrote: run.json, schema.toml, budget.json, budget.jsonl and checkpoints.jsonl
(the records DP status is decided from), audit.json (with the audited ``sample``),
evaluation.json, the global model and synthetic.csv (that very sample) with its provenance
(site data, checkpoint directories, plots and the bundle left out). A
recording, not a new Ray simulation per test session: the default policy's thresholds were
checked against exactly these numbers, and DP noise is OS-random, so a fresh run differs.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from fedsynth.release.bundle import sign_off
from fedsynth.release.keys import keygen, load_private_key
from fedsynth.release.policy import default_policy_path, load_policy

RECORDED = Path(__file__).parent / "data" / "demo_run.tar.gz"


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recorded")
    with tarfile.open(RECORDED) as archive:
        archive.extractall(root, filter="data")
    return root / "demo_run"


@pytest.fixture()
def demo_run(recorded_run: Path, tmp_path: Path) -> Path:
    """A fresh, writable copy of the recorded DP demo run."""
    return Path(shutil.copytree(recorded_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def board_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("keys"), "board")


@pytest.fixture(scope="session")
def signed_bundle(recorded_run: Path, board_keys: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle of the recorded demo run under the default policy (tests copy it before changing it)."""
    run = Path(shutil.copytree(recorded_run, tmp_path_factory.mktemp("bundled") / "run"))
    verdict, bundle = sign_off(run, load_policy(), default_policy_path().read_text(), load_private_key(board_keys[0]))
    assert verdict.passed and bundle is not None
    return bundle


@pytest.fixture(scope="session")
def current_evaluation_run(recorded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorded run with an evaluation.json of this fedsynth version (histograms, correlation
    matrices, calibration curves), computed by the real site evaluation: the recording's DP
    synthetic rows against WHAS500's real rows split as one site's train and holdout."""
    import json

    import pandas as pd

    from fedsynth.data.datasets import load_dataset
    from fedsynth.data.split import train_holdout_split
    from fedsynth.evaluation.site_evaluation import evaluate_synthetic
    from fedsynth.server.evaluation import worst_over_sites
    from fedsynth.server.site_queries import site_query_document

    run = Path(shutil.copytree(recorded_run, tmp_path_factory.mktemp("current") / "run"))
    frame, schema = load_dataset("whas500")
    train, holdout = train_holdout_split(frame, 0.2, seed=0)
    synthetic = pd.read_csv(run / "synthetic.csv")
    recorded = json.loads((run / "evaluation.json").read_text())
    site = {"site": "site-0", "query_number": 2, "model_sha256": recorded["model_sha256"]}
    site |= evaluate_synthetic(train, holdout, synthetic, schema, [750.0])
    document = site_query_document([site], [], 0, worst_over_sites, horizons=[750.0])
    (run / "evaluation.json").write_text(json.dumps(document))
    return run
