"""Med-VAE (seed 004) without DP: marginals, exact conditions, determinism, save/load, refusals."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from scipy.stats import ks_2samp

from fedsynth.data.conditions import ConditionError, satisfies
from fedsynth.data.datasets import load_dataset
from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame
from fedsynth.errors import UserError
from fedsynth.model import decoded
from fedsynth.model.generator import NotFittedError
from fedsynth.model.mcm import MCM
from fedsynth.model.medvae import MedVAE
from fedsynth.model.persistence import ModelFileError
from tests.missing import blank


@pytest.fixture(scope="module")
def gbsg2() -> tuple[pd.DataFrame, Schema]:
    """GBSG2 (686 rows): integer, labelled binary, categorical, time and event columns."""
    return load_dataset("gbsg2")


@pytest.fixture(scope="module")
def gbsg2_vae(gbsg2: tuple[pd.DataFrame, Schema]) -> MedVAE:
    return MedVAE(epochs=60, seed=0).fit(*gbsg2)


def _tvd(real: pd.Series, synthetic: pd.Series) -> float:
    p, q = real.value_counts(normalize=True), synthetic.value_counts(normalize=True)
    return float(0.5 * p.sub(q, fill_value=0.0).abs().sum())


def test_every_marginal_and_the_event_rate_are_reproduced(gbsg2, gbsg2_vae: MedVAE) -> None:
    frame, schema = gbsg2
    synthetic = gbsg2_vae.sample(4000, seed=1)
    validate_frame(synthetic, schema)  # bounds, categories and the time/event columns hold
    assert len(synthetic) == 4000 and list(synthetic.columns) == schema.names
    for column in schema.columns:
        if column.is_numeric:
            assert ks_2samp(frame[column.name], synthetic[column.name]).statistic < 0.1, column.name
        else:
            assert _tvd(frame[column.name], synthetic[column.name]) < 0.05, column.name
    assert abs(synthetic["cens"].mean() - frame["cens"].mean()) < 0.03
    assert synthetic["time"].between(0, 3000).all() and set(synthetic["tgrade"]) <= {"I", "II", "III"}


def test_conditions_hold_on_every_row(gbsg2_vae: MedVAE) -> None:
    conditions = ["tgrade in {I, III}", "45<=age<=60", "horTh=yes", "cens=1"]
    synthetic = gbsg2_vae.sample(700, conditions, seed=3)
    assert len(synthetic) == 700
    for condition in gbsg2_vae.resolve(conditions):
        assert satisfies(synthetic, condition).all(), condition.column.name
    assert set(synthetic["tgrade"]) == {"I", "III"} and synthetic["age"].between(45, 60).all()


def test_a_seed_fixes_the_rows_and_chunks_are_the_sample(gbsg2_vae: MedVAE, monkeypatch) -> None:
    first = gbsg2_vae.sample(300, ["age>=50"], seed=5)
    pd.testing.assert_frame_equal(first, gbsg2_vae.sample(300, ["age>=50"], seed=5))
    assert not first.equals(gbsg2_vae.sample(300, ["age>=50"], seed=6))
    monkeypatch.setattr(decoded, "GROUP_ROWS", 128)
    chunks = list(gbsg2_vae.sample_chunks(300, ["age>=50"], seed=5))
    assert [len(c) for c in chunks] == [128, 128, 44]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), gbsg2_vae.sample(300, ["age>=50"], seed=5))


def test_save_and_load_give_identical_samples(gbsg2_vae: MedVAE, tmp_path) -> None:
    path = gbsg2_vae.save(tmp_path / "vae")
    loaded = MedVAE.load(path)
    assert loaded.config == gbsg2_vae.config and loaded.schema_ == gbsg2_vae.schema_
    assert loaded.differentially_private_ is False and loaded.n_train_ == 686
    pd.testing.assert_frame_equal(loaded.sample(500, ["cens=0"], seed=4), gbsg2_vae.sample(500, ["cens=0"], seed=4))
    with pytest.raises(FileExistsError):
        gbsg2_vae.save(path)


def test_each_generator_refuses_the_others_model_directory(gbsg2, gbsg2_vae: MedVAE, tmp_path) -> None:
    vae_path = gbsg2_vae.save(tmp_path / "vae")
    with pytest.raises(
        ModelFileError,
        match=r"holds a 'medvae' model, not an MCM; load it with fedsynth\.model\.medvae\.MedVAE\.load$",
    ):
        MCM.load(vae_path)
    mcm_path = MCM(epochs=1, hidden=8).fit(*gbsg2).save(tmp_path / "mcm")
    with pytest.raises(
        ModelFileError, match=r"holds a 'mcm' model, not a Med-VAE; load it with fedsynth\.model\.mcm\.MCM\.load"
    ):
        MedVAE.load(mcm_path)


def test_bad_conditions_are_user_errors_naming_the_condition(gbsg2_vae: MedVAE) -> None:
    with pytest.raises(ConditionError, match="unknown column 'tgarde'. Did you mean 'tgrade'"):
        gbsg2_vae.sample(10, ["tgarde=II"])
    with pytest.raises(ConditionError, match="'IV' is not a declared value"):
        gbsg2_vae.sample(10, ["tgrade=IV"])
    with pytest.raises(NotFittedError):
        MedVAE().sample(10)


def test_a_condition_the_model_never_produces_is_refused_by_name() -> None:
    frame, schema = load_dataset("whas500")
    model = MedVAE(epochs=2, seed=0).fit(frame, schema)
    # bmi is continuous without a recording step: an exact value has probability 0.
    with pytest.raises(ConditionError, match=r"condition '25.5<=bmi<=25.5' is almost never produced") as caught:
        model.sample(50, ["bmi=25.5", "chf=1"])
    assert isinstance(caught.value, UserError) and caught.value.column == "bmi"
    assert "widen the condition" in str(caught.value)


def test_modelled_missing_values_keep_their_share_and_never_meet_a_condition() -> None:
    frame, schema = load_dataset("whas500")
    frame, schema = blank(frame, schema, {"sysbp": 0.3}, seed=0)
    model = MedVAE(epochs=40, seed=0).fit(frame, schema)
    synthetic = model.sample(3000, seed=2)
    validate_frame(synthetic, schema)
    assert abs(synthetic["sysbp"].isna().mean() - frame["sysbp"].isna().mean()) < 0.05
    conditioned = model.sample(300, ["sysbp>=100"], seed=2)
    assert conditioned["sysbp"].notna().all() and (conditioned["sysbp"] >= 100).all()


def test_opacus_finds_nothing_to_fix_and_per_sample_gradients_are_each_rows_own(gbsg2) -> None:
    frame, schema = gbsg2
    model = MedVAE(seed=0).build(schema)
    network = model.network_
    assert ModuleValidator.validate(network, strict=False) == []  # batch norm would be listed here
    codes = network.layout.expand(torch.tensor(model.transformer.codes(frame.iloc[:4]), dtype=torch.float32))
    noise = torch.randn(4, network.latent, generator=torch.Generator().manual_seed(0))
    plain = copy.deepcopy(network)  # single-row gradients from an unhooked copy
    reconstruction, kl = GradSampleModule(network, loss_reduction="sum")(codes, noise)
    (reconstruction + kl).sum().backward()
    for row in range(4):
        single_reconstruction, single_kl = plain(codes[row : row + 1], noise[row : row + 1])
        grads = torch.autograd.grad((single_reconstruction + single_kl).sum(), list(plain.parameters()))
        for parameter, grad in zip(network.parameters(), grads, strict=True):
            torch.testing.assert_close(parameter.grad_sample[row], grad, rtol=1e-4, atol=1e-5)
