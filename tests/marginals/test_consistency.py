from __future__ import annotations

import numpy as np

from fedsynth.data.datasets import load_dataset
from fedsynth.marginals.consistency import make_consistent
from fedsynth.marginals.tables import MarginalSpec, add_gaussian_noise, count_tables


def _whas():
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema)
    return count_tables(frame, spec), spec


def test_consistent_input_comes_back_unchanged() -> None:
    exact, spec = _whas()
    out = make_consistent(exact, spec)
    for name, values in exact.items():
        np.testing.assert_allclose(out[name], values, atol=1e-8)


def test_noisy_input_becomes_non_negative_with_agreeing_margins() -> None:
    exact, spec = _whas()
    noisy = add_gaussian_noise(exact, 2.0, spec, np.random.default_rng(3))
    assert min(v.min() for v in noisy.values()) < 0  # the case is not trivial
    out = make_consistent(noisy, spec)
    totals = [v.sum() for v in out.values()]
    assert min(v.min() for v in out.values()) >= 0.0
    np.testing.assert_allclose(totals, totals[0], rtol=1e-9)
    assert abs(totals[0] - 500) < 60  # the total is estimated, not invented
    for t in spec.tables:
        if len(t.columns) == 3:
            covariate, time, event = t.columns
            np.testing.assert_allclose(out[t.name].sum(axis=(1, 2)), out[covariate], atol=1e-6)
            np.testing.assert_allclose(out[t.name].sum(axis=(0, 2)), out[time], atol=1e-6)
            np.testing.assert_allclose(out[t.name].sum(axis=(0, 1)), out[event], atol=1e-6)
