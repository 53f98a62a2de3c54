"""A site's rounds: ledger spend matches Opacus, the budget holds, the split is persistent."""

from __future__ import annotations

import pytest

from fedsynth.client.config import SiteConfig
from fedsynth.client.ledger import BudgetExceededError, LedgerError
from fedsynth.client.site import Site, SiteError
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from tests.client.rdp_reference import independent_epsilon


def _config(**privacy) -> SiteConfig:
    return SiteConfig.from_dict(
        {"site": {"name": "a"}, "privacy": {"target_epsilon": 3.0, **privacy}, "training": {"local_epochs": 2}}
    )


def test_rounds_spend_what_opacus_computes_and_stop_at_the_budget(whas500, tmp_path) -> None:
    frame, schema = whas500
    site = Site(_config(), schema, tmp_path, frame=frame.iloc[:300])
    model_config = MCMConfig(hidden=16, n_bins=16)
    state = MCM(model_config).build(schema).network_.state_dict()
    history = []
    for server_round in (1, 2, 3):
        result = site.train_round(state, model_config, run_id="r", server_round=server_round, planned_rounds=3)
        history.append((result.noise_multiplier, result.sample_rate, result.steps))
        assert result.epsilon_spent == pytest.approx(independent_epsilon(history, result.target_delta), abs=1e-6)
        assert result.num_examples == site.n_train == 240
        assert set(result.state_dict) == set(state)
        state = result.state_dict
    assert result.epsilon_spent <= 3.0
    entries_before = len(site.ledger.entries())
    with pytest.raises(BudgetExceededError, match="above its budget of 3"):
        site.train_round(state, model_config, run_id="r", server_round=4, planned_rounds=3)
    assert len(site.ledger.entries()) == entries_before  # nothing recorded for a refused round
    site.close()


def test_split_is_persistent_and_changed_data_are_refused(whas500, tmp_path) -> None:
    frame, schema = whas500
    first = Site(_config(), schema, tmp_path, frame=frame.iloc[:200])
    holdout = first.holdout.copy()
    first.close()
    again = Site(_config(), schema, tmp_path, frame=frame.iloc[:200])
    assert again.holdout.equals(holdout)
    assert len(again.train) + len(again.holdout) == 200
    again.close()
    with pytest.raises(SiteError, match="data differ from those split"):
        Site(_config(), schema, tmp_path, frame=frame.iloc[1:201])


def test_delta_at_or_above_one_over_n_is_refused(whas500, tmp_path) -> None:
    frame, schema = whas500
    with pytest.raises(LedgerError, match=r"must be in \(0, 1/n\)"):
        Site(_config(target_delta=0.01), schema, tmp_path, frame=frame.iloc[:200])
