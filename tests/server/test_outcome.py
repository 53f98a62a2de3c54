"""A run that ends without its model is an error naming each site's reason, never a model."""

from __future__ import annotations

import pandas as pd
import pytest

from fedsynth.client.app import make_client_app
from fedsynth.data.io import write_table
from fedsynth.server.app import make_server_app
from fedsynth.server.config import FederationConfig
from fedsynth.server.library_output import library_output_to
from fedsynth.server.outcome import TrainingFailedError, check_training_outcome, rounds_done
from fedsynth.server.run import RunDirectory
from fedsynth.server.simulation import TRAIN_LOG, prepare_sites, run_on_ray
from tests.client.test_site_errors import DEPLOYMENT_REASON, SIMULATION_REASON


def test_a_run_without_weights_lists_each_sites_reason_once(tmp_path) -> None:
    run = RunDirectory(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    run.append_budget(
        [
            {"round": 1, "node_id": 11, "status": "error", "reason": SIMULATION_REASON},
            {"round": 1, "node_id": 12, "status": "error", "reason": DEPLOYMENT_REASON},
            {"round": 2, "node_id": 12, "status": "error", "reason": DEPLOYMENT_REASON},
            {"round": 2, "node_id": 13, "status": "error", "reason": "no reply within the round timeout"},
        ]
    )
    with pytest.raises(TrainingFailedError) as failed:
        check_training_outcome(tmp_path, 1, 2, tmp_path / "logs" / "train.log")
    text = str(failed.value)
    assert text.startswith("training ended without a model: no site returned weights. The sites replied:\n")
    assert "  - site-0 (round 1): data.parquet column 'bmi': values are not numbers (1 row); fix: x\n" in text
    assert "      data.parquet column 'age': values are not numbers (2 rows); fix: y" in text
    assert "  - site-1 (rounds 1, 2): LedgerError at the site; details (not sent)" in text
    assert "  - node 13 (round 2): no reply within the round timeout" in text
    assert f"No model was published ({tmp_path / 'model'} does not exist)" in text
    assert "ray::" not in text and "Traceback" not in text and str(tmp_path / "logs" / "train.log") in text
    assert rounds_done(tmp_path) == 0 and rounds_done(tmp_path / "nothing") == 0


@pytest.mark.integration
def test_sites_failing_inside_tell_the_coordinator_why_without_a_row_or_value(tmp_path) -> None:
    """Flower's simulation engine with sites the coordinator's checks did not see: as on separate
    machines, site-0's rows break the schema and site-1 holds too few; one real round."""
    config = FederationConfig.from_dict(
        {
            "federation": {"rounds": 1, "min_sites": 2, "run_dir": str(tmp_path / "run"), "round_timeout": 300},
            "simulation": {"dataset": "whas500", "sites": 2},
            "site": {"training": {"local_epochs": 1}},
            "model": {"hidden": 16, "n_bins": 16},
        }
    )
    schema, root = prepare_sites(config)
    bad = pd.read_parquet(root / "site-0" / "data.parquet")
    bad["bmi"] = bad["bmi"].astype(str)  # Parquet holds one type per column
    bad.loc[[3, 5], "bmi"] = "heavy-4711"
    bad.loc[7, "age"] = 987
    write_table(bad, root / "site-0" / "data.parquet")
    write_table(pd.read_parquet(root / "site-1" / "data.parquet").iloc[:60], root / "site-1" / "data.parquet")

    logs = config.run_dir / TRAIN_LOG
    with library_output_to(logs):
        run_on_ray(make_server_app(config, schema), make_client_app(root), 2)
    with pytest.raises(TrainingFailedError) as failed:
        check_training_outcome(config.run_dir, 1, 1, logs)
    text = str(failed.value)
    assert "  - site-0 (round 1): data.parquet column 'age': values outside the declared public bounds" in text
    assert "(1 row); fix: correct the values" in text
    assert "      data.parquet column 'bmi': values are not numbers (2 rows); fix: replace the text" in text
    assert "  - site-1 (round 1): data.parquet: 48 training records (60 rows less the 0.2 holdout)" in text
    assert "minimum of 100 for DP training" in text
    for leaked in ("heavy", "4711", "987", "row 4", "row 6", "row 8", "Traceback", "ray::"):
        assert leaked not in text, leaked
    assert not (config.run_dir / "model").exists()
    assert "ClientAppException" in logs.read_text()  # Ray's traceback went to the log file
