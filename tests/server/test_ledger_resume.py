"""The defect as found, on Flower's simulation engine: a site's ledger deleted, then the run resumed."""

from __future__ import annotations

import shutil

import pytest

from fedsynth.client.slope_release import head_slope_round
from fedsynth.server.budget import budget_report
from fedsynth.server.run import RunDirectory
from fedsynth.server.simulation import simulate
from tests.server.conftest import whas500_config

pytestmark = pytest.mark.integration


def test_a_resumed_run_is_refused_by_sites_whose_ledger_was_deleted(two_round_copy) -> None:
    run_dir = two_round_copy
    sites = run_dir / "sites"
    (sites / "site-0" / "state" / "ledger.sqlite").unlink()  # its witness, split and plan remain
    shutil.rmtree(sites / "site-1" / "state")  # nothing local remains: only the coordinator's record
    # Planned for 2 rounds, each site's budget is spent: with a ledger counting from zero again,
    # site-0 and site-1 would have trained round 3 (and site-2 alone refuses for budget).
    simulate(whas500_config(run_dir, rounds=3, min_sites=2))
    third = {r.get("site", r["node_id"]): r for r in RunDirectory(run_dir).budget_records() if r["round"] == 3}
    assert len(third) == 3 and all(r["status"] == "error" for r in third.values())
    reasons = sorted(r["reason"] for r in third.values())
    assert sum("failed its integrity check" in reason for reason in reasons) == 2  # site_errors, since 2e3ca0c
    assert sum("refused: round 3" in reason for reason in reasons) == 1
    assert RunDirectory(run_dir).latest_checkpoint().round == head_slope_round(2)  # nobody trained: still round 2's
    report = budget_report(run_dir)
    assert report["within_budget"] and all(len(s["rounds"]) == 2 for s in report["sites"])
