"""The hazard-form survival head: its likelihood is a proper distribution and the sampler draws from it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsynth.data.transforms import from_unit
from fedsynth.model.config import MCMConfig
from fedsynth.model.layout import Layout
from fedsynth.model.loss import hazard_log_probs, survival_hazard_nll
from fedsynth.model.mcm import MCM
from fedsynth.model.persistence import load_model, save_model
from fedsynth.model.sampler import _draw_competing_hazards


def _outcome_codes(layout: Layout, cause: int, time_bin: int) -> torch.Tensor:
    codes = torch.zeros(1, layout.n_columns)
    time = next(h for h in layout.heads if h.column.role == "time")
    event = next(h for h in layout.heads if h.column.role == "event")
    codes[0, time.index] = (time_bin + 0.5) / layout.n_bins
    codes[0, event.index] = float(cause)
    return codes


def test_the_hazard_likelihood_matches_a_hand_computation_and_sums_to_one(whas500) -> None:
    _, schema = whas500
    layout = Layout(schema, 4)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 8, generator=generator)  # censoring bins 0-3, then event bins 0-3
    censor, event = logits[0, :4].tolist(), logits[0, 4:].tolist()

    def by_hand(cause: int, time_bin: int) -> float:
        log_p = 0.0
        for j in range(time_bin):
            log_p -= math.log(1 + math.exp(censor[j]) + math.exp(event[j]))
        eta = (censor, event)[cause][time_bin]
        if time_bin == 3:  # the last bin: the row ends, only the two causes compete
            return log_p + eta - math.log(math.exp(censor[3]) + math.exp(event[3]))
        return log_p + eta - math.log(1 + math.exp(censor[time_bin]) + math.exp(event[time_bin]))

    total = 0.0
    for cause in (0, 1):
        for time_bin in range(4):
            nll = float(survival_hazard_nll(layout, logits, _outcome_codes(layout, cause, time_bin))[0])
            assert nll == pytest.approx(-by_hand(cause, time_bin), rel=1e-5)
            total += math.exp(-nll)
    assert total == pytest.approx(1.0, rel=1e-5)


def test_the_sampler_draws_the_outcomes_with_the_likelihoods_probabilities() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 10, generator=generator).expand(200_000, -1)
    cause, time_bin = _draw_competing_hazards(logits, torch.Generator().manual_seed(2))
    log_nothing, log_cause = hazard_log_probs(logits[:1])
    survived = torch.cumsum(torch.nn.functional.pad(log_nothing[:, :-1], (1, 0)), dim=1)
    expected = torch.exp(survived.unsqueeze(1) + log_cause)[0]  # (2 causes, 5 bins)
    assert float(expected.sum()) == pytest.approx(1.0, rel=1e-5)
    observed = np.zeros((2, 5))
    np.add.at(observed, (cause.numpy(), time_bin.numpy()), 1.0)
    observed /= len(cause)
    # 200k draws: each cell's share within ~4 standard errors of its probability
    assert np.abs(observed - expected.numpy()).max() < 4 * math.sqrt(0.25 / 200_000) + 1e-3


def test_a_hazard_head_certain_of_an_outcome_decides_every_unconditioned_row(whas500, tmp_path) -> None:
    frame, schema = whas500
    config = MCMConfig(hidden=16, n_bins=16, survival_head=True, survival_form="hazard", outcome_last=False)
    model = MCM(config, seed=0).build(schema)
    head = model.network_.survival_head
    with torch.no_grad():  # nothing happens before bin 5, where the event always does
        head.baseline.weight.fill_(-50.0)
        head.baseline.weight[16 + 5] = 50.0
    sample = model.sample(300, seed=0)
    low, high = (float(from_unit(schema.column(schema.time_column), u)) for u in (5 / 16, 6 / 16))
    assert (sample[schema.event_column] == 1).all()
    assert sample[schema.time_column].between(low - 1, high + 1).all()
    save_model(model, tmp_path / "model")
    reloaded = load_model(tmp_path / "model")
    assert reloaded.network_.survival_form == "hazard"
    assert reloaded.sample(300, seed=0).equals(sample)
