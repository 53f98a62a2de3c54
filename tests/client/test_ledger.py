"""The site ledger: never under-counts, refuses past the budget, survives kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from opacus.accountants.utils import get_noise_multiplier

from fedsynth.client.ledger import BudgetExceededError, LedgerError, PrivacyLedger, check_delta, default_delta
from tests.client.rdp_reference import OPACUS_DEFAULT_ORDERS, independent_epsilon


def test_epsilon_matches_independent_rdp_computation(tmp_path) -> None:
    delta = default_delta(1000)
    ledger = PrivacyLedger(tmp_path / "l.sqlite", target_epsilon=4.0, target_delta=delta)
    history = [(1.1, 64 / 1000, 16), (1.1, 64 / 1000, 16), (0.9, 0.1, 5)]
    for i, (sigma, q, steps) in enumerate(history):
        ledger.reserve(run_id="r", round=i + 1, noise_multiplier=sigma, sample_rate=q, steps=steps)
    assert ledger.epsilon() == pytest.approx(independent_epsilon(history, delta), abs=1e-6)
    assert [e.round for e in ledger.entries()] == [1, 2, 3]


def test_orders_beyond_opacus_defaults_tighten_a_high_noise_bound(tmp_path) -> None:
    # Much noise, one step: Opacus' default orders (up to 63) put the optimum at the largest
    # order, a loose bound. The ledger's higher orders give a smaller epsilon, still Opacus' RDP.
    delta, history = 1e-5, [(20.0, 1.0, 1)]
    ledger = PrivacyLedger(tmp_path / "l.sqlite", target_epsilon=1.0, target_delta=delta)
    ledger.reserve(run_id="r", round=1, noise_multiplier=20.0, sample_rate=1.0, steps=1)
    with_defaults = independent_epsilon(history, delta, OPACUS_DEFAULT_ORDERS)
    assert ledger.epsilon() == pytest.approx(independent_epsilon(history, delta), abs=1e-6)
    assert ledger.epsilon() < with_defaults - 1e-3


def test_planned_rounds_stay_within_target_and_the_next_is_refused(tmp_path) -> None:
    n, rounds, steps = 1000, 5, 20
    delta = default_delta(n)
    sigma = get_noise_multiplier(target_epsilon=2.0, target_delta=delta, sample_rate=0.05, steps=rounds * steps)
    ledger = PrivacyLedger(tmp_path / "l.sqlite", target_epsilon=2.0, target_delta=delta)
    for r in range(rounds):
        ledger.reserve(run_id="r", round=r + 1, noise_multiplier=sigma, sample_rate=0.05, steps=steps)
    assert ledger.epsilon() <= 2.0
    with pytest.raises(BudgetExceededError, match="above its budget of 2"):
        ledger.reserve(run_id="r", round=rounds + 1, noise_multiplier=sigma, sample_rate=0.05, steps=steps)
    assert len(ledger.entries()) == rounds  # the refused round wrote nothing


def test_history_cannot_be_rewritten(tmp_path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = PrivacyLedger(path, target_epsilon=1.0, target_delta=1e-5)
    ledger.reserve(run_id="r", round=1, noise_multiplier=2.0, sample_rate=0.01, steps=10)
    raw = sqlite3.connect(path)
    for statement in ("UPDATE spend SET steps = 1", "DELETE FROM spend", "UPDATE budget SET target_epsilon = 99"):
        with pytest.raises(sqlite3.IntegrityError, match="cannot be changed|append-only"):
            raw.execute(statement)
    with pytest.raises(LedgerError, match="cannot be reopened"):
        PrivacyLedger(path, target_epsilon=5.0, target_delta=1e-5)


def test_delta_rules() -> None:
    assert default_delta(1000) == pytest.approx(1000**-1.1)
    check_delta(default_delta(500), 500)
    with pytest.raises(LedgerError, match=r"\(0, 1/n\)"):
        check_delta(1 / 100, 100)


def test_kill_minus_9_mid_round_never_under_counts(tmp_path) -> None:
    """A site killed while 'training' keeps the whole reserved round on its books."""
    path = tmp_path / "l.sqlite"
    script = textwrap.dedent(
        f"""
        import time
        from fedsynth.client.ledger import PrivacyLedger
        ledger = PrivacyLedger({str(path)!r}, target_epsilon=3.0, target_delta=1e-5)
        ledger.reserve(run_id="r", round=1, noise_multiplier=1.0, sample_rate=0.02, steps=50)
        print("reserved", flush=True)
        time.sleep(60)  # training in progress
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "reserved"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    time.sleep(0.1)
    reopened = PrivacyLedger(path, target_epsilon=3.0, target_delta=1e-5)
    assert reopened.history() == [(1.0, 0.02, 50)]
    assert reopened.epsilon() == pytest.approx(independent_epsilon([(1.0, 0.02, 50)], 1e-5), abs=1e-6)


def test_epsilon_equals_opacus_accountant_bit_for_bit_on_a_repeating_history() -> None:
    from opacus.accountants import RDPAccountant

    from fedsynth.client.rdp import RDP_ORDERS, rdp_epsilon

    history = [(2.1, 1.0, 1), *[(1.3, 0.02, 250)] * 12, (1.6, 0.05, 40)]
    accountant = RDPAccountant()
    accountant.history = list(history)
    for delta in (1e-5, 1e-6):
        expected = float(accountant.get_epsilon(delta, alphas=list(RDP_ORDERS)))
        assert rdp_epsilon(history, delta) == expected
        assert rdp_epsilon(history[:5], delta) < expected  # fewer rounds, less spent


def test_the_orders_start_with_opacus_own_defaults() -> None:
    from opacus.accountants import RDPAccountant

    from fedsynth.client.rdp import OPACUS_DEFAULT_ORDERS, RDP_ORDERS

    assert list(OPACUS_DEFAULT_ORDERS) == list(RDPAccountant.DEFAULT_ALPHAS)
    assert (
        RDP_ORDERS[: len(OPACUS_DEFAULT_ORDERS)] == OPACUS_DEFAULT_ORDERS
        and min(RDP_ORDERS[len(OPACUS_DEFAULT_ORDERS) :]) > 63
    )
