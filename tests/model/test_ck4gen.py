"""CK4Gen (seed 002) without DP: marginals, outcome modes, hazard ratio, conditions, save/load, CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from scipy.stats import ks_2samp
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.data.conditions import satisfies
from fedsynth.data.datasets import bundled_schema, load_dataset, raw_dataset
from fedsynth.data.schema import Column, ColumnKind, ColumnRole, Schema
from fedsynth.data.validation import validate_frame
from fedsynth.errors import UserError
from fedsynth.evaluation.utility import fit_cox
from fedsynth.model import decoded
from fedsynth.model.ck4gen import CK4Gen
from fedsynth.model.ck4gen.outcome import draw_outcome
from fedsynth.model.ck4gen.teacher import TeacherFitError, piecewise_rates
from fedsynth.model.medvae import MedVAE
from fedsynth.model.persistence import ModelFileError
from tests.missing import blank

SCHEMA = Schema(
    name="simulated",
    columns=(
        Column(name="x", kind=ColumnKind.BINARY),
        Column(name="age", kind=ColumnKind.INTEGER, lower=20, upper=100),
        Column(name="grp", kind=ColumnKind.CATEGORICAL, categories=("a", "b", "c")),
        Column(name="time", kind=ColumnKind.INTEGER, role=ColumnRole.TIME, lower=0, upper=2000),
        Column(name="event", kind=ColumnKind.BINARY, role=ColumnRole.EVENT),
    ),
)


def _simulated(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Exponential event times whose hazard x = 1 doubles, independent uniform censoring: the
    model CK4Gen's ``outcome = "model"`` assumes (proportional hazards, censoring free of covariates)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n)
    event_time = rng.exponential(1000.0 / 2.0**x)
    censor_time = rng.uniform(0, 1500, n)
    return pd.DataFrame(
        {
            "x": x,
            "age": np.clip(np.round(rng.normal(60, 10, n)), 20, 100).astype(int),
            "grp": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
            "time": np.maximum(1, np.round(np.minimum(event_time, censor_time))).astype(int),
            "event": (event_time <= censor_time).astype(int),
        }
    )


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return validate_frame(_simulated(), SCHEMA)[0]


@pytest.fixture(scope="module")
def modelled(data: pd.DataFrame) -> CK4Gen:
    return CK4Gen(seed=0).fit(data, SCHEMA)  # the shipped epochs: about 3 s on 600 rows


@pytest.fixture(scope="module")
def copying(data: pd.DataFrame) -> CK4Gen:
    return CK4Gen(seed=0, outcome="copy").fit(data, SCHEMA)


def _tvd(real: pd.Series, synthetic: pd.Series) -> float:
    p, q = real.value_counts(normalize=True), synthetic.value_counts(normalize=True)
    return float(0.5 * p.sub(q, fill_value=0.0).abs().sum())


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["time"].astype(int), frame["event"].astype(int), strict=True))


def test_outcome_draws_follow_the_hazard_they_are_given() -> None:
    n, rate = 100_000, 2.0
    rates = torch.full((64,), rate)
    eta = torch.cat([torch.zeros(n // 2), torch.full((n // 2,), float(np.log(2.0)))])  # HR 2 in the second half
    unit_time, event = draw_outcome(eta, rates, torch.zeros(64), 63, torch.Generator().manual_seed(0))
    # No censoring before the last bin: P(T <= 0.5) = 1 - exp(-rate * HR * 0.5) for each half.
    for half, hazard_ratio in ((slice(0, n // 2), 1.0), (slice(n // 2, n), 2.0)):
        observed = float((unit_time[half] <= 0.5).double().mean())
        assert abs(observed - (1 - np.exp(-rate * hazard_ratio * 0.5))) < 0.01
    # Censoring happens only inside the last bin, where follow-up ends: before it every row is an event.
    assert bool(event[unit_time < 63 / 64].all()) and bool((unit_time < 1.0).all())
    # The piecewise-exponential estimate recovers a constant hazard from exact event times.
    times = np.random.default_rng(0).exponential(1 / rate, 100_000)
    estimated = piecewise_rates(np.minimum(times, 1.0), (times <= 1.0).astype(float), np.ones(100_000), 8)
    np.testing.assert_allclose(estimated, rate, rtol=0.05)


def test_marginals_and_the_event_rate_are_reproduced(data: pd.DataFrame, modelled: CK4Gen) -> None:
    synthetic = modelled.sample(4000, seed=1)
    validate_frame(synthetic, SCHEMA)
    # Two-sample KS between 600 and 4000 rows has a 5% critical value of about 0.06; 0.1 leaves
    # room for the model's own error, and a wrong time scale or hazard gives far more.
    for name in ("age", "time"):
        assert ks_2samp(data[name], synthetic[name]).statistic < 0.1, name
    for name in ("x", "grp"):
        assert _tvd(data[name], synthetic[name]) < 0.05, name
    # Censoring here is independent of the covariates, as the model assumes: the event rate
    # (0.58 in the data, standard error 0.02) should come back within sampling noise.
    assert abs(synthetic["event"].mean() - data["event"].mean()) < 0.05


def test_a_covariate_that_doubles_the_hazard_keeps_its_direction(data: pd.DataFrame, modelled: CK4Gen) -> None:
    real_log_hr = fit_cox(data, SCHEMA).params_["x"]
    synthetic_log_hr = fit_cox(modelled.sample(3000, seed=2), SCHEMA).params_["x"]
    # True log-HR ln 2 = 0.69 with a standard error near 0.1 on 600 rows; outcomes are drawn
    # from the teacher, so the synthetic fit lands near the real one, far above zero.
    assert real_log_hr > 0.4 and synthetic_log_hr > 0.4
    assert abs(synthetic_log_hr - real_log_hr) < 0.3
    assert modelled.training_info_["distillation_r2"] > 0.8  # the risk head learned the teacher


def test_model_outcomes_are_drawn_not_copied(data: pd.DataFrame, modelled: CK4Gen, tmp_path) -> None:
    synthetic = modelled.sample(2000, seed=3)
    # The 600 real (time, event) pairs are a small part of the ~4000 possible integer pairs:
    # times drawn from a continuous hazard mostly land on pairs the data does not hold.
    new = ~pd.Series(list(zip(synthetic["time"], synthetic["event"], strict=True))).isin(_pairs(data))
    assert new.mean() > 0.3
    assert modelled.copies_real_values is False and len(modelled.network_.library_time) == 0
    meta = json.loads((modelled.save(tmp_path / "m") / "model.json").read_text())
    assert meta["copies_real_values"] is False and meta["differentially_private"] is False


def test_copy_outcomes_are_real_pairs_and_the_saved_model_says_so(
    data: pd.DataFrame, copying: CK4Gen, tmp_path
) -> None:
    synthetic = copying.sample(2000, ["grp in {a, b}"], seed=4)
    assert _pairs(synthetic) <= _pairs(data)
    assert synthetic["time"].dtype == data["time"].dtype
    path = copying.save(tmp_path / "copy")
    meta = json.loads((path / "model.json").read_text())
    assert meta["copies_real_values"] is True and meta["training"]["copies_real_values"] is True
    loaded = CK4Gen.load(path)
    assert loaded.copies_real_values is True and loaded.differentially_private_ is False
    assert loaded.training_info_["outcome"] == "copy"
    pd.testing.assert_frame_equal(loaded.sample(300, seed=5), copying.sample(300, seed=5))


@pytest.mark.parametrize("mode", ["modelled", "copying"])
def test_conditions_hold_on_every_row(mode: str, request) -> None:
    model: CK4Gen = request.getfixturevalue(mode)
    conditions = ["grp in {a, c}", "50<=age<=70", "x=1", "event=1", "time<=600"]
    synthetic = model.sample(500, conditions, seed=3)
    assert len(synthetic) == 500
    for condition in model.resolve(conditions):
        assert satisfies(synthetic, condition).all(), condition.column.name
    assert set(synthetic["grp"]) <= {"a", "c"} and (synthetic["event"] == 1).all()


def test_a_seed_fixes_the_rows_chunks_are_the_sample_and_load_samples_the_same(
    modelled: CK4Gen, monkeypatch, tmp_path
) -> None:
    first = modelled.sample(300, ["age>=50"], seed=5)
    pd.testing.assert_frame_equal(first, modelled.sample(300, ["age>=50"], seed=5))
    assert not first.equals(modelled.sample(300, ["age>=50"], seed=6))
    monkeypatch.setattr(decoded, "GROUP_ROWS", 128)
    chunks = list(modelled.sample_chunks(300, ["age>=50"], seed=5))
    assert [len(c) for c in chunks] == [128, 128, 44]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), modelled.sample(300, ["age>=50"], seed=5))
    loaded = CK4Gen.load(modelled.save(tmp_path / "m"))
    assert loaded.config == modelled.config and loaded.schema_ == modelled.schema_ and loaded.n_train_ == 600
    pd.testing.assert_frame_equal(loaded.sample(300, ["event=0"], seed=7), modelled.sample(300, ["event=0"], seed=7))


def test_a_fit_is_deterministic_for_its_seed(data: pd.DataFrame) -> None:
    first, again = (CK4Gen(epochs=5, seed=0).fit(data, SCHEMA) for _ in range(2))
    pd.testing.assert_frame_equal(again.sample(200, seed=1), first.sample(200, seed=1))
    assert again.history_ == first.history_


def test_modelled_missing_values_keep_their_share_in_both_outcome_modes() -> None:
    frame, schema = blank(*load_dataset("whas500"), {"sysbp": 0.3}, seed=0)
    for outcome in ("model", "copy"):
        synthetic = CK4Gen(epochs=40, seed=0, outcome=outcome).fit(frame, schema).sample(3000, seed=2)
        validate_frame(synthetic, schema)
        # 500 rows: the real share's standard error is 0.02; 0.05 is the Med-VAE test's bound.
        assert abs(synthetic["sysbp"].isna().mean() - frame["sysbp"].isna().mean()) < 0.05, outcome


def test_other_generators_directories_and_no_events_are_refused(data: pd.DataFrame, tmp_path) -> None:
    medvae_path = MedVAE(epochs=1).fit(data, SCHEMA).save(tmp_path / "vae")
    with pytest.raises(ModelFileError, match="holds a 'medvae' model, not a CK4Gen model"):
        CK4Gen.load(medvae_path)
    with pytest.raises(TeacherFitError, match="no events in 'event'") as caught:
        CK4Gen(epochs=1).fit(data.assign(event=0), SCHEMA)
    assert isinstance(caught.value, UserError)


def test_opacus_finds_nothing_to_fix_and_per_sample_gradients_are_each_rows_own(
    data: pd.DataFrame, modelled: CK4Gen
) -> None:
    network = copy.deepcopy(modelled.network_).train()  # Opacus validates a network being trained
    ModuleValidator.validate(network, strict=True)  # raises on batch norm or another unsupported layer
    codes = network.layout.expand(torch.tensor(modelled.transformer.codes(data.iloc[:4]), dtype=torch.float32))
    noise = torch.randn(4, network.latent, generator=torch.Generator().manual_seed(0))
    target = network.teacher_eta(codes) / network.eta_scale
    plain = copy.deepcopy(network)
    losses = GradSampleModule(network, loss_reduction="sum")(codes, noise, target)
    sum(losses).sum().backward()
    for row in range(4):
        single = plain(codes[row : row + 1], noise[row : row + 1], target[row : row + 1])
        grads = torch.autograd.grad(sum(single).sum(), list(plain.parameters()))
        for parameter, grad in zip(network.parameters(), grads, strict=True):
            torch.testing.assert_close(parameter.grad_sample[row], grad, rtol=1e-4, atol=1e-5)


def test_fit_generator_ck4gen_end_to_end_on_a_bundled_dataset(tmp_path) -> None:
    runner = CliRunner()
    raw_dataset("whas500").iloc[:120].to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "schema.toml").write_text(bundled_schema("whas500").to_toml())
    (tmp_path / "copy.toml").write_text('[model]\noutcome = "copy"\n')
    (tmp_path / "bad.toml").write_text('[model]\noutcome = "rows"\n')
    base = ["fit", str(tmp_path / "data.csv"), "--schema", str(tmp_path / "schema.toml"), "--epochs", "2"]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "model"), "--generator", "ck4gen"])
    assert result.exit_code == 0, result.output
    assert "Not differentially private" in result.output and "copies_real_values" not in result.output
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["generator"] == "ck4gen" and meta["copies_real_values"] is False
    assert len(CK4Gen.load(tmp_path / "model").sample(20, ["chf=1"], seed=0)) == 20
    sampled = runner.invoke(app, ["sample", str(tmp_path / "model"), "-n", "5", "-o", str(tmp_path / "rows.csv")])
    assert sampled.exit_code == 0 and "NOT DIFFERENTIALLY PRIVATE" in sampled.output, sampled.output
    record = json.loads((tmp_path / "rows.csv.provenance.json").read_text())
    assert record["generator"] == "fedsynth CK4Gen model" and record["differentially_private"] is False
    copied = runner.invoke(
        app, [*base, "-o", str(tmp_path / "copy"), "--generator", "ck4gen", "--config", str(tmp_path / "copy.toml")]
    )
    assert copied.exit_code == 0, copied.output
    assert "copies_real_values" in copied.output
    assert json.loads((tmp_path / "copy" / "model.json").read_text())["copies_real_values"] is True
    copied_rows = runner.invoke(app, ["sample", str(tmp_path / "copy"), "-n", "5", "-o", str(tmp_path / "copy.csv")])
    assert copied_rows.exit_code == 0 and "copied from a real training patient" in " ".join(copied_rows.output.split())
    assert "copied from a real" in json.loads((tmp_path / "copy.csv.provenance.json").read_text())["notice"]
    wrong = runner.invoke(
        app, [*base, "-o", str(tmp_path / "bad"), "--generator", "ck4gen", "--config", str(tmp_path / "bad.toml")]
    )
    assert wrong.exit_code == 2 and "outcome" in wrong.output and not (tmp_path / "bad").exists(), wrong.output


def test_a_teacher_trained_with_the_network_recovers_the_hazard_ratio_and_the_event_rate(data: pd.DataFrame) -> None:
    # teacher = "joint", the variant the sites train with DP-SGD, here without DP: its own
    # piecewise-exponential likelihood must find the same HR 2 (log 0.69, SE about 0.1 on 600 rows).
    joint = CK4Gen(seed=0, teacher="joint").fit(data, SCHEMA)
    assert joint.dp_training_refusal() is None and CK4Gen().dp_training_refusal() is not None
    beta = joint.network_.beta.detach()
    x_position = joint.network_.layout.heads[0].in_start
    assert abs(float(beta[x_position]) - fit_cox(data, SCHEMA).params_["x"]) < 0.25
    synthetic = joint.sample(3000, seed=2)
    assert abs(fit_cox(synthetic, SCHEMA).params_["x"] - np.log(2.0)) < 0.3
    assert abs(synthetic["event"].mean() - data["event"].mean()) < 0.06
    assert joint.training_info_["teacher"] == "joint" and joint.training_info_["distillation_r2"] > 0.8


def test_a_calibrated_model_draws_each_kept_rows_outcome_again(data: pd.DataFrame, modelled: CK4Gen) -> None:
    # Calibration keeps the covariates' DP margins and asks the distilled Cox model for outcomes.
    from fedsynth.marginals.tables import MarginalSpec, count_tables
    from fedsynth.marginals.target import MarginalTarget

    spec = MarginalSpec.from_schema(SCHEMA)
    calibrated = copy.deepcopy(modelled).calibrate_to(MarginalTarget(spec, count_tables(data, spec)))
    rows = calibrated.sample(1500, seed=4)
    assert len(rows) == 1500 and calibrated.redraws_outcome
    assert abs(rows[SCHEMA.event_column].mean() - data[SCHEMA.event_column].mean()) < 0.1
    assert not _pairs(rows) <= _pairs(data)  # outcomes drawn, not copied pairs
