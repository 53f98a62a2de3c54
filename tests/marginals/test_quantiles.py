from __future__ import annotations

import numpy as np

from fedsynth.data.schema import Schema
from fedsynth.marginals.quantiles import quantile_map
from fedsynth.marginals.tables import MarginalSpec, count_tables
from tests.marginals.conftest import uniform_rows


def _bin_shares(frame, spec: MarginalSpec, name: str) -> np.ndarray:
    cells = spec.bin(name).cells(spec.schema.column(name), frame[name])
    return np.bincount(cells, minlength=spec.bin(name).n_bins) / len(frame)


def test_every_numeric_bin_gets_its_target_share_to_two_rows(small_schema: Schema) -> None:
    document = small_schema.to_dict()
    for column in document["columns"]:
        if column["name"] == "age":
            column["kind"] = "continuous"  # no integer rounding across bin edges
    schema = Schema.from_dict(document)
    spec = MarginalSpec.from_schema(schema, selection="all")
    rng = np.random.default_rng(0)
    target_rows = uniform_rows(schema, 4000, seed=1)
    target_rows["age"] = np.clip(rng.normal(60, 8, 4000), 0, 100)
    tables = count_tables(target_rows, spec)
    n = 500
    for seed in range(5):
        candidates = uniform_rows(schema, 2 * n, seed=10 + seed)
        chosen = np.random.default_rng(seed).choice(2 * n, n, replace=False)
        mapped = quantile_map(candidates, tables, spec, np.random.default_rng(seed), chosen=chosen)
        target = tables["age"] / tables["age"].sum()
        # Each stratum's point is uniform inside it: a bin's count is within 2 of n x its share.
        # Which n of 2n rows were chosen would alone leave errors of ~0.015 in the largest bin.
        assert np.abs(_bin_shares(mapped, spec, "age") - target).max() < 2.0 / n


def test_the_chosen_rows_keep_their_order(small_schema: Schema) -> None:
    spec = MarginalSpec.from_schema(small_schema, selection="all")
    tables = count_tables(uniform_rows(small_schema, 3000, seed=2), spec)
    candidates = uniform_rows(small_schema, 400, seed=3)
    chosen = np.arange(0, 400, 2)
    mapped = quantile_map(candidates, tables, spec, np.random.default_rng(0), chosen=chosen)
    before = candidates["age"].to_numpy()[chosen]
    after = mapped["age"].to_numpy()
    # Rows tied before may come out in either order; a row below another never comes out above it.
    levels = np.unique(before)
    highest = np.array([after[before == v].max() for v in levels])
    lowest = np.array([after[before == v].min() for v in levels])
    assert len(levels) > 50 and np.all(np.maximum.accumulate(highest)[:-1] <= lowest[1:])


def test_a_one_row_sample_is_a_random_draw_not_the_median(small_schema: Schema) -> None:
    spec = MarginalSpec.from_schema(small_schema, selection="all")
    tables = count_tables(uniform_rows(small_schema, 3000, seed=4), spec)
    candidates = uniform_rows(small_schema, 2, seed=5)
    values = {
        float(quantile_map(candidates, tables, spec, np.random.default_rng(s), chosen=np.array([0]))["age"][0])
        for s in range(40)
    }
    assert len(values) > 10
