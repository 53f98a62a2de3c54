"""missing = "model": the generator learns each such column's missingness and samples it."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.data.schema import Schema
from fedsynth.model.config import MCMConfig
from fedsynth.model.generators import load_generator
from fedsynth.model.layout import Layout
from fedsynth.model.loss import masked_nll_per_sample
from fedsynth.model.mcm import MCM
from tests.missing import blank

# WHAS500 with bmi and cvd missing completely at random in 30% of the rows, and hr missing in 60%
# of the deaths only (missingness that depends on the outcome).
SHARES = {"bmi": 0.3, "cvd": 0.3}


@pytest.fixture(scope="module")
def missing_data(whas500: tuple[pd.DataFrame, Schema]) -> tuple[pd.DataFrame, Schema]:
    frame, schema = whas500
    data, modelled = blank(frame, schema, SHARES, seed=1)
    deaths = frame["fstat"] == 1
    with_hr, modelled = blank(data, modelled, {"hr": 0.6}, seed=2, when=deaths)
    return with_hr, modelled


@pytest.fixture(scope="module")
def missing_model(missing_data: tuple[pd.DataFrame, Schema]) -> MCM:
    return MCM(epochs=100, seed=1).fit(*missing_data)


def test_codes_expand_to_indicators_and_collapse_back(missing_data) -> None:
    frame, schema = missing_data
    model = MCM(MCMConfig(hidden=8, n_bins=8)).build(schema)
    layout = model.network_.layout
    assert layout.n_columns == len(schema.columns) + 3
    assert [layout.heads[i].column.name for i in layout.indicator_of.values()] == [
        "bmi:missing",
        "cvd:missing",
        "hr:missing",
    ]
    codes = model.codes_tensor(frame)
    assert not torch.isnan(codes).any()
    bmi = schema.names.index("bmi")
    assert (codes[:, layout.indicator_of[bmi]].numpy() == frame["bmi"].isna().to_numpy()).all()
    missing = layout.missing_mask(codes)
    assert missing.sum() == int(frame[["bmi", "cvd", "hr"]].isna().to_numpy().sum())
    # A missing value's inputs are 0, as a masked cell's are.
    encoded = layout.encode_codes(codes)
    assert (encoded[missing[:, bmi], layout.heads[bmi].in_start] == 0).all()
    collapsed = layout.collapse(codes).double().numpy()
    pd.testing.assert_frame_equal(model.transformer.from_codes(collapsed), frame)


def test_a_missing_value_is_never_a_target_but_counts_in_the_row_normaliser(missing_data) -> None:
    frame, schema = missing_data
    layout = Layout(schema, 8)
    codes = MCM(MCMConfig(hidden=8, n_bins=8)).build(schema).codes_tensor(frame.head(50))
    bmi = layout.heads[schema.names.index("bmi")]
    missing = layout.missing_mask(codes)
    assert missing[:, bmi.index].any()
    logits = torch.randn(len(codes), layout.output_width)
    masked = torch.ones(len(codes), layout.n_columns, dtype=torch.bool)
    targets = masked & ~missing
    before = masked_nll_per_sample(layout, logits, codes, targets, counted=masked)
    changed = logits.clone()
    changed[:, bmi.out_start : bmi.out_stop] += 5 * torch.randn(len(codes), bmi.out_stop - bmi.out_start)
    after = masked_nll_per_sample(layout, changed, codes, targets, counted=masked)
    rows = missing[:, bmi.index]
    assert torch.equal(before[rows], after[rows])  # the bmi head is not read where bmi is missing
    assert not torch.equal(before[~rows], after[~rows])


def test_a_trained_model_samples_the_missing_shares_and_their_dependence_on_the_outcome(
    missing_data, missing_model
) -> None:
    frame, _ = missing_data
    synthetic = missing_model.sample(4000, seed=3)
    for name, share in SHARES.items():
        assert frame[name].isna().mean() == pytest.approx(share, abs=0.03)
        assert synthetic[name].isna().mean() == pytest.approx(frame[name].isna().mean(), abs=0.04)
    # hr is missing for deaths only (about 60% of them): the synthetic rows keep that.
    real_rate = frame.groupby("fstat")["hr"].apply(lambda v: v.isna().mean())
    synthetic_rate = synthetic.groupby("fstat")["hr"].apply(lambda v: v.isna().mean())
    assert real_rate[0] == 0.0 and real_rate[1] > 0.5
    assert synthetic_rate[0] < 0.1 and synthetic_rate[1] > 0.4
    # The present values keep their distribution (not pulled towards a placeholder).
    present = synthetic["bmi"].dropna()
    assert present.between(10, 50).all()
    assert abs(present.median() - frame["bmi"].median()) < 2.0
    assert synthetic["hr"].dtype == np.float64 and (synthetic["hr"].dropna() % 1 == 0).all()


def test_conditions_on_a_modelled_column_sample_present_values_only(missing_model) -> None:
    rows = missing_model.sample(300, conditions=["bmi>=25", "cvd=1"], seed=4)
    assert rows["bmi"].notna().all() and (rows["bmi"] >= 25).all()
    assert (rows["cvd"] == 1).all()
    other = missing_model.sample(300, conditions=["hr<=80"], seed=4)
    assert other["hr"].notna().all() and other["bmi"].isna().any()


def test_a_saved_model_samples_the_same_rows_with_their_missing_values(missing_model, tmp_path) -> None:
    path = missing_model.save(tmp_path / "model")
    pd.testing.assert_frame_equal(load_generator(path).sample(200, seed=5), missing_model.sample(200, seed=5))


def test_a_calibrated_model_samples_the_tables_missing_shares(missing_data, missing_model) -> None:
    from fedsynth.marginals.tables import MarginalSpec, count_tables
    from fedsynth.marginals.target import MarginalTarget

    frame, schema = missing_data
    spec = MarginalSpec.from_schema(schema)
    model = copy.deepcopy(missing_model).calibrate_to(MarginalTarget(spec, count_tables(frame, spec)))
    rows = model.sample(2000, seed=6)
    for name in ("bmi", "cvd", "hr"):
        assert rows[name].isna().mean() == pytest.approx(frame[name].isna().mean(), abs=0.015)


def test_paper_augmentation_keeps_a_conditioned_modelled_column_present(missing_data, missing_model) -> None:
    from fedsynth.model.paper import augment_subgroup

    frame, _ = missing_data
    rows = augment_subgroup(missing_model, frame, 400, ["bmi>=25", "cvd=1"], seed=0)
    assert rows["bmi"].notna().all() and (rows["bmi"] >= 25).all() and (rows["cvd"] == 1).all()
