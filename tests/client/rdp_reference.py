"""An independent epsilon: Opacus' RDP analysis functions called directly, with orders listed here.

The orders are written out (not imported from fedsynth) so that a change to the ledger's orders
is caught by the tests rather than copied into them.
"""

from __future__ import annotations

from opacus.accountants.analysis import rdp as rdp_analysis

OPACUS_DEFAULT_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
ORDERS = OPACUS_DEFAULT_ORDERS + [80, 96, 128, 192, 256, 384, 512, 1024]


def independent_epsilon(history: list[tuple[float, float, int]], delta: float, orders: list[float] = ORDERS) -> float:
    total = sum(rdp_analysis.compute_rdp(q=q, noise_multiplier=s, steps=n, orders=orders) for s, q, n in history)
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=total, delta=delta)
    return float(epsilon)
