"""Per-covariate step rates of the survival head's effects, from marginal tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsynth.marginals.tables import MarginalSpec, count_tables
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.config import MCMConfig
from fedsynth.model.effect_rates import RATE_BOUNDS, check_rates, encoded_spreads, inverse_variance_rates
from fedsynth.model.mcm import MCM

HEAD = {"hidden": 8, "n_bins": 8, "survival_head": True, "survival_form": "hazard"}


def exact_target(frame, schema) -> MarginalTarget:
    spec = MarginalSpec.from_schema(schema)
    return MarginalTarget(spec, count_tables(frame, spec))


def test_spreads_from_exact_tables_match_the_rows_encoding(whas500) -> None:
    # Binary levels exactly; a numeric column within its 16 bins' resolution (uniform in a bin).
    frame, schema = whas500
    model = MCM(MCMConfig(**HEAD)).build(schema)
    layout = model.network_.layout
    encoded = layout.encode_codes(model.codes_tensor(frame)).numpy()
    spreads = encoded_spreads(layout, exact_target(frame, schema))
    for head in layout.heads:
        column = head.in_start
        if head.column.name in schema.covariates:
            tolerance = 1e-6 if not head.column.is_numeric else 0.01  # the encoding is float32
            assert spreads[column] == pytest.approx(encoded[:, column].std(), abs=tolerance), head.column.name
    time = next(h for h in layout.heads if h.column.name == schema.time_column)
    assert np.isnan(spreads[time.in_start])  # the outcome: only the time x event table describes it


def _inputs(model, schema, *names):  # noqa: ANN001, ANN202
    return [model.network_.layout.heads[schema.names.index(name)].in_start for name in names]


def test_rates_are_inverse_variances_normalised_by_their_geometric_mean(whas500) -> None:
    frame, schema = whas500
    model = MCM(MCMConfig(**HEAD, survival_effect_rates="marginals")).build(schema)
    network = model.network_
    target = exact_target(frame, schema)
    rates = np.asarray(model.effect_rates(target))
    live = network.covariate_input.numpy() > 0
    assert rates.shape == (network.layout.encoded_width,) and (rates[~live] == 1.0).all()
    spreads = encoded_spreads(network.layout, target)
    centre = np.exp(np.log(spreads[live]).mean())
    expected = np.where(live, (centre / spreads) ** 2, 1.0)
    av3, sho, age, chf = _inputs(model, schema, "av3", "sho", "age", "chf")
    assert expected[av3] > 1 and expected[sho] > 1  # the rare binaries: held at Adam's pace
    expected[[av3, sho]] = 1.0
    np.testing.assert_allclose(rates, expected)
    assert rates[age] > 6 * rates[chf]  # age spreads about a third of what chf does
    assert inverse_variance_rates(network.layout, target, np.zeros(len(rates))).tolist() == [1.0] * len(rates)


def test_a_near_constant_covariate_is_bounded(whas500) -> None:
    frame, schema = whas500
    frame = frame.assign(bmi=25.0, av3=0)  # variances of 0
    model = MCM(MCMConfig(**HEAD, survival_effect_rates="marginals")).build(schema)
    rates = np.asarray(model.effect_rates(exact_target(frame, schema)))
    bmi, av3 = _inputs(model, schema, "bmi", "av3")
    assert rates[bmi] == RATE_BOUNDS[1] and rates[av3] == 1.0 and (rates >= RATE_BOUNDS[0]).all()


def test_the_model_scales_its_effects_in_short_rounds_only_and_checks_what_it_is_sent(whas500) -> None:
    frame, schema = whas500
    model = MCM(MCMConfig(**HEAD, survival_effect_rates="marginals")).build(schema)
    rates = model.effect_rates(exact_target(frame, schema))
    parameter, multipliers = model.rate_scaled(rates, steps_per_round=15)
    assert parameter is model.network_.survival_head.effects.weight and multipliers.shape == parameter.shape
    torch.testing.assert_close(multipliers[1], torch.tensor(rates, dtype=parameter.dtype))
    assert model.rate_scaled(rates, steps_per_round=model.config.survival_head_averaging_min_steps) is None
    assert model.rate_scaled(None, steps_per_round=15) is None
    with pytest.raises(ValueError, match="must hold"):
        model.rate_scaled(rates[:-1], 15)
    with pytest.raises(ValueError, match="within"):
        model.rate_scaled([100.0] * len(rates), 15)
    with pytest.raises(ValueError, match="does not ask"):
        MCM(MCMConfig(**HEAD)).build(schema).rate_scaled(rates, 15)
    assert MCM(MCMConfig(**HEAD)).build(schema).effect_rates(exact_target(frame, schema)) is None


def test_check_rates_refuses_what_is_not_a_bounded_list_of_numbers() -> None:
    assert check_rates([1, 2.5], 2).tolist() == [1.0, 2.5]
    for bad in (["a", 1], [float("nan"), 1.0], [0.0, 1.0], [[1.0, 1.0]]):
        with pytest.raises(ValueError):
            check_rates(bad, 2)
