"""The fairness option (issue 24, seed 003): per-level weights with known answers, the loss stays
per-record (DP-SGD clips each record alone), weight 0 trains bit for bit as before, bad columns
and undeclared DP shares are refused by name, and weight 1 evens out the sampled levels."""

from __future__ import annotations

import functools

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from fedsynth.data.schema import Schema
from fedsynth.model.ck4gen import CK4Gen
from fedsynth.model.config import MCMConfig, ModelConfigError
from fedsynth.model.fairness import SHARES_KEY, group_weights, level_weights
from fedsynth.model.generator import NetworkGenerator
from fedsynth.model.mcm import MCM
from fedsynth.model.medvae import MedVAE

SHARES = (0.6, 0.4)  # WHAS500's gender: 300 men (0), 200 women (1)


@pytest.mark.parametrize("shares", [(0.6, 0.4), (0.5, 0.3, 0.15, 0.05), (0.9, 0.1)])
def test_weight_one_gives_every_level_the_same_total_weight_and_zero_the_identity(shares) -> None:
    p = torch.tensor(shares, dtype=torch.float64)
    assert torch.equal(level_weights(shares, 0.0), torch.ones(len(shares)))
    totals = p * level_weights(shares, 1.0).double()
    assert torch.allclose(totals, torch.full_like(p, 1 / len(shares)), atol=1e-6)
    for weight in (0.25, 0.5, 0.75):  # linear in between: level g totals (1 - w) p_g + w / K
        totals = p * level_weights(shares, weight).double()
        assert torch.allclose(totals, (1 - weight) * p + weight / len(shares), atol=1e-6)
        assert float(totals.sum()) == pytest.approx(1.0)  # the loss keeps its scale


def test_a_level_without_rows_keeps_weight_one_and_does_not_count() -> None:
    weights = level_weights((0.75, 0.0, 0.25), 1.0)
    assert weights.tolist() == pytest.approx([2 / 3, 1.0, 2.0])


def test_weight_zero_trains_every_generator_bit_for_bit_as_without_the_option(whas500) -> None:
    frame, schema = whas500
    for cls in (MCM, MedVAE, CK4Gen):
        plain = cls(epochs=2).fit(frame, schema)
        declared = cls(epochs=2, fairness_column="gender").fit(frame, schema)
        assert plain.history_ == declared.history_, cls.__name__
        states = plain.network_.state_dict(), declared.network_.state_dict()
        for (name, a), b in zip(states[0].items(), states[1].values(), strict=True):
            assert torch.equal(a, b), f"{cls.__name__} {name}"
        assert SHARES_KEY not in declared.training_info_


def _record_gradients(model: NetworkGenerator, codes: torch.Tensor, record: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    loss = model.per_record_loss(codes, generator, 0.5)
    parameters = [p for p in model.network_.parameters() if p.requires_grad]
    return torch.autograd.grad(loss[record], parameters, allow_unused=True)


# Every generator the sites train with DP-SGD: the MCM, the Med-VAE and CK4Gen with its joint teacher.
DP_GENERATORS = [MCM, MedVAE, functools.partial(CK4Gen, teacher="joint")]


@pytest.mark.parametrize("cls", DP_GENERATORS)
def test_a_records_gradient_does_not_depend_on_the_other_records_of_its_batch(cls, whas500) -> None:
    frame, schema = whas500
    model = cls(fairness_column="gender", fairness_weight=1.0, fairness_shares=SHARES).build(schema)
    codes = model.codes_tensor(frame.iloc[:16])
    gender = schema.names.index("gender")
    changed = codes.clone()
    changed[1:] = codes.flip(0)[:-1]  # every other record replaced...
    changed[1:, gender] = 1.0 - changed[1:, gender]  # ...and moved to the other level
    before, after = _record_gradients(model, codes, 0), _record_gradients(model, changed, 0)
    for a, b in zip(before, after, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("cls", DP_GENERATORS)
def test_each_records_loss_is_its_plain_loss_times_its_levels_weight(cls, whas500) -> None:
    frame, schema = whas500
    plain = cls().build(schema)
    fair = cls(fairness_column="gender", fairness_weight=1.0, fairness_shares=SHARES).build(schema)
    codes = plain.codes_tensor(frame.iloc[:32])
    base = plain.per_record_loss(codes, torch.Generator().manual_seed(3), 0.5)
    weighted = fair.per_record_loss(codes, torch.Generator().manual_seed(3), 0.5)
    women = codes[:, schema.names.index("gender")] == 1
    expected = torch.where(women, base * (0.5 / 0.4), base * (0.5 / 0.6))
    assert torch.allclose(weighted, expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ("nope", "'nope' is not a column of schema 'whas500'"),
        ("age", "'age' is integer; the sensitive column must be binary or categorical"),
        ("fstat", "'fstat' is the event column"),
    ],
)
def test_a_column_that_is_not_a_discrete_feature_is_refused_by_name(whas500, column: str, message: str) -> None:
    frame, schema = whas500
    with pytest.raises(ModelConfigError, match=message) as caught:
        MCM(epochs=1, fairness_column=column, fairness_weight=0.5).fit(frame, schema)
    assert "gender" in str(caught.value)  # the fix: the columns it could name


def test_a_column_is_checked_against_the_schema_when_the_network_is_built(whas500) -> None:
    with pytest.raises(ModelConfigError, match="fairness_column = 'age'"):
        MedVAE(fairness_column="age").build(whas500[1])  # the sites build before training


def test_shares_must_give_one_share_per_level(whas500) -> None:
    with pytest.raises(ModelConfigError, match="fairness_shares has 3 values but 'gender' has 2 levels"):
        MCM(fairness_column="gender", fairness_weight=1.0, fairness_shares=(0.5, 0.3, 0.2)).build(whas500[1])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fairness_weight": 0.5}, "fairness_weight > 0 needs fairness_column"),
        ({"fairness_shares": (0.5, 0.5)}, "fairness_shares needs fairness_column"),
        ({"fairness_column": "gender", "fairness_shares": (0.5, 0.6)}, "sum to 1"),
        ({"fairness_column": "gender", "fairness_weight": 1.5}, "fairness_weight"),
    ],
)
def test_inconsistent_fairness_fields_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MCMConfig(**fields)


def test_dp_training_needs_declared_shares_and_is_refused_before_any_step_without(whas500) -> None:
    frame, schema = whas500
    undeclared = MCM(fairness_column="gender", fairness_weight=1.0).build(schema)
    assert "fairness_shares" in undeclared.dp_training_refusal()
    with pytest.raises(ModelConfigError, match="fairness_shares"):
        undeclared.per_record_loss(undeclared.codes_tensor(frame.iloc[:4]), torch.Generator(), 0.0)
    declared = MedVAE(fairness_column="gender", fairness_weight=1.0, fairness_shares=SHARES)
    assert declared.dp_training_refusal() is None
    assert MCM().dp_training_refusal() is None


def test_a_plain_fit_weighs_by_its_rows_shares_and_keeps_them_with_the_model(whas500, tmp_path) -> None:
    frame, schema = whas500
    model = MCM(epochs=1, fairness_column="gender", fairness_weight=1.0).fit(frame, schema)
    assert model.training_info_[SHARES_KEY] == pytest.approx(list(SHARES))
    loaded = MCM.load(model.save(tmp_path / "model"))
    weights = group_weights(loaded.config, schema, training_info=loaded.training_info_)
    assert weights is not None and weights.per_level.tolist() == pytest.approx([0.5 / 0.6, 0.5 / 0.4])
    loaded.per_record_loss(loaded.codes_tensor(frame.iloc[:4]), torch.Generator(), 1.0)  # white-box audits


def _level_share(model: MCM, frame: pd.DataFrame, schema: Schema) -> float:
    return float(model.fit(frame, schema).sample(4000, seed=1)["gender"].mean())


def test_weight_one_samples_the_levels_evenly_and_zero_keeps_the_real_shares(whas500) -> None:
    frame, schema = whas500
    assert _level_share(MCM(epochs=40, fairness_column="gender"), frame, schema) == pytest.approx(0.4, abs=0.03)
    balanced = MCM(epochs=40, fairness_column="gender", fairness_weight=1.0)
    assert _level_share(balanced, frame, schema) == pytest.approx(0.5, abs=0.03)
