"""Nearest-neighbour privacy audit at a site: DCR share, DCR/NNDR distributions, exact matches.

Why this shape: a distance-to-closest-record (DCR) threshold alone is no privacy gate (data can
pass it and still be membership-vulnerable), so the audit reports the *comparison* that has a
known answer: for each synthetic row, is it closer to a training row than to a row of an
equal-size holdout that the model never saw? A generator that does not memorise gives a share
of 0.5; a copy of the training data gives 1. The share comes with a confidence interval so that
a sign-off policy can test its upper bound.

Distances are Euclidean in the schema's transformed space (every column in [0, 1], categoricals
one-hot), so no column dominates by its unit. Exact search with faiss (``IndexFlatL2``): exact,
not approximate, because a privacy audit must not miss the nearest record.

Only aggregates leave this module: counts, shares, percentiles and fixed-bin histograms (a
holdout cell under ``MIN_CELL_ROWS`` real rows withheld).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np
import pandas as pd

from fedsynth.data.schema import Schema
from fedsynth.data.transforms import Transformer
from fedsynth.errors import UserError
from fedsynth.suppression import MIN_CELL_ROWS

Z_95 = 1.959963984540054
HISTOGRAM_BINS = 40
EXACT_MATCH_TOLERANCE = 1e-6  # squared-distance slack for float32 round-off of identical rows
NNDR_QUERIES = 5_000  # rows per side whose nearest / second-nearest ratio is measured
BOOTSTRAP_REPS = 200  # replicates of the DCR share's bootstrap standard error
BOOTSTRAP_CAP = 2_000  # rows of each set the bootstrap resamples from (distance matrices stay small)


class AuditInputError(UserError, ValueError):
    """The audit's inputs cannot give a meaningful answer; the message says why and the fix."""


@dataclass(frozen=True)
class NearestNeighbourAudit:
    """Aggregates of one site's nearest-neighbour audit (safe to send to the coordinator)."""

    n_synthetic: int
    n_train_compared: int
    n_holdout: int
    dcr_share: float
    dcr_share_ci: tuple[float, float]
    dcr_share_se: float  # standard error of dcr_share: lets a coordinator pool sites (pooled_dcr_share)
    exact_matches: int
    dcr_synthetic_p5: float
    dcr_holdout_p5: float
    nndr_synthetic_p5: float
    nndr_holdout_p5: float
    histogram_edges: list[float] = field(repr=False)
    dcr_synthetic_histogram: list[int] = field(repr=False)
    # Real holdout rows per cell; None (withheld) under MIN_CELL_ROWS, as for the marginal histograms.
    dcr_holdout_histogram: list[int | None] = field(repr=False)
    # Holdout rows identical to a training row: how often unseen patients share a whole record by chance.
    exact_matches_holdout: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nearest_distances(reference: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distances from each query to its ``k`` nearest reference rows, ascending."""
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    squared, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.sqrt(np.maximum(squared, 0.0))


def _wins(to_train: np.ndarray, to_holdout: np.ndarray) -> np.ndarray:
    """1 where a synthetic row is closer to the training rows, 0 to the holdout, 0.5 on a tie."""
    tie = np.isclose(to_train, to_holdout, rtol=0.0, atol=1e-7)
    return np.where(tie, 0.5, (to_train < to_holdout).astype(float))


def _squared_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    q, r = queries.astype(np.float64), reference.astype(np.float64)
    return np.maximum((q**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2.0 * q @ r.T, 0.0)


def _bootstrap_share_se(
    synthetic: np.ndarray, compared: np.ndarray, holdout: np.ndarray, rng: np.random.Generator
) -> float:
    """Bootstrap standard error of the DCR share, resampling all three row sets.

    Why not the binomial SE of the wins: every win depends on the same few reference rows (33
    holdout and 33 compared training rows at a demo site), so the wins are not independent and
    their SE over the 134 synthetic rows understated the uncertainty about twofold. Each of
    ``BOOTSTRAP_REPS`` replicates resamples the synthetic, compared-training and holdout rows
    (at most ``BOOTSTRAP_CAP`` of each, drawn once: a larger site's SE is then overstated, the
    safe side) and recomputes the share from the distance matrices.
    """
    synthetic, compared, holdout = (_at_most(rows, BOOTSTRAP_CAP, rng) for rows in (synthetic, compared, holdout))
    to_compared, to_holdout = _squared_distances(synthetic, compared), _squared_distances(synthetic, holdout)
    shares = np.empty(BOOTSTRAP_REPS)
    for rep in range(BOOTSTRAP_REPS):
        rows = rng.integers(len(synthetic), size=len(synthetic))
        train_cols = np.unique(rng.integers(len(compared), size=len(compared)))
        holdout_cols = np.unique(rng.integers(len(holdout), size=len(holdout)))
        nearest_train = np.sqrt(to_compared[np.ix_(rows, train_cols)].min(axis=1))
        nearest_holdout = np.sqrt(to_holdout[np.ix_(rows, holdout_cols)].min(axis=1))
        shares[rep] = _wins(nearest_train, nearest_holdout).mean()
    return float(shares.std(ddof=1))


def _normal_ci(mean: float, se: float) -> tuple[float, float]:
    """95% normal CI, clipped to the [0, 1] a share lives in."""
    return max(0.0, mean - Z_95 * se), min(1.0, mean + Z_95 * se)


def pooled_dcr_share(audits: list[dict[str, Any]]) -> tuple[float, tuple[float, float]]:
    """The DCR share over several sites' audits: their shares weighted by synthetic rows, with
    the 95% CI of that weighted mean of independent estimates (sites hold different patients).

    Why pool: at a small site (33 holdout rows) one site's CI is about +-0.14, and the worst of
    three such upper limits says more about the sample size than about the model.
    """
    if not audits or any("dcr_share_se" not in a for a in audits):
        raise ValueError("cannot pool DCR shares without every site's dcr_share_se")
    total = sum(int(a["n_synthetic"]) for a in audits)
    weights = [int(a["n_synthetic"]) / total for a in audits]
    mean = sum(w * float(a["dcr_share"]) for w, a in zip(weights, audits, strict=True))
    se = math.sqrt(sum((w * float(a["dcr_share_se"])) ** 2 for w, a in zip(weights, audits, strict=True)))
    return mean, _normal_ci(mean, se)


def withhold_small(counts: np.ndarray) -> list[int | None]:
    """Real-row counts per cell, a cell under ``MIN_CELL_ROWS`` rows withheld (``None``)."""
    return [int(c) if c >= MIN_CELL_ROWS else None for c in counts]


def dcr_histogram_edges(width: int) -> np.ndarray:
    """Public, fixed DCR histogram edges for an encoded width: 0, then log-spaced 1e-3 .. sqrt(width).

    Edges taken from the data (e.g. up to the largest distance) would disclose one record's
    distance; these depend on the public schema only. The first bin holds exact and near-exact
    matches; sqrt(width) bounds any distance in the [0, 1]-encoded space.
    """
    return np.concatenate([[0.0], np.geomspace(1e-3, math.sqrt(max(width, 1)), HISTOGRAM_BINS)])


def _at_most(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= n else rows[rng.choice(len(rows), size=n, replace=False)]


def _nndr(distances: np.ndarray) -> np.ndarray:
    """Nearest / second-nearest distance ratio; 0 when the nearest is an exact match."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(distances[:, 1] > 0, distances[:, 0] / distances[:, 1], 0.0)
    return ratio


def nearest_neighbour_audit(
    synthetic: pd.DataFrame,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    schema: Schema,
    seed: int = 0,
) -> NearestNeighbourAudit:
    """Audit ``synthetic`` against a site's ``train`` and equal-size ``holdout`` rows.

    The training rows are subsampled (seeded) to the holdout's size so that "closer to train"
    and "closer to holdout" are equally likely for a generator that learnt only the
    distribution. Raises AuditInputError for too few rows.
    """
    if len(holdout) < 2 or len(train) < len(holdout):
        raise AuditInputError(
            f"the audit needs at least 2 holdout rows and at least as many training rows as holdout rows "
            f"(got {len(train)} train, {len(holdout)} holdout): raise the site's training.holdout_fraction "
            "or audit a larger site"
        )
    if len(synthetic) == 0:
        raise AuditInputError("the synthetic sample is empty: sample at least one row from the model")
    transformer = Transformer(schema)
    rng = np.random.default_rng(seed)
    train_rows = transformer.encode(train)
    compared = train_rows[rng.choice(len(train_rows), size=len(holdout), replace=False)]
    holdout_rows = transformer.encode(holdout)
    synthetic_rows = transformer.encode(synthetic)

    # Every synthetic row against the whole training set: exact matches and the DCR distribution.
    synthetic_train = nearest_distances(train_rows, synthetic_rows, 1)[:, 0]
    if len(compared) == len(train_rows):  # the "subsample" is all of train: same nearest distances
        to_train = synthetic_train
    else:
        to_train = nearest_distances(compared, synthetic_rows, 1)[:, 0]
    to_holdout = nearest_distances(holdout_rows, synthetic_rows, 1)[:, 0]
    wins = _wins(to_train, to_holdout)
    share_se = _bootstrap_share_se(synthetic_rows, compared, holdout_rows, np.random.default_rng([seed, 1]))
    # What a fresh record from the same population looks like: holdout -> train.
    holdout_train = nearest_distances(train_rows, holdout_rows, 1)[:, 0]
    # NNDR needs the two nearest rows, a search several times slower than the nearest alone
    # (faiss' k = 1 path is fused); its 5th percentile from 5,000 seeded queries per side is
    # as informative as from all of them.
    nndr_synthetic = _nndr(nearest_distances(train_rows, _at_most(synthetic_rows, NNDR_QUERIES, rng), 2))
    nndr_holdout = _nndr(nearest_distances(train_rows, _at_most(holdout_rows, NNDR_QUERIES, rng), 2))
    exact = int(np.count_nonzero(synthetic_train**2 <= EXACT_MATCH_TOLERANCE))
    exact_holdout = int(np.count_nonzero(holdout_train**2 <= EXACT_MATCH_TOLERANCE))
    edges = dcr_histogram_edges(synthetic_rows.shape[1])
    return NearestNeighbourAudit(
        n_synthetic=len(synthetic_rows),
        n_train_compared=len(compared),
        n_holdout=len(holdout_rows),
        dcr_share=float(wins.mean()),
        dcr_share_ci=_normal_ci(float(wins.mean()), share_se),
        dcr_share_se=share_se,
        exact_matches=exact,
        dcr_synthetic_p5=float(np.percentile(synthetic_train, 5)),
        dcr_holdout_p5=float(np.percentile(holdout_train, 5)),
        nndr_synthetic_p5=float(np.percentile(nndr_synthetic, 5)),
        nndr_holdout_p5=float(np.percentile(nndr_holdout, 5)),
        histogram_edges=edges.tolist(),
        dcr_synthetic_histogram=np.histogram(synthetic_train, bins=edges)[0].tolist(),
        dcr_holdout_histogram=withhold_small(np.histogram(holdout_train, bins=edges)[0]),
        exact_matches_holdout=exact_holdout,
    )
