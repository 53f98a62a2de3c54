"""The hazard-form survival head: its likelihood is a proper distribution and the sampler draws from it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsynth.data.datasets import load_dataset
from fedsynth.data.transforms import from_unit
from fedsynth.model.config import MCMConfig
from fedsynth.model.draws import draw_competing_hazards as _draw_competing_hazards
from fedsynth.model.generators import load_generator
from fedsynth.model.layout import Layout
from fedsynth.model.loss import hazard_log_probs, survival_hazard_nll
from fedsynth.model.mcm import MCM


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
    model.save(tmp_path / "model")
    reloaded = load_generator(tmp_path / "model")
    assert reloaded.network_.survival_form == "hazard"
    assert reloaded.sample(300, seed=0).equals(sample)


MARGINAL_LEVEL = {
    "survival_head": True,
    "survival_form": "hazard",
    "survival_centre": "marginal",
    "survival_level": True,
}


def test_the_marginal_encoding_reads_every_head_with_every_column_masked() -> None:
    # ACTG320 has numeric, binary and categorical (one-hot) covariates. The expected marginal is
    # computed here from the network's own trunk on an input with every column masked, through
    # each kind's formula, at the input positions of its column.
    _, schema = load_dataset("actg320")
    model = MCM(MCMConfig(hidden=16, n_bins=8, **MARGINAL_LEVEL), seed=0).build(schema)
    network, layout = model.network_, model.network_.layout
    assert layout.numeric and layout.binary and layout.categorical
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # heads far from uniform, so every kind's formula is exercised
        network.heads.weight.copy_(torch.randn(network.heads.weight.shape, generator=generator))
        network.heads.bias.copy_(torch.randn(layout.output_width, generator=generator) * 2)
    every_column = torch.ones(1, layout.n_columns, dtype=torch.bool)
    with torch.no_grad():
        logits = network.heads(network.trunk(torch.rand(1, layout.encoded_width), every_column))[0]
    centres = (torch.arange(8) + 0.5) / 8
    expected = torch.full((layout.encoded_width,), float("nan"))
    for head in layout.heads:
        head_logits = logits[head.out_start : head.out_stop]
        if head.column.is_numeric:
            expected[head.in_start] = torch.softmax(head_logits, 0) @ centres
        elif head.out_stop - head.out_start == 1:
            expected[head.in_start] = torch.sigmoid(head_logits)[0]
        else:
            expected[head.in_start : head.in_stop] = torch.softmax(head_logits, 0)
    assert not expected.isnan().any()
    marginal = network.marginal_encoding()
    torch.testing.assert_close(marginal, expected)
    assert not marginal.requires_grad
    # the masked pass ignores the cells: another row's encoding gives the same marginal
    with torch.no_grad():
        other = network.heads(network.trunk(torch.rand(1, layout.encoded_width), every_column))[0]
    torch.testing.assert_close(other, logits)


def test_covariates_at_the_marginal_mean_get_the_baseline_plus_the_level(whas500) -> None:
    # Centred at the model's marginal, a row at that mean has no covariate effect whatever the
    # effects are; the level shifts every bin of its cause by effect_scale times itself.
    _, schema = whas500
    config = MCMConfig(hidden=16, n_bins=8, survival_effect_scale=8.0, **MARGINAL_LEVEL)
    network = MCM(config, seed=0).build(schema).network_
    head = network.survival_head
    with torch.no_grad():
        head.effects.weight.normal_()
        head.effects.bias.copy_(torch.tensor([0.25, -0.5]))
    at_mean = network.marginal_encoding().unsqueeze(0)
    baseline = head.baseline.weight.detach().squeeze(1)
    shift = torch.tensor([0.25] * 8 + [-0.5] * 8) * 8.0
    torch.testing.assert_close(network.survival_logits(at_mean)[0].detach(), baseline + shift)
    other = at_mean + 0.1 * network.covariate_input
    assert not torch.allclose(network.survival_logits(other), network.survival_logits(at_mean))


def test_a_trained_models_marginal_encoding_is_close_to_the_data_means(whas500, tmp_path) -> None:
    # The all-masked pass is the model's marginal: after (non-private) training it must match
    # the training data's mean encoding, binary prevalences included. The centre is a function
    # of the weights, so a saved and reloaded model samples the same rows.
    frame, schema = whas500
    model = MCM(MCMConfig(hidden=32, n_bins=16, epochs=60, **MARGINAL_LEVEL), seed=0).fit(frame, schema)
    layout = model.network_.layout
    data_mean = layout.encode_codes(model.codes_tensor(frame)).mean(0)
    marginal = model.network_.marginal_encoding()
    covariate = model.network_.covariate_input.bool()
    assert (marginal - data_mean)[covariate].abs().max() < 0.06
    binary = [h.in_start for h in layout.binary if h.column.role == "feature"]
    assert min(float(data_mean[i]) for i in binary) < 0.35  # a skewed binary is in the check
    model.save(tmp_path / "model")
    reloaded = load_generator(tmp_path / "model")
    assert reloaded.config.survival_centre == "marginal" and reloaded.config.survival_level
    assert reloaded.sample(200, seed=1).equals(model.sample(200, seed=1))
