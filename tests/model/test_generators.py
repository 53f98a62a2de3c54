"""Every generator behind one registry: configs carried with their name, any saved model loaded
by what it is, and DP marginal calibration for the decoding generators (Med-VAE)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.conditions import satisfies
from fedsynth.data.schema import Schema
from fedsynth.evaluation.fidelity import marginal_distances
from fedsynth.marginals.tables import MarginalSpec, count_tables
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.ck4gen import CK4Gen, CK4GenConfig
from fedsynth.model.config import MCMConfig
from fedsynth.model.generator_configs import UnknownGeneratorError, config_from_dict, config_to_dict
from fedsynth.model.generators import generator_digest, load_generator, new_generator, weights_digest
from fedsynth.model.mcm import MCM
from fedsynth.model.medvae import MedVAE, MedVAEConfig


@pytest.mark.parametrize(
    ("config", "name"),
    [(MCMConfig(hidden=8), "mcm"), (MedVAEConfig(latent=3), "medvae"), (CK4GenConfig(outcome="copy"), "ck4gen")],
)
def test_a_config_travels_with_its_generators_name(config, name) -> None:
    carried = config_to_dict(config)
    assert carried["generator"] == name
    assert config_from_dict(carried) == config and type(config_from_dict(carried)) is type(config)
    assert type(new_generator(config)).config_type is type(config)


def test_a_config_without_a_name_is_an_mcms_and_an_unknown_name_is_refused() -> None:
    assert config_from_dict({"hidden": 8}) == MCMConfig(hidden=8)  # as sent before other generators existed
    with pytest.raises(UnknownGeneratorError, match="unknown generator 'gan'; choose one of mcm, medvae, ck4gen"):
        config_from_dict({"generator": "gan"})


def test_any_saved_model_loads_as_what_it_is(whas500, tmp_path) -> None:
    frame, schema = whas500
    rows = frame.iloc[:150]
    for model in (MCM(epochs=1, hidden=8), MedVAE(epochs=1), CK4Gen(epochs=1)):
        path = model.fit(rows, schema).save(tmp_path / model.config_type.__name__)
        loaded = load_generator(path)
        assert type(loaded) is type(model) and weights_digest(loaded) == weights_digest(model)
        pd.testing.assert_frame_equal(loaded.sample(30, seed=4), model.sample(30, seed=4))


@pytest.fixture(scope="module")
def medvae(whas500) -> MedVAE:
    frame, schema = whas500
    return MedVAE(epochs=3).fit(frame, schema)


def _tvd(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> float:
    values = [d["value"] for d in marginal_distances(real, synthetic, schema).values() if d["statistic"] == "tv"]
    return float(np.mean(values))


def test_a_calibrated_medvae_matches_the_tables_keeps_conditions_and_survives_save(medvae, whas500, tmp_path) -> None:
    frame, schema = whas500
    spec = MarginalSpec.from_schema(schema)
    plain = medvae.sample(3000, seed=1)
    calibrated = load_generator(medvae.save(tmp_path / "plain")).calibrate_to(
        MarginalTarget(spec, count_tables(frame, spec))
    )
    tuned = calibrated.sample(3000, seed=1)
    # An undertrained VAE's marginals are off; the real tables' counts (exact here) pull them back.
    assert _tvd(frame, tuned, schema) < 0.02 < _tvd(frame, plain, schema)
    rows = calibrated.sample(800, conditions=["chf=1", "60<=age<=80"], seed=2)
    assert len(rows) == 800 and all(satisfies(rows, c).all() for c in calibrated.resolve(["chf=1", "60<=age<=80"]))
    again = load_generator(calibrated.save(tmp_path / "calibrated"))
    assert again.calibration_ is not None and generator_digest(again) == generator_digest(calibrated)
    assert generator_digest(again) != weights_digest(again)  # the tables are part of what it samples
    pd.testing.assert_frame_equal(again.sample(500, seed=3), calibrated.sample(500, seed=3))
    streamed = pd.concat(list(calibrated.sample_chunks(500, seed=3)), ignore_index=True)
    pd.testing.assert_frame_equal(streamed, calibrated.sample(500, seed=3))


def test_each_generator_names_the_parameters_a_dp_round_sends_averaged(whas500) -> None:
    _, schema = whas500
    mcm = MCM(MCMConfig(hidden=8, survival_head=True)).build(schema)
    parameters, share, min_steps = mcm.tail_averaged()
    assert {id(p) for p in parameters} == {id(p) for p in mcm.network_.survival_head.parameters()}
    assert (share, min_steps) == (mcm.config.survival_head_averaging, mcm.config.survival_head_averaging_min_steps)
    joint = CK4Gen(CK4GenConfig(teacher="joint", teacher_averaging=1.0)).build(schema)
    parameters, share, min_steps = joint.tail_averaged()
    network = joint.network_
    teacher = [network.coefficients.weight, network.log_event_rates.weight, network.log_censor_rates.weight]
    assert [id(p) for p in parameters] == [id(p) for p in teacher] and (share, min_steps) == (1.0, 100)
    assert CK4Gen().build(schema).tail_averaged() is None  # a fitted Cox teacher has no iterates
    assert MedVAE().build(schema).tail_averaged() is None
