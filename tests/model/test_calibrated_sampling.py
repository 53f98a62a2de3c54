"""A model calibrated to DP marginal tables: its samples match the tables, keep conditions and
determinism, stream the same rows, survive save/load, and its tables are bound by the manifest."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.conditions import satisfies
from fedsynth.data.schema import Schema
from fedsynth.evaluation.fidelity import marginal_distances
from fedsynth.marginals.tables import MarginalSpec, count_tables
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.generators import generator_digest, load_generator, weights_digest
from fedsynth.model.mcm import MCM
from fedsynth.model.persistence import MARGINALS, ModelFileError


@pytest.fixture
def calibrated(small_model: MCM, whas500: tuple[pd.DataFrame, Schema]) -> MCM:
    frame, schema = whas500
    spec = MarginalSpec.from_schema(schema)
    return copy.deepcopy(small_model).calibrate_to(MarginalTarget(spec, count_tables(frame, spec)))


def _tvd(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> float:
    values = [d["value"] for d in marginal_distances(real, synthetic, schema).values() if d["statistic"] == "tv"]
    return float(np.mean(values))


def test_calibrated_samples_match_the_tables_where_the_model_alone_does_not(
    small_model: MCM, calibrated: MCM, whas500: tuple[pd.DataFrame, Schema]
) -> None:
    frame, schema = whas500
    plain = small_model.sample(3000, seed=1)
    tuned = calibrated.sample(3000, seed=1)
    assert _tvd(frame, tuned, schema) < 0.015 < _tvd(frame, plain, schema)
    assert abs(tuned["sho"].mean() - frame["sho"].mean()) < 0.01


def test_streamed_and_in_memory_calibrated_samples_hold_the_same_rows(calibrated: MCM) -> None:
    calibrated_rows = calibrated.sample(40_000, seed=3)  # three row groups
    streamed = pd.concat(list(calibrated.sample_chunks(40_000, seed=3, workers=1)), ignore_index=True)
    pd.testing.assert_frame_equal(calibrated_rows, streamed)
    assert not calibrated_rows.equals(calibrated.sample(40_000, seed=4))


def test_conditions_hold_on_every_calibrated_row(calibrated: MCM) -> None:
    rows = calibrated.sample(1500, conditions=["chf=1", "60<=age<=80"], seed=2)
    assert len(rows) == 1500
    for condition in calibrated.resolve(["chf=1", "60<=age<=80"]):
        assert satisfies(rows, condition).all()


def test_a_one_row_calibrated_sample_is_a_random_draw(calibrated: MCM) -> None:
    ages = {int(calibrated.sample(1, seed=s)["age"].iloc[0]) for s in range(12)}
    assert len(ages) > 6  # not the median every time
    assert len(calibrated.sample(0, seed=0)) == 0


def test_tables_of_another_schema_are_refused(small_model: MCM) -> None:
    from fedsynth.data.datasets import load_dataset

    frame, schema = load_dataset("gbsg2")
    spec = MarginalSpec.from_schema(schema)
    with pytest.raises(ValueError, match="another schema"):
        copy.deepcopy(small_model).calibrate_to(MarginalTarget(spec, count_tables(frame, spec)))


def test_save_and_load_keep_the_tables_and_the_samples(calibrated: MCM, tmp_path) -> None:
    calibrated.save(tmp_path / "m")
    loaded = load_generator(tmp_path / "m")
    assert loaded.calibration_ is not None and loaded.calibration_.digest() == calibrated.calibration_.digest()
    pd.testing.assert_frame_equal(loaded.sample(500, seed=9), calibrated.sample(500, seed=9))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["calibration"]["sha256"] == calibrated.calibration_.digest()
    # The generator digest covers the tables; the weights digest (the DP checkpoint's) does not.
    assert generator_digest(loaded) != weights_digest(loaded)
    assert generator_digest(copy.deepcopy(loaded).calibrate_to(None)) == weights_digest(loaded)


def test_edited_tables_are_refused_on_load(calibrated: MCM, tmp_path) -> None:
    calibrated.save(tmp_path / "m")
    path = tmp_path / "m" / MARGINALS
    data = json.loads(path.read_text())
    data["tables"]["sho"][1] += 100.0
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="marginals.json does not match its SHA-256"):
        load_generator(tmp_path / "m")


@pytest.fixture(scope="module")
def head_model(whas_split: tuple[pd.DataFrame, pd.DataFrame], whas500: tuple[pd.DataFrame, Schema]) -> MCM:
    frame, schema = whas500
    spec = MarginalSpec.from_schema(schema)
    model = MCM(epochs=10, survival_head=True, seed=0).fit(whas_split[0], schema)
    return model.calibrate_to(MarginalTarget(spec, count_tables(frame, spec)))


def test_the_survival_head_draws_the_outcome_again_and_keeps_the_covariates(head_model: MCM) -> None:
    rows = head_model.sample(500, seed=5)
    sampler = head_model._sampler(len(rows))
    again = sampler.redraw_outcome(rows, seed=1)
    covariates = list(head_model.schema_.covariates)
    pd.testing.assert_frame_equal(again[covariates], rows[covariates])
    assert (again["lenfol"] != rows["lenfol"]).mean() > 0.9
    pd.testing.assert_frame_equal(again, sampler.redraw_outcome(rows, seed=1))


def test_calibrated_samples_of_a_head_model_stream_the_same_rows(head_model: MCM) -> None:
    in_memory = head_model.sample(20_000, seed=3)  # two row groups
    streamed = pd.concat(list(head_model.sample_chunks(20_000, seed=3, workers=1)), ignore_index=True)
    pd.testing.assert_frame_equal(in_memory, streamed)
    for condition in head_model.resolve(["fstat=1"]):  # a condition on the outcome: no redraw
        assert satisfies(head_model.sample(300, conditions=["fstat=1"], seed=2), condition).all()
