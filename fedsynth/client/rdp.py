"""Epsilon of a site's DP history by Opacus' RDP analysis, without importing torch.

Opacus' analysis (``opacus/accountants/analysis/rdp.py``) is numpy and scipy only, but importing
any ``opacus`` module runs the package's ``__init__``, which loads torch: two seconds before
``fedsynth site status`` or ``site check`` could answer. So the analysis file is loaded on its
own, from the installed Opacus: the same code, not a copy (tests compare it with Opacus'
``RDPAccountant`` bit for bit).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

# Opacus' RDPAccountant.DEFAULT_ALPHAS (tests check they are the same), then higher orders: with
# much noise and few steps (epsilon well below 1) the best order is the largest and Opacus' list
# stops at 63. Every order gives a valid epsilon and the minimum over them is taken.
OPACUS_DEFAULT_ORDERS: tuple[float, ...] = (*(1 + x / 10.0 for x in range(1, 100)), *range(12, 64))
RDP_ORDERS: tuple[float, ...] = (*OPACUS_DEFAULT_ORDERS, 80, 96, 128, 192, 256, 384, 512, 1024)


@functools.cache
def opacus_rdp_analysis() -> ModuleType:
    """Opacus' ``accountants.analysis.rdp`` module; the package's own if it is already imported."""
    name = "opacus.accountants.analysis.rdp"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("opacus")  # finds the package without running its __init__
    if package is None or package.origin is None:
        raise ModuleNotFoundError("opacus is not installed")
    spec = importlib.util.spec_from_file_location(
        "fedsynth._opacus_rdp", Path(package.origin).parent / "accountants" / "analysis" / "rdp.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1024)
def _entry_rdp(noise_multiplier: float, sample_rate: float, steps: int) -> tuple[float, ...]:
    """One history entry's RDP at every order: Opacus' compute_rdp, kept because every round of a
    run repeats the same entry and a fractional order costs ~0.15 s to evaluate."""
    rdp = opacus_rdp_analysis().compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=list(RDP_ORDERS)
    )
    return tuple(float(value) for value in rdp)


def rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at ``delta`` of a DP-SGD history [(noise multiplier, sample rate, steps)], by Opacus' RDP accountant.

    The same computation as ``RDPAccountant.get_epsilon`` (per-entry RDP summed in history order,
    then Opacus' conversion), bit for bit, with each distinct entry's RDP computed once.
    """
    if not history:
        return 0.0
    rdp = sum([np.array(_entry_rdp(float(s), float(q), int(k))) for s, q, k in history])
    epsilon, _ = opacus_rdp_analysis().get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    return float(epsilon)
