"""Model-only sampling: every row satisfies every condition; seeded; nothing copied."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsynth.data.conditions import ConditionError
from fedsynth.data.schema import ColumnKind, Schema
from fedsynth.data.transforms import from_unit
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from fedsynth.privacy.copies import exact_copy_count


@st.composite
def condition_sets(draw, schema: Schema) -> list[str]:
    """Random equality, set and range conditions on 1-3 distinct columns of the schema."""
    columns = draw(st.lists(st.sampled_from(schema.columns), min_size=1, max_size=3, unique_by=lambda c: c.name))
    out = []
    for column in columns:
        if column.is_numeric:
            a = draw(st.floats(column.lower, column.upper))
            b = draw(st.floats(column.lower, column.upper))
            lo, hi = min(a, b), max(a, b)
            if column.kind == ColumnKind.INTEGER:
                lo, hi = np.ceil(lo), np.floor(hi)
                if lo > hi:
                    lo = hi = float(np.floor(b))
            kind = draw(st.sampled_from(["range", "lower", "upper", "equal"]))
            out.append(
                {
                    "range": f"{lo:.10g}<={column.name}<={hi:.10g}",
                    "lower": f"{column.name}>={lo:.10g}",
                    "upper": f"{column.name}<={hi:.10g}",
                    "equal": f"{column.name}={lo:.10g}",
                }[kind]
            )
        else:
            labels = draw(st.lists(st.sampled_from(column.labels), min_size=1, unique=True))
            out.append(f"{column.name} in {{{','.join(labels)}}}" if len(labels) > 1 else f"{column.name}={labels[0]}")
    return out


def _check_rows(frame: pd.DataFrame, model: MCM, conditions: list[str]) -> None:
    from fedsynth.data.conditions import satisfies

    for resolved in model.resolve(conditions):
        assert satisfies(frame, resolved).all(), resolved


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_row_satisfies_random_conditions_whas(small_model: MCM, data) -> None:
    conditions = data.draw(condition_sets(small_model.schema_))
    frame = small_model.sample(200, conditions, seed=data.draw(st.integers(0, 10_000)))
    assert len(frame) == 200
    _check_rows(frame, small_model, conditions)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_row_satisfies_random_conditions_gbsg2(gbsg2_model: MCM, data) -> None:
    conditions = data.draw(condition_sets(gbsg2_model.schema_))
    frame = gbsg2_model.sample(150, conditions, seed=data.draw(st.integers(0, 10_000)))
    _check_rows(frame, gbsg2_model, conditions)


def test_sampling_is_deterministic_given_seed(small_model: MCM) -> None:
    a = small_model.sample(300, ["chf=1"], seed=5)
    b = small_model.sample(300, ["chf=1"], seed=5)
    c = small_model.sample(300, ["chf=1"], seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_output_is_canonical_and_in_bounds(small_model: MCM) -> None:
    frame = small_model.sample(2000, seed=1)
    schema = small_model.schema_
    assert list(frame.columns) == schema.names
    for column in schema.columns:
        if column.is_numeric:
            assert frame[column.name].between(column.lower, column.upper).all()
            if column.kind == ColumnKind.INTEGER:
                assert frame[column.name].dtype == np.int64
        else:
            assert set(frame[column.name]) <= {0, 1}


def test_batches_larger_than_one_row_group(small_model: MCM) -> None:
    from fedsynth.model.sampler import GROUP_ROWS

    n = GROUP_ROWS + 3000  # two groups, run on the thread pool
    frame = small_model.sample(n, ["60<=age<=80"], seed=2)
    assert len(frame) == n and frame["age"].between(60, 80).all()
    # a range draw covers its whole support, endpoints included
    assert {60, 80} <= set(frame["age"])


def test_conditioning_shifts_the_distribution(small_model: MCM) -> None:
    """A fixed value must condition the rest: dead patients have shorter follow-up."""
    dead = small_model.sample(3000, ["fstat=1"], seed=3)
    alive = small_model.sample(3000, ["fstat=0"], seed=3)
    assert dead["lenfol"].median() < alive["lenfol"].median()


def test_exact_equality_on_continuous_column(small_model: MCM) -> None:
    frame = small_model.sample(100, ["bmi=25.5"], seed=0)
    assert (frame["bmi"] == 25.5).all()


def test_zero_rows_and_bad_conditions(small_model: MCM) -> None:
    assert len(small_model.sample(0)) == 0
    with pytest.raises(ConditionError, match="unknown column"):
        small_model.sample(10, ["diabetes=1"])
    with pytest.raises(ValueError, match="n must be"):
        small_model.sample(-1)


def test_no_training_row_is_reproduced(small_model: MCM, whas_split) -> None:
    train = whas_split[0]
    synthetic = small_model.sample(5000, seed=11)
    assert exact_copy_count(synthetic, train) == 0


def test_draw_order_tiers(small_model: MCM) -> None:
    """Constrained columns first, fixed ones never, outcome last when asked; random per row."""
    import torch

    from fedsynth.model.sampler import ConditionalSampler

    schema = small_model.schema_
    resolved = small_model.resolve(["chf=1", "60<=age<=80"])
    age, chf = schema.names.index("age"), schema.names.index("chf")
    outcome = {schema.names.index("lenfol"), schema.names.index("fstat")}
    sampler = ConditionalSampler(small_model.network_, small_model.transformer, outcome_last=True)
    order = sampler.draw_order(500, resolved, torch.Generator().manual_seed(0))
    assert order.shape == (500, len(schema.names) - 1)
    assert (order[:, 0] == age).all()
    assert not (order == chf).any()
    assert all(set(row[-2:]) == outcome for row in order.tolist())
    assert len({tuple(row) for row in order.tolist()}) > 450  # orders differ row by row
    plain = ConditionalSampler(small_model.network_, small_model.transformer).draw_order(
        2000, [], torch.Generator().manual_seed(1)
    )
    first = torch.bincount(plain[:, 0], minlength=len(schema.names)).float() / 2000
    assert (first - 1 / len(schema.names)).abs().max() < 0.03  # every column equally likely first


def test_the_survival_head_draws_the_outcome_unless_a_condition_is_on_it(whas500) -> None:
    frame, schema = whas500
    config = MCMConfig(hidden=16, n_bins=16, survival_head=True, survival_form="joint", outcome_last=False)
    model = MCM(config, seed=0).build(schema)
    head = model.network_.survival_head
    n_bins = model.network_.layout.n_bins
    with torch.no_grad():  # a head certain of (event = 1, time bin 3)
        head.weight.zero_()
        head.bias.fill_(-50.0)
        head.bias[n_bins + 3] = 50.0
    sample = model.sample(400, seed=0)
    low, high = (float(from_unit(schema.column(schema.time_column), u)) for u in (3 / 16, 4 / 16))
    assert (sample[schema.event_column] == 1).all()
    assert sample[schema.time_column].between(low - 1, high + 1).all()  # integer days: rounding
    # A condition on the outcome is drawn by the MCM's own heads, honouring it (not the head's 1).
    conditioned = model.sample(100, [f"{schema.event_column}=0"], seed=0)
    assert (conditioned[schema.event_column] == 0).all()
    assert not conditioned[schema.time_column].between(low - 1, high + 1).all()
