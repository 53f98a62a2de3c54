"""Marginal tables on the public schema's bins: counting, Gaussian noise, JSON.

A site releases, once per run, noisy counts of its rows on bins that only the public schema
fixes (never the data). Default ("compact"): each numeric covariate's 1-way histogram, the
(time bin x event) table, and each discrete covariate's 1-way table at weight 1/sqrt(2); "all":
every column's 1-way histogram and every covariate x (time bin x event). Compact is what
calibration reads, each column as directly as possible (docs/research/).

Weights: a table released at weight w is released as w x its counts, so its noise, in counts, is
1/w as large as a weight-1 table's. A discrete share is one difference of cells, a numeric CDF
sums several, so the discrete tables give up precision to the numeric ones.

Neighbouring relation: add/remove one record (the site's DP-SGD uses the same one, Opacus with
Poisson sampling). One record adds exactly w to one cell of every (weighted) table, so the
concatenated tables move by sqrt(sum of w^2) in L2: that is ``MarginalSpec.l2_sensitivity``.
Gaussian noise of std ``noise_multiplier * l2_sensitivity`` per weighted cell (``/ w`` in counts)
is then exactly one Opacus RDP step at sample rate 1 with that noise multiplier.

A column with missing = "model" gets one more cell, after its bins or levels, that counts the
rows where it is missing: its other cells count present values only, and every record still
adds to exactly one cell of each table, so the sensitivity above stays exact (a separate
missing-count table would add a table's worth of sensitivity to every release).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.data.schema import Column, Schema
from fedsynth.data.transforms import encode_labels, to_unit

DEFAULT_NUMERIC_BINS = 16
DEFAULT_TIME_BINS = 8
DISCRETE_WEIGHT = 1.0 / math.sqrt(2.0)
SELECTIONS = ("all", "compact")


@dataclass(frozen=True)
class BinSpec:
    """How one column's values fall into cells: ``n_bins`` equal-width bins in the column's public
    [0, 1] space (numeric) or its declared levels (binary/categorical, ``n_bins`` = levels)."""

    name: str
    numeric: bool
    n_bins: int
    missing: bool = False  # one more cell, index n_bins, for missing values (missing = "model")

    @property
    def n_cells(self) -> int:
        """The column's cells in a table: its bins or levels, and the missing cell if any."""
        return self.n_bins + int(self.missing)

    def cells(self, column: Column, values: pd.Series) -> np.ndarray:
        """Cell index (int64) of every value of a canonical column (``n_bins`` where missing)."""
        absent = values.isna().to_numpy() if self.missing else np.zeros(len(values), dtype=bool)
        out = np.full(len(values), self.n_bins, dtype=np.int64)
        present = values[~absent]
        if self.numeric:
            unit = to_unit(column, present.to_numpy(dtype=np.float64))
            out[~absent] = np.minimum((unit * self.n_bins).astype(np.int64), self.n_bins - 1)
        else:
            out[~absent] = encode_labels(column, present)
        return out

    def unit_edges(self) -> np.ndarray:
        """The bins' edges in the column's [0, 1] space (numeric columns only)."""
        return np.linspace(0.0, 1.0, self.n_bins + 1)


@dataclass(frozen=True)
class TableSpec:
    """One released table: the columns it crosses (row-major in this order), its shape, and the
    weight its counts are released at (noise in counts 1/weight as large)."""

    name: str
    columns: tuple[str, ...]
    shape: tuple[int, ...]
    weight: float = 1.0


@dataclass(frozen=True)
class MarginalSpec:
    """The public bins and the tables a site releases; everything here comes from the schema,
    which the spec carries so that anyone holding it can bin rows the same way."""

    schema: Schema
    bins: tuple[BinSpec, ...]
    tables: tuple[TableSpec, ...]
    time_column: str
    event_column: str

    @classmethod
    def from_schema(
        cls,
        schema: Schema,
        *,
        numeric_bins: int = DEFAULT_NUMERIC_BINS,
        time_bins: int = DEFAULT_TIME_BINS,
        selection: str = "compact",
    ) -> MarginalSpec:
        """``selection``: ``"all"``, every column's 1-way table and every covariate x (time bin x
        event); ``"compact"``, only what calibration reads, each as directly as possible: the
        numeric covariates' 1-way tables, (time bin x event), and each discrete covariate's 1-way
        table at ``DISCRETE_WEIGHT`` (15 tables on WHAS500 instead of 30)."""
        if numeric_bins < 2 or time_bins < 2:
            raise ValueError(f"need at least 2 bins, got numeric_bins={numeric_bins}, time_bins={time_bins}")
        if selection not in SELECTIONS:
            raise ValueError(f"unknown table selection '{selection}'; choose one of {', '.join(SELECTIONS)}")
        bins = []
        for column in schema.columns:
            if column.is_numeric:
                n = time_bins if column.name == schema.time_column else numeric_bins
                bins.append(BinSpec(column.name, True, n, column.models_missing))
            else:
                bins.append(BinSpec(column.name, False, len(column.labels), column.models_missing))
        by_name = {b.name: b for b in bins}
        time, event = schema.time_column, schema.event_column
        if selection == "all":
            # Covariate x (time bin x event): levels x time_bins x 2 cells each, the hazard
            # structure per covariate. All pairs of covariates would be 91 more tables on
            # WHAS500: the noise std grows with sqrt(#tables); a Cox model reads covariate-outcome.
            tables = [TableSpec(b.name, (b.name,), (b.n_cells,)) for b in bins]
            for name in schema.covariates:
                shape = (by_name[name].n_cells, by_name[time].n_bins, by_name[event].n_bins)
                tables.append(TableSpec(f"{name}|{time}|{event}", (name, time, event), shape))
        else:
            tables = [TableSpec(b.name, (b.name,), (b.n_cells,)) for b in bins if b.numeric and b.name != time]
            tables.append(TableSpec(f"{time}|{event}", (time, event), (by_name[time].n_bins, by_name[event].n_bins)))
            for b in bins:
                if not b.numeric and b.name != event:
                    tables.append(TableSpec(b.name, (b.name,), (b.n_cells,), DISCRETE_WEIGHT))
        return cls(schema, tuple(bins), tuple(tables), time, event)

    @property
    def l2_sensitivity(self) -> float:
        """One record adds w to one cell of each table of weight w (add/remove-one neighbours)."""
        return math.sqrt(sum(t.weight**2 for t in self.tables))

    def noise_std(self, table: TableSpec, noise_multiplier: float) -> float:
        """Std, in counts, of the Gaussian noise on each cell of ``table``."""
        return noise_multiplier * self.l2_sensitivity / table.weight

    @property
    def n_cells(self) -> int:
        return sum(math.prod(t.shape) for t in self.tables)

    def bin(self, name: str) -> BinSpec:
        for b in self.bins:
            if b.name == name:
                return b
        raise KeyError(f"no bins for column '{name}'")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "time_column": self.time_column,
            "event_column": self.event_column,
            "bins": [
                {"name": b.name, "numeric": b.numeric, "n_bins": b.n_bins} | ({"missing": True} if b.missing else {})
                for b in self.bins
            ],
            "tables": [
                {"name": t.name, "columns": list(t.columns), "shape": list(t.shape)}
                | ({"weight": t.weight} if t.weight != 1.0 else {})
                for t in self.tables
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarginalSpec:
        return cls(
            schema=Schema.from_dict(data["schema"], source="marginal spec"),
            bins=tuple(
                BinSpec(str(b["name"]), bool(b["numeric"]), int(b["n_bins"]), bool(b.get("missing", False)))
                for b in data["bins"]
            ),
            tables=tuple(
                TableSpec(
                    str(t["name"]),
                    tuple(map(str, t["columns"])),
                    tuple(int(s) for s in t["shape"]),
                    _weight(t.get("weight", 1.0), str(t["name"])),
                )
                for t in data["tables"]
            ),
            time_column=str(data["time_column"]),
            event_column=str(data["event_column"]),
        )


def _weight(value: Any, table: str) -> float:
    weight = float(value)
    if not (math.isfinite(weight) and weight > 0.0):
        raise ValueError(f"marginal table '{table}': weight must be a positive number, got {value}")
    return weight


def cell_indices(frame: pd.DataFrame, spec: MarginalSpec) -> dict[str, np.ndarray]:
    """Per table, the flat cell index of every row (the bincount key for counting and raking)."""
    per_column = {b.name: b.cells(spec.schema.column(b.name), frame[b.name]) for b in spec.bins}
    out: dict[str, np.ndarray] = {}
    for table in spec.tables:
        parts = [per_column[name] for name in table.columns]
        out[table.name] = np.ravel_multi_index(parts, table.shape) if len(parts) > 1 else parts[0]
    return out


def count_tables(frame: pd.DataFrame, spec: MarginalSpec) -> dict[str, np.ndarray]:
    """Exact counts (float64) of a canonical (validated) frame in every table of ``spec``."""
    indices = cell_indices(frame, spec)
    return {
        t.name: np.bincount(indices[t.name], minlength=math.prod(t.shape)).astype(np.float64).reshape(t.shape)
        for t in spec.tables
    }


def add_gaussian_noise(
    tables: dict[str, np.ndarray], noise_multiplier: float, spec: MarginalSpec, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Independent N(0, spec.noise_std(table)^2) on every cell of every table: the weighted
    counts plus N(0, (noise_multiplier * l2_sensitivity)^2), divided by the weight again."""
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be a positive number, got {noise_multiplier}")
    return {
        t.name: tables[t.name] + rng.normal(0.0, spec.noise_std(t, noise_multiplier), size=t.shape) for t in spec.tables
    }


def tables_to_json(tables: dict[str, np.ndarray]) -> str:
    """JSON text of the tables (name -> nested lists); floats round-trip exactly."""
    return json.dumps({name: np.asarray(values, dtype=np.float64).tolist() for name, values in tables.items()})


def tables_from_json(text: str, spec: MarginalSpec | None = None) -> dict[str, np.ndarray]:
    """Inverse of :func:`tables_to_json`; with ``spec``, checks every table is there with its shape."""
    data = json.loads(text)
    tables = {str(name): np.asarray(values, dtype=np.float64) for name, values in data.items()}
    if spec is not None:
        for t in spec.tables:
            if t.name not in tables or tables[t.name].shape != t.shape:
                got = tables[t.name].shape if t.name in tables else "missing"
                raise ValueError(f"marginal table '{t.name}': expected shape {t.shape}, got {got}")
            if not np.isfinite(tables[t.name]).all():
                raise ValueError(f"marginal table '{t.name}' holds non-finite values")
    return tables
