from __future__ import annotations

import numpy as np
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.marginals.consistency import make_consistent
from fedsynth.marginals.tables import MarginalSpec, add_gaussian_noise, count_tables

SELECTIONS = pytest.mark.parametrize("selection", ["all", "compact"])


def _whas(selection: str):
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema, selection=selection)
    return count_tables(frame, spec), spec


@SELECTIONS
def test_consistent_input_comes_back_unchanged(selection: str) -> None:
    exact, spec = _whas(selection)
    out = make_consistent(exact, spec)
    for name, values in exact.items():
        np.testing.assert_allclose(out[name], values, atol=1e-8)


@SELECTIONS
def test_noisy_input_becomes_non_negative_with_agreeing_margins(selection: str) -> None:
    exact, spec = _whas(selection)
    noisy = add_gaussian_noise(exact, 2.0, spec, np.random.default_rng(3))
    assert min(v.min() for v in noisy.values()) < 0  # the case is not trivial
    out = make_consistent(noisy, spec)
    totals = [v.sum() for v in out.values()]
    assert min(v.min() for v in out.values()) >= 0.0
    np.testing.assert_allclose(totals, totals[0], rtol=1e-9)
    assert abs(totals[0] - 500) < 60  # the total is estimated, not invented
    # Every column's margin is the same in every table that holds it.
    for b in spec.bins:
        margins = [
            out[t.name].sum(axis=tuple(i for i in range(len(t.columns)) if t.columns[i] != b.name))
            for t in spec.tables
            if b.name in t.columns
        ]
        for margin in margins[1:]:
            np.testing.assert_allclose(margin, margins[0], atol=1e-6)
