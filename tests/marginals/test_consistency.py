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


def test_nonnegative_is_the_least_squares_projection_onto_the_scaled_simplex() -> None:
    from fedsynth.marginals.consistency import nonnegative

    np.testing.assert_allclose(nonnegative(np.array([5.0, -1.0, 0.5, 0.2]), 5.0), [4.75, 0.0, 0.25, 0.0])
    valid = np.array([3.0, 0.0, 7.0])
    np.testing.assert_allclose(nonnegative(valid, 10.0), valid)  # already a table of that total
    # Pure noise in empty cells: clipping keeps every positive draw, the projection zeroes most.
    rng = np.random.default_rng(0)
    noisy = np.concatenate([[200.0, 200.0], rng.normal(0.0, 15.0, size=14)])
    projected = nonnegative(noisy, 400.0)
    assert projected.sum() == pytest.approx(400.0) and projected.min() >= 0.0
    assert projected[2:].sum() < 0.5 * np.clip(noisy[2:], 0.0, None).sum()
