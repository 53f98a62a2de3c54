"""The survival head's event share set to the DP tables' by one shift of its event log-hazards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.marginals.tables import MarginalSpec, count_tables
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.calibrated import calibrated_frames
from fedsynth.model.draws import draw_competing_hazards, event_probability, solve_event_offset
from fedsynth.model.mcm import MCM


def test_the_event_probability_is_what_the_draws_give() -> None:
    logits = torch.randn(4, 2 * 5, generator=torch.Generator().manual_seed(0))
    repeats = 100_000
    cause, _ = draw_competing_hazards(logits.repeat_interleave(repeats, dim=0), torch.Generator().manual_seed(1))
    drawn = cause.reshape(4, repeats).float().mean(dim=1)
    torch.testing.assert_close(event_probability(logits), drawn, atol=0.006, rtol=0)


@pytest.mark.parametrize("share", [0.05, 0.6])
def test_the_offset_reaches_the_share_and_keeps_every_rows_event_contrast(share) -> None:
    logits = torch.randn(200, 2 * 8, generator=torch.Generator().manual_seed(2))
    offset = solve_event_offset(logits, share)
    shifted = logits.clone()
    shifted[:, 8:] += offset
    assert float(event_probability(shifted).mean()) == pytest.approx(share, abs=1e-4)
    torch.testing.assert_close(shifted[:, 8:] - shifted[:1, 8:], logits[:, 8:] - logits[:1, 8:])


def test_the_tables_event_share(whas500) -> None:
    frame, schema = whas500
    spec = MarginalSpec.from_schema(schema)
    target = MarginalTarget(spec, count_tables(frame, spec))
    assert target.event_share() == pytest.approx(frame[schema.event_column].mean())
    assert MarginalTarget(spec, {}).event_share() is None


def test_a_calibrated_head_model_samples_the_tables_event_share(whas_split, whas500) -> None:
    # Tables whose event share (15%) is far from what the head learnt (about 43%): the shifted
    # head's samples read the tables' share, the unshifted head's do not.
    frame, schema = whas500
    event = schema.event_column
    rng = np.random.default_rng(0)
    rare = frame.assign(**{event: np.where(rng.random(len(frame)) < 0.15, 1, 0)})
    spec = MarginalSpec.from_schema(schema)
    model = MCM(epochs=5, survival_head=True, seed=0).fit(whas_split[0], schema)
    model.calibrate_to(MarginalTarget(spec, count_tables(rare, spec)))
    share = model.calibration_.event_share()
    sample = model.sample(4000, seed=3)
    assert sample[event].mean() == pytest.approx(share, abs=0.03)
    sampler = model._sampler(4000)
    unshifted = pd.concat(list(calibrated_frames(sampler, model.calibration_, 4000, [], 3)), ignore_index=True)
    assert unshifted[event].mean() > share + 0.1
    subgroup = model.sample(1000, conditions=["chf=1"], seed=4)  # the same shift: one per tables
    assert len(model._event_offsets) == 1 and (subgroup["chf"] == 1).all()
