"""A site's rounds: ledger spend matches Opacus, the budget holds, the split is persistent."""

from __future__ import annotations

import shutil

import pytest

from fedsynth.client.config import SiteConfig
from fedsynth.client.ledger import BudgetExceededError, LedgerError, LedgerIntegrityError
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
    # No marginal tables in this run's plan: its three rounds are the whole budget (with a share
    # planned for tables never released, a fourth round would fit in what they left unspent).
    site = Site(_config(marginals_share=0.0), schema, tmp_path, frame=frame.iloc[:300])
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


def _one_round(site: Site, schema, server_round: int = 1) -> float:
    model_config = MCMConfig(hidden=16, n_bins=16)
    state = MCM(model_config).build(schema).network_.state_dict()
    result = site.train_round(state, model_config, run_id="r", server_round=server_round, planned_rounds=3)
    return result.epsilon_spent


def test_a_deleted_ledger_is_refused_when_the_site_resumes(whas500, tmp_path) -> None:
    """The defect as found: ledger.sqlite deleted, the site resumed at zero spend."""
    frame, schema = whas500
    site = Site(_config(), schema, tmp_path, frame=frame.iloc[:300])
    _one_round(site, schema)
    site.close()
    (tmp_path / "ledger.sqlite").unlink()
    with pytest.raises(LedgerIntegrityError, match=r"ledger\.sqlite is missing.*ledger\.head\.json"):
        Site(_config(), schema, tmp_path, frame=frame.iloc[:300])
    (tmp_path / "ledger.head.json").unlink()  # the witness too: the split and the run plan remain
    with pytest.raises(LedgerIntegrityError, match=r"is missing.*split\.json.*dp_plan\.json"):
        Site(_config(), schema, tmp_path, frame=frame.iloc[:300])
    assert not (tmp_path / "ledger.sqlite").exists()


def test_a_ledger_edited_between_rounds_stops_the_next_round(whas500, tmp_path) -> None:
    import sqlite3

    frame, schema = whas500
    site = Site(_config(), schema, tmp_path, frame=frame.iloc[:300])
    _one_round(site, schema)
    raw = sqlite3.connect(tmp_path / "ledger.sqlite", isolation_level=None)
    raw.execute("DROP TRIGGER spend_no_delete")
    raw.execute("DELETE FROM spend")
    raw.close()
    with pytest.raises(LedgerIntegrityError, match="rows were deleted"):
        _one_round(site, schema, server_round=2)
    site.close()


def test_a_wiped_site_is_caught_by_the_coordinators_floor(whas500, tmp_path) -> None:
    """Ledger, witness, split and plans all deleted: only the coordinator's record remains."""
    frame, schema = whas500
    site = Site(_config(), schema, tmp_path, frame=frame.iloc[:300])
    spent = _one_round(site, schema)
    site.close()
    for path in (tmp_path / "ledger.sqlite", tmp_path / "ledger.head.json", tmp_path / "split.json"):
        path.unlink()
    shutil.rmtree(tmp_path / "runs")
    wiped = Site(_config(), schema, tmp_path, frame=frame.iloc[:300])  # looks like a new site
    model_config = MCMConfig(hidden=16, n_bins=16)
    state = MCM(model_config).build(schema).network_.state_dict()
    with pytest.raises(
        LedgerIntegrityError, match=rf"site 'a': the coordinator of run 'r' recorded epsilon {spent:.4f}"
    ):
        wiped.train_round(state, model_config, run_id="r", server_round=2, planned_rounds=3, coordinator_floor=spent)
    assert wiped.ledger.entries() == []  # refused before anything was reserved
    wiped.close()


def test_a_site_with_modelled_missing_values_spends_what_opacus_computes(whas500, tmp_path) -> None:
    from tests.missing import blank

    frame, schema = blank(*whas500, {"bmi": 0.3}, seed=0)
    site = Site(_config(), schema, tmp_path, frame=frame.iloc[:300])
    assert site.train["bmi"].isna().any()  # the rows with a missing bmi are trained on, not dropped
    model_config = MCMConfig(hidden=16, n_bins=16)
    state = MCM(model_config).build(schema).network_.state_dict()
    result = site.train_round(state, model_config, run_id="r", server_round=1, planned_rounds=3)
    history = [(result.noise_multiplier, result.sample_rate, result.steps)]
    assert result.epsilon_spent == pytest.approx(independent_epsilon(history, result.target_delta), abs=1e-6)
    assert result.num_examples == 240
    site.close()
