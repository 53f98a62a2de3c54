"""The survival head's fixed centres: encoded means under marginal tables, set and checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsynth.marginals.tables import MarginalSpec, count_tables
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.config import MCMConfig
from fedsynth.model.generators import load_generator
from fedsynth.model.layout import INDICATOR_SUFFIX
from fedsynth.model.mcm import MCM
from fedsynth.model.table_moments import check_centres, encoded_moments, table_centres
from tests.missing import blank

HEAD = {"hidden": 8, "n_bins": 8, "survival_head": True, "survival_form": "hazard", "survival_centre": "tables"}


def exact_target(frame, schema) -> MarginalTarget:
    spec = MarginalSpec.from_schema(schema)
    return MarginalTarget(spec, count_tables(frame, spec))


def test_means_from_exact_tables_match_the_inputs_the_network_reads(whas500) -> None:
    # With modelled missing cells (inputs 0) in a numeric and a binary column: binary levels and
    # indicators exactly; a numeric column within its 16 bins' resolution (uniform in a bin).
    frame, schema = blank(*whas500, {"bmi": 0.3, "chf": 0.2})
    model = MCM(MCMConfig(**HEAD)).build(schema)
    layout = model.network_.layout
    encoded = layout.encode_codes(model.codes_tensor(frame)).numpy()
    means, _ = encoded_moments(layout, exact_target(frame, schema))
    checked = set()
    for head in layout.heads:
        if head.column.name.removesuffix(INDICATOR_SUFFIX) in schema.covariates:
            tolerance = 1e-6 if not head.column.is_numeric else 0.01
            real = encoded[:, head.in_start : head.in_stop].mean(0)
            assert means[head.in_start : head.in_stop] == pytest.approx(real, abs=tolerance), head.column.name
            checked.add(head.column.name)
    assert {"bmi", "chf", "age", f"bmi{INDICATOR_SUFFIX}", f"chf{INDICATOR_SUFFIX}"} <= checked
    time = next(h for h in layout.heads if h.column.name == schema.time_column)
    assert np.isnan(means[time.in_start])
    assert table_centres(layout, exact_target(frame, schema))[time.in_start] == 0.5


def test_the_model_centres_on_the_tables_and_the_head_reads_them(whas500) -> None:
    frame, schema = whas500
    model = MCM(MCMConfig(**HEAD)).build(schema)
    network = model.network_
    assert torch.all(network.covariate_centre() == 0.5)  # until the coordinator sets them
    values = model.centre_on_tables(exact_target(frame, schema))
    torch.testing.assert_close(network.covariate_centre(), torch.tensor(values, dtype=torch.float32))
    encoded = network.layout.encode_codes(model.codes_tensor(frame[:5]))
    expected = network.survival_head((encoded - torch.tensor(values, dtype=torch.float32)) * network.covariate_input)
    torch.testing.assert_close(network.survival_logits(encoded), expected)
    age = network.layout.heads[schema.names.index("age")].in_start
    assert 0.3 < values[age] < 0.7 and "survival_centre_values" in network.state_dict()
    # Other centres keep no buffer (older saved models load unchanged) and take no table values.
    marginal = MCM(MCMConfig(**{**HEAD, "survival_centre": "marginal"})).build(schema)
    assert marginal.centre_on_tables(exact_target(frame, schema)) is None
    assert "survival_centre_values" not in marginal.network_.state_dict()


def test_a_plain_fit_centres_on_its_own_rows_and_the_centres_are_saved(whas500, tmp_path) -> None:
    frame, schema = whas500
    model = MCM(MCMConfig(**HEAD, epochs=1, validation_fraction=0.0)).fit(frame, schema)
    rows = model.network_.layout.encode_codes(model.codes_tensor(frame)).mean(0)
    torch.testing.assert_close(model.network_.covariate_centre(), rows)
    reloaded = load_generator(model.save(tmp_path / "m"))
    torch.testing.assert_close(reloaded.network_.covariate_centre(), rows)


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5])
def test_centres_outside_the_encoding_are_refused(whas500, bad) -> None:
    frame, schema = whas500
    model = MCM(MCMConfig(**HEAD)).build(schema)
    assert model.received_state_refusal() is None
    model.network_.survival_centre_values[3] = bad
    assert "within [0, 1]" in model.received_state_refusal()
    with pytest.raises(ValueError, match="must hold 4 numbers"):
        check_centres([0.5, 0.5], 4)
