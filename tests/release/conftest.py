"""A real DP demo run's evidence, board keys, and a signed bundle made from them.

``data/demo_run.tar.gz`` is what ``fedsynth demo -o RUN`` (WHAS500 over 3 sites, epsilon 4,
3 rounds, hazard survival head; recorded 2026-12-03, when the sites began to audit the release
sample itself) wrote: run.json, schema.toml, budget.json, budget.jsonl and checkpoints.jsonl
(the records DP status is decided from), audit.json (with the audited ``sample``),
evaluation.json, the global model and synthetic.csv (that very sample) with its provenance
(site data, checkpoint directories, plots and the bundle left out). A
recording, not a new Ray simulation per test session: DP noise is OS-random, so a fresh run
differs. Its evaluation.json was made again on 2026-12-05, when the sites began to evaluate
samples of the release's size: `fedsynth.client.evaluation.run_site_evaluation` of the recorded
model at the recorded run's three sites (the bundled WHAS500, split as that run split it:
`partition(frame, 3, "iid", 0)` and each site's default holdout), query seed 0, n = the audited
release's 401 rows. Its coordinator summary (``worst``, with the pooled fidelity figures) is
recomputed from those site replies, as this fedsynth version writes it.

That run's samples have near-uniform marginals and its sites 33 holdout rows: the default policy
FAILS it (fidelity, C-index gap, HR-in-CI). Tests of the release machinery that need a PASS of a
real DP run sign it off under ``demo_policy``: the default policy with the fidelity and utility
thresholds loosened to what that run reaches and a withheld MIA TPR accepted.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from fedsynth.release.bundle import sign_off
from fedsynth.release.keys import keygen, load_private_key
from fedsynth.release.policy import Policy, default_policy_path, load_policy

RECORDED = Path(__file__).parent / "data" / "demo_run.tar.gz"


# What the recorded demo run passes (see the module docstring): never a release policy.
DEMO_POLICY_EDITS = (
    ('mia_tpr_withheld = "inconclusive"', 'mia_tpr_withheld = "pass"'),
    ("max_mean_ks = 0.08", "max_mean_ks = 0.5"),
    ("max_mean_tvd = 0.03", "max_mean_tvd = 0.5"),
    ("max_column_ks = 0.15", "max_column_ks = 0.6"),
    ("max_column_tvd = 0.10", "max_column_tvd = 0.6"),
    ("min_hr_in_ci_fraction = 0.65", "min_hr_in_ci_fraction = 0.5"),
    ("max_tstr_c_index_gap = 0.05", "max_tstr_c_index_gap = 0.40"),
)


def edited_policy_text(*edits: tuple[str, str]) -> str:
    """The default policy's text with lines replaced, as a board edits a copy of it."""
    text = default_policy_path().read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="session")
def demo_policy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "demo_policy.toml"
    path.write_text(edited_policy_text(*DEMO_POLICY_EDITS))
    return path


@pytest.fixture(scope="session")
def demo_policy(demo_policy_path: Path) -> Policy:
    return load_policy(demo_policy_path)


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    from fedsynth.server.evaluation import worst_over_sites

    root = tmp_path_factory.mktemp("recorded")
    with tarfile.open(RECORDED) as archive:
        archive.extractall(root, filter="data")
    evaluation = root / "demo_run" / "evaluation.json"
    document = json.loads(evaluation.read_text())
    document["worst"] = worst_over_sites(document["sites"])
    evaluation.write_text(json.dumps(document))
    return root / "demo_run"


@pytest.fixture()
def demo_run(recorded_run: Path, tmp_path: Path) -> Path:
    """A fresh, writable copy of the recorded DP demo run."""
    return Path(shutil.copytree(recorded_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def board_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("keys"), "board")


@pytest.fixture(scope="session")
def signed_bundle(
    recorded_run: Path, board_keys: tuple[Path, Path], demo_policy_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The bundle of the recorded demo run under ``demo_policy`` (tests copy it before changing it)."""
    run = Path(shutil.copytree(recorded_run, tmp_path_factory.mktemp("bundled") / "run"))
    key = load_private_key(board_keys[0])
    verdict, bundle = sign_off(run, load_policy(demo_policy_path), demo_policy_path.read_text(), key)
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
    site["sample"] = {"seed": 0, "n": len(synthetic)}  # the release's own rows
    document = site_query_document([site], [], 0, worst_over_sites, horizons=[750.0], sample=site["sample"])
    (run / "evaluation.json").write_text(json.dumps(document))
    return run
