"""A site's DP marginal release: planned with DP-SGD, reserved first, released once, and accounted
exactly as an independent Opacus RDP computation of the same history."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsynth.client.config import SiteConfig
from fedsynth.client.dp_training import marginal_noise_for_share, plan_dp
from fedsynth.client.marginal_release import (
    MARGINALS_ROUND,
    MarginalsRefusedError,
    check_marginals_result,
    release_marginals,
)
from fedsynth.client.rdp import rdp_epsilon
from fedsynth.client.site import Site
from fedsynth.marginals.tables import MarginalSpec, count_tables, tables_from_json
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from tests.client.rdp_reference import independent_epsilon

TARGET = 3.0


def _site(whas500, tmp_path, **privacy) -> Site:  # type: ignore[no-untyped-def]
    frame, schema = whas500
    config = SiteConfig.from_dict(
        {"site": {"name": "a"}, "privacy": {"target_epsilon": TARGET, **privacy}, "training": {"local_epochs": 1}}
    )
    return Site(config, schema, tmp_path, frame=frame.iloc[:300])


def _release(site: Site, **bins: int):  # type: ignore[no-untyped-def]
    return release_marginals(
        site, run_id="r", planned_rounds=2, numeric_bins=bins.get("numeric", 8), time_bins=bins.get("time", 4)
    )


def _train_all_rounds(site: Site) -> list[tuple[float, float, int]]:
    model_config = MCMConfig(hidden=16, n_bins=16)
    state = MCM(model_config).build(site.schema).network_.state_dict()
    history = []
    for server_round in (1, 2):
        result = site.train_round(state, model_config, run_id="r", server_round=server_round, planned_rounds=2)
        history.append((result.noise_multiplier, result.sample_rate, result.steps))
        state = result.state_dict
    return history


def test_the_marginal_noise_costs_its_share_alone() -> None:
    delta = 1e-3
    noise = marginal_noise_for_share(0.25, 4.0, delta)
    assert rdp_epsilon([(noise, 1.0, 1)], delta) == pytest.approx(1.0, rel=2e-3)
    assert rdp_epsilon([(noise, 1.0, 1)], delta) <= 1.0
    assert marginal_noise_for_share(0.0, 4.0, delta) is None


@pytest.mark.parametrize("marginals_first", [True, False])
def test_reported_epsilon_of_marginals_and_rounds_equals_opacus_rdp(whas500, tmp_path, marginals_first) -> None:
    site = _site(whas500, tmp_path)
    if marginals_first:
        release = _release(site)
        history = _train_all_rounds(site)
    else:
        history = _train_all_rounds(site)
        release = _release(site)
    plan = site.plan("r", 2)
    assert plan.marginal_noise_multiplier == release.noise_multiplier
    # The ledger holds one step at sample rate 1 for the tables, reserved under round 0.
    marginal = [e for e in site.ledger.entries() if e.round == MARGINALS_ROUND]
    assert [(e.noise_multiplier, e.sample_rate, e.steps) for e in marginal] == [(release.noise_multiplier, 1.0, 1)]
    full = [(release.noise_multiplier, 1.0, 1), *history]
    reference = independent_epsilon(full, site.ledger.target_delta)
    assert site.ledger.epsilon() == pytest.approx(reference, abs=1e-6)
    assert site.ledger.entries()[-1].epsilon_after == pytest.approx(reference, abs=1e-6)
    assert release.epsilon_step == pytest.approx(independent_epsilon(full[:1], site.ledger.target_delta), abs=1e-6)
    # Planned together, the two fit the target whichever came first, and use most of it.
    assert TARGET - 0.05 <= reference <= TARGET
    site.close()


def test_a_second_request_returns_the_stored_tables_without_spending(whas500, tmp_path) -> None:
    site = _site(whas500, tmp_path)
    first = _release(site)
    entries = site.ledger.entries()
    again = _release(site)
    assert again == first and site.ledger.entries() == entries
    spec = MarginalSpec.from_schema(site.schema, numeric_bins=8, time_bins=4)
    noisy = check_marginals_result(json.loads(json.dumps(first.to_result())), spec)
    exact = count_tables(site.train, spec)
    assert set(noisy) == set(exact)
    # Noise of std z * sqrt(#tables) was added (the tables are not the exact counts), around them.
    residuals = np.concatenate([(noisy[k] - exact[k]).ravel() for k in exact])
    std = first.noise_multiplier * spec.l2_sensitivity
    assert np.all(residuals != 0) and 0.7 * std < residuals.std() < 1.3 * std
    with pytest.raises(MarginalsRefusedError, match="on other bins already"):
        _release(site, numeric=16)
    site.close()


def test_an_interrupted_release_is_not_released_again(whas500, tmp_path) -> None:
    site = _site(whas500, tmp_path)
    _release(site)
    (tmp_path / "runs" / "r" / "marginals.json").unlink()  # as if killed between reserve and store
    entries = site.ledger.entries()
    with pytest.raises(MarginalsRefusedError, match="never stored the tables"):
        _release(site)
    assert site.ledger.entries() == entries
    site.close()


def test_share_zero_releases_nothing_and_leaves_the_plan_unchanged(whas500, tmp_path) -> None:
    site = _site(whas500, tmp_path, marginals_share=0.0)
    with pytest.raises(MarginalsRefusedError, match="marginals_share = 0"):
        _release(site)
    assert site.ledger.entries() == [] and not (tmp_path / "runs" / "r" / "marginals.json").exists()
    plan = site.plan("r", 2)
    privacy, training = site.config.privacy, site.config.training
    alone = plan_dp(
        n_records=site.n_train, batch_size=training.batch_size, local_epochs=training.local_epochs,
        planned_rounds=2, target_epsilon=TARGET, target_delta=site.ledger.target_delta,
        max_grad_norm=privacy.max_grad_norm,
    )  # fmt: skip
    assert plan == alone and plan.marginal_noise_multiplier is None
    site.close()


def test_the_reply_contract_refuses_anything_more(whas500, tmp_path) -> None:
    site = _site(whas500, tmp_path)
    result = _release(site).to_result()
    spec = MarginalSpec.from_schema(site.schema, numeric_bins=8, time_bins=4)
    with pytest.raises(ValueError, match="unexpected fields"):
        check_marginals_result({**result, "rows": "[]"}, spec)
    with pytest.raises(ValueError, match="another spec"):
        check_marginals_result(result, MarginalSpec.from_schema(site.schema, numeric_bins=16, time_bins=4))
    tables = tables_from_json(result["tables"])
    tables["age"] = np.append(tables["age"], 1.0)
    broken = {**result, "tables": json.dumps({k: v.tolist() for k, v in tables.items()})}
    with pytest.raises(ValueError, match="expected shape"):
        check_marginals_result(broken, spec)
    with pytest.raises(ValueError, match="positive number"):
        check_marginals_result({**result, "epsilon": float("nan")}, spec)
    site.close()
