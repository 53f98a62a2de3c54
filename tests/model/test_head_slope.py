"""The survival head's calibration slope: per-record scores, information and the Newton step."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from fedsynth.model.draws import draw_competing_hazards
from fedsynth.model.head_slope import (
    SLOPE_BOUNDS,
    event_linear_predictor,
    expected_scores,
    scale_event_effects,
    score_clip,
    slope_information,
    slope_scores,
    solve_slope,
)
from fedsynth.model.loss import survival_hazard_nll
from fedsynth.model.mcm import MCM


@pytest.fixture(scope="module")
def head_model(whas_split, whas500) -> MCM:
    model = MCM(epochs=2, survival_head=True, seed=0).fit(whas_split[0], whas500[1])
    with torch.no_grad():  # effects of a clear size, so the slope is well informed
        weights = model.network_.survival_head.effects.weight
        weights[1] = torch.randn(weights.shape[1], generator=torch.Generator().manual_seed(0)) * 0.2
    return model


def _log_likelihood(network, codes: torch.Tensor, slope: float) -> torch.Tensor:
    scaled = copy.deepcopy(network)
    scale_event_effects(scaled, slope)
    with torch.no_grad():
        return -survival_hazard_nll(scaled.layout, scaled.survival_logits(scaled.layout.encode_codes(codes)), codes)


def test_each_records_score_is_the_derivative_of_its_log_likelihood_in_the_slope(head_model, whas_split) -> None:
    network = head_model.network_.double()
    codes = head_model.codes_tensor(whas_split[0]).double()
    h = 1e-5
    numeric = (_log_likelihood(network, codes, 1 + h) - _log_likelihood(network, codes, 1 - h)) / (2 * h)
    scores = slope_scores(network, codes)
    head_model.network_.float()
    assert scores.abs().max() > 0.05  # the effects are not zero: a real check
    torch.testing.assert_close(scores, numeric, atol=1e-6, rtol=1e-5)


def _with_outcomes_drawn(model: MCM, frame, slope: float, repeats: int, seed: int) -> torch.Tensor:
    """The frame's covariates ``repeats`` times, with (event, time bin) drawn from the head whose
    event effects are scaled by ``slope``: records whose true slope is known."""
    network = copy.deepcopy(model.network_)
    scale_event_effects(network, slope)
    layout = network.layout
    codes = model.codes_tensor(frame).repeat(repeats, 1)
    with torch.no_grad():
        logits = network.survival_logits(layout.encode_codes(codes))
    cause, time_bin = draw_competing_hazards(logits, torch.Generator().manual_seed(seed))
    time = next(h for h in layout.heads if h.column.role == "time")
    event = next(h for h in layout.heads if h.column.role == "event")
    codes[:, time.index] = (time_bin.float() + 0.5) / layout.n_bins
    codes[:, event.index] = cause.float()
    return codes


@pytest.mark.parametrize("true_slope", [0.6, 1.0, 1.6])
def test_the_solved_slope_is_the_one_the_records_were_drawn_with(head_model, whas_split, true_slope) -> None:
    # The records' scores at slope 1 (what sites release) against the expected score of other
    # rows with the same covariate distribution (what the coordinator computes from the model).
    network = head_model.network_
    codes = _with_outcomes_drawn(head_model, whas_split[0], true_slope, repeats=40, seed=1)
    model_rows = network.layout.encode_codes(head_model.codes_tensor(whas_split[1]))
    solved = solve_slope(float(slope_scores(network, codes).sum()), network, model_rows, [(len(codes), math.inf)])
    assert solved == pytest.approx(true_slope, abs=0.08)
    # Clipped hard at the sites (most records' scores are cut), the clipped expectation still finds it.
    clipped = float(slope_scores(network, codes).clamp(-0.1, 0.1).sum())
    assert solve_slope(clipped, network, model_rows, [(len(codes), 0.1)]) == pytest.approx(true_slope, abs=0.1)
    assert (
        abs(solve_slope(clipped, network, model_rows, [(len(codes), math.inf)]) - true_slope) > 0.1 or true_slope == 1.0
    )


def test_the_expected_score_is_zero_at_slope_one_and_rises_with_it(head_model, whas_split) -> None:
    network = head_model.network_
    encoded = network.layout.encode_codes(head_model.codes_tensor(whas_split[0]))
    totals = [float(expected_scores(network, encoded, s).sum()) for s in (0.5, 0.8, 1.0, 1.3, 2.0)]
    assert totals[2] == pytest.approx(0.0, abs=1e-5)
    assert totals == sorted(totals) and totals[0] < 0 < totals[-1]


def test_the_information_and_the_expected_clipped_score_are_what_draws_give(head_model, whas_split) -> None:
    network = head_model.network_
    codes = _with_outcomes_drawn(head_model, whas_split[0].head(20), 1.0, repeats=5000, seed=2)
    scores = slope_scores(network, codes).reshape(5000, 20)
    encoded = network.layout.encode_codes(codes[:20])
    torch.testing.assert_close(scores.var(dim=0), slope_information(network, encoded), atol=0.02, rtol=0.1)
    # Drawn at slope 1.5, scored at 1 and clipped at 0.2: the exact expectation is the draws' mean.
    drawn = _with_outcomes_drawn(head_model, whas_split[0].head(20), 1.5, repeats=5000, seed=4)
    clipped = slope_scores(network, drawn).clamp(-0.2, 0.2).reshape(5000, 20).mean(dim=0)
    torch.testing.assert_close(clipped, expected_scores(network, encoded, 1.5, clip=0.2), atol=0.008, rtol=0)


def test_the_slope_stays_within_its_bounds(head_model, whas_split) -> None:
    network = head_model.network_
    encoded = network.layout.encode_codes(head_model.codes_tensor(whas_split[0]))
    assert solve_slope(1e6, network, encoded, [(100, 1.0)]) == SLOPE_BOUNDS[1]
    assert solve_slope(-1e6, network, encoded, [(100, 1.0)]) == SLOPE_BOUNDS[0]
    assert solve_slope(0.0, network, encoded, [(100, math.inf)]) == pytest.approx(1.0, abs=1e-6)


def test_scaling_touches_only_the_event_effects(head_model, whas_split) -> None:
    network = copy.deepcopy(head_model.network_)
    head = network.survival_head
    before = {k: v.clone() for k, v in network.state_dict().items()}
    encoded = network.layout.encode_codes(head_model.codes_tensor(whas_split[0]))
    eta = event_linear_predictor(network, encoded)
    scale_event_effects(network, 1.5)
    after = network.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["survival_head.effects.weight"]
    torch.testing.assert_close(head.effects.weight[0], before["survival_head.effects.weight"][0])
    torch.testing.assert_close(event_linear_predictor(network, encoded), 1.5 * eta)


def test_the_clip_is_the_quantile_of_the_scores_the_head_gives(head_model, whas_split) -> None:
    network = head_model.network_
    codes = _with_outcomes_drawn(head_model, whas_split[0], 1.0, repeats=40, seed=5)
    clip = score_clip(network, network.layout.encode_codes(head_model.codes_tensor(whas_split[0])), quantile=0.9)
    assert float((slope_scores(network, codes).abs() > clip).float().mean()) == pytest.approx(0.1, abs=0.01)
