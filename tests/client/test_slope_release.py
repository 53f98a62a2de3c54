"""A site's DP release of the survival head's slope score: planned with the run, reserved first,
released once per weights, noised around the exact clipped sum, and accounted exactly as an
independent Opacus RDP computation of the same history."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedsynth.client.config import SiteConfig
from fedsynth.client.marginal_release import release_marginals
from fedsynth.client.site import Site
from fedsynth.client.slope_release import (
    HeadSlopeRefusedError,
    check_head_slope_result,
    head_slope_round,
    release_head_slope,
)
from fedsynth.model.config import MCMConfig
from fedsynth.model.head_slope import slope_scores
from fedsynth.model.mcm import MCM
from tests.client.rdp_reference import independent_epsilon

TARGET = 3.0
HEAD = MCMConfig(hidden=16, n_bins=16, survival_head=True, survival_form="hazard")


def _site(whas500, tmp_path, **privacy) -> Site:  # type: ignore[no-untyped-def]
    frame, schema = whas500
    config = SiteConfig.from_dict(
        {"site": {"name": "a"}, "privacy": {"target_epsilon": TARGET, **privacy}, "training": {"local_epochs": 1}}
    )
    return Site(config, schema, tmp_path, frame=frame.iloc[:300])


def _state(site: Site, seed: int = 0) -> dict[str, torch.Tensor]:
    network = MCM(HEAD).build(site.schema).network_
    with torch.no_grad():
        weights = network.survival_head.effects.weight
        weights[1] = torch.randn(weights.shape[1], generator=torch.Generator().manual_seed(seed)) * 0.3
    return network.state_dict()


def _release(site: Site, state: dict[str, torch.Tensor], clip: float = 1.0):  # type: ignore[no-untyped-def]
    return release_head_slope(site, state, HEAD, run_id="r", planned_rounds=2, clip=clip)


def test_marginals_rounds_and_slope_compose_to_opacus_rdp_within_the_target(whas500, tmp_path) -> None:
    site = _site(whas500, tmp_path)
    marginals = release_marginals(site, run_id="r", planned_rounds=2, numeric_bins=8, time_bins=4, head_slope=True)
    state, history = _state(site), []
    for server_round in (1, 2):
        result = site.train_round(state, HEAD, run_id="r", server_round=server_round, planned_rounds=2)
        history.append((result.noise_multiplier, result.sample_rate, result.steps))
        state = result.state_dict
    release = _release(site, state)
    plan = site.plan("r", 2)
    assert release.noise_multiplier == plan.head_slope_noise_multiplier == 3.0
    slope_entries = [e for e in site.ledger.entries() if e.round == head_slope_round(2)]
    assert [(e.noise_multiplier, e.sample_rate, e.steps) for e in slope_entries] == [(3.0, 1.0, 1)]
    full = [(marginals.noise_multiplier, 1.0, 1), *history, (3.0, 1.0, 1)]
    reference = independent_epsilon(full, site.ledger.target_delta)
    assert release.epsilon == pytest.approx(reference, abs=1e-6) == site.ledger.epsilon()
    assert release.epsilon_step == pytest.approx(independent_epsilon(full[-1:], site.ledger.target_delta), abs=1e-6)
    # Planned from the start, the three spends fit the target and use most of it.
    assert TARGET - 0.05 <= reference <= TARGET
    site.close()


def test_the_release_is_the_clipped_score_sum_plus_noise_of_its_multiplier(whas500, tmp_path) -> None:
    residuals = []
    for seed in range(40):
        site = _site(whas500, tmp_path / str(seed))
        state = _state(site)
        site.plan("r", 2, head_slope=True)
        release = _release(site, state, clip=0.5)
        model = MCM(HEAD).build(site.schema)
        model.network_.load_state_dict(state)
        exact = float(slope_scores(model.network_, model.codes_tensor(site.train)).clamp(-0.5, 0.5).sum())
        residuals.append(release.score - exact)
        assert release.num_examples == len(site.train) and release.clip == 0.5
        site.close()
    # Noise of std z * C = 1.5 around the exact sum (fresh each release: 40 different draws).
    assert len(set(residuals)) == 40 and 1.0 < float(np.std(residuals)) < 2.0 and abs(float(np.mean(residuals))) < 0.8


def test_a_second_request_returns_the_stored_release_and_other_weights_are_refused(whas500, tmp_path) -> None:
    site = _site(whas500, tmp_path)
    site.plan("r", 2, head_slope=True)
    first = _release(site, _state(site))
    entries = site.ledger.entries()
    assert _release(site, _state(site)) == first and site.ledger.entries() == entries
    for state, clip in ((_state(site, seed=1), 1.0), (_state(site), 2.0)):
        with pytest.raises(HeadSlopeRefusedError, match="at other settings already"):
            _release(site, state, clip)
    for clip in (0.0, float("inf"), float("nan")):
        with pytest.raises(HeadSlopeRefusedError, match="not within"):
            _release(site, _state(site), clip)
    (tmp_path / "runs" / "r" / "head_slope.json").unlink()  # as if killed between reserve and store
    with pytest.raises(HeadSlopeRefusedError, match="never stored it"):
        _release(site, _state(site))
    assert site.ledger.entries() == entries
    site.close()


@pytest.mark.parametrize(("noise", "asked"), [(0.0, True), (3.0, False)])
def test_no_release_without_room_in_the_plan(whas500, tmp_path, noise, asked) -> None:
    # Noise 0 declines the release; a run planned without asking for it has no room left for it.
    site = _site(whas500, tmp_path, head_slope_noise_multiplier=noise)
    plan = site.plan("r", 2, head_slope=asked)
    assert plan.head_slope_noise_multiplier is None
    with pytest.raises(HeadSlopeRefusedError, match="releases no slope score"):
        _release(site, _state(site))
    assert site.ledger.entries() == [] and not (tmp_path / "runs" / "r" / "head_slope.json").exists()
    site.close()


def test_a_model_without_a_hazard_head_or_unfitting_weights_is_refused(whas500, tmp_path) -> None:
    site = _site(whas500, tmp_path)
    plain = MCMConfig(hidden=16, n_bins=16)
    with pytest.raises(HeadSlopeRefusedError, match="no hazard survival head"):
        release_head_slope(site, MCM(plain).build(site.schema).network_.state_dict(), plain, run_id="r",
                           planned_rounds=2, clip=1.0)  # fmt: skip
    with pytest.raises(HeadSlopeRefusedError, match="do not fit the model"):
        _release(site, {"survival_head.effects.weight": torch.zeros(1)})
    assert site.ledger.entries() == []
    site.close()


def test_the_reply_contract_refuses_anything_more(whas500, tmp_path) -> None:
    site = _site(whas500, tmp_path)
    site.plan("r", 2, head_slope=True)
    result = json.loads(json.dumps(_release(site, _state(site)).to_result()))
    check_head_slope_result(result)
    for bad, match in [
        ({**result, "scores": [0.1, 0.2]}, "unexpected fields"),
        ({**result, "score": float("nan")}, "finite"),
        ({**result, "num_examples": 0}, "positive"),
        ({**result, "weights_sha256": "ab"}, "SHA-256"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_head_slope_result(bad)
    site.close()
