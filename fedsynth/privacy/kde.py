"""Gaussian kernel density over the nearest neighbours only: the density attack at 100k rows.

sklearn's ``KernelDensity`` walks a tree that prunes little in a clinical table's transformed
space, so scoring 100k candidates against 100k synthetic rows takes minutes (and its tree
floors far tails: a record 12 bandwidths from every row read -11 instead of -62). At the
attack's bandwidth (half the median nearest-neighbour distance, see
:func:`nearest_neighbour_bandwidth`) a row a few bandwidths away adds ``exp(-d^2 / 2h^2)``, next
to nothing, so summing over the ``neighbours`` nearest rows, found by an exact faiss search,
gives the full sum: on the four bundled datasets the log-density differs from the every-pair
float64 sum by at most 3e-4 with 64 neighbours (0.19 with 16). The truncated sum can only be
lower than the full one, never higher.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from fedsynth.privacy.nearest_neighbour import nearest_distances

KDE_NEIGHBOURS = 64
CROWDED_BANDWIDTHS = 4.0  # a 64th neighbour nearer than this still adds mass (exp(-8) of a match)
CROWDED_NEIGHBOURS = 1024
BANDWIDTH_QUERIES = 10_000  # rows whose nearest-neighbour distance sets the bandwidth


def nearest_neighbour_bandwidth(
    rows: np.ndarray, factor: float, rng: np.random.Generator, queries: int = BANDWIDTH_QUERIES
) -> float:
    """``factor`` x the median distance from a row to its nearest other row.

    A global rule (Scott's) smooths over a generator's memorised records; the nearest-neighbour
    scale keeps the local structure. The median comes from at most ``queries`` rows (searched
    against all of them): its sampling error at 10k rows is far below the rule's own slack.
    """
    picked = rows if len(rows) <= queries else rows[rng.choice(len(rows), size=queries, replace=False)]
    distances = nearest_distances(rows, picked, 2)[:, 1]
    positive = distances[distances > 0]
    return float(np.median(positive)) * factor if len(positive) else 1.0


class NeighbourKDE:
    """Gaussian KDE of ``rows`` with bandwidth ``bandwidth``, summed over the nearest rows.

    ``score_samples`` follows sklearn's name and meaning: the log-density at each query row.
    """

    def __init__(self, rows: np.ndarray, bandwidth: float, neighbours: int = KDE_NEIGHBOURS) -> None:
        if len(rows) == 0:
            raise ValueError("a density needs at least one row")
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be positive, got {bandwidth}")
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.bandwidth = float(bandwidth)
        self.neighbours = min(neighbours, len(rows))

    def score_samples(self, queries: np.ndarray) -> np.ndarray:
        distances = nearest_distances(self.rows, queries, self.neighbours).astype(np.float64)
        # Where even the last neighbour is close (many duplicates: a memorising generator, a
        # discrete schema) the truncated sum would saturate and hide exactly that signal: those
        # rows are searched again with many more neighbours.
        crowded = distances[:, -1] < CROWDED_BANDWIDTHS * self.bandwidth
        wider = min(len(self.rows), CROWDED_NEIGHBOURS)
        if crowded.any() and wider > self.neighbours:
            again = nearest_distances(self.rows, queries[crowded], wider).astype(np.float64)
            return self._log_density(distances, again, crowded)
        return self._log_density(distances, None, crowded)

    def _log_density(self, distances: np.ndarray, again: np.ndarray | None, crowded: np.ndarray) -> np.ndarray:
        h = self.bandwidth
        dims = self.rows.shape[1]
        log_normaliser = math.log(len(self.rows)) + 0.5 * dims * math.log(2.0 * math.pi * h * h)
        out = logsumexp(-(distances**2) / (2.0 * h * h), axis=1) - log_normaliser
        if again is not None:
            out[crowded] = logsumexp(-(again**2) / (2.0 * h * h), axis=1) - log_normaliser
        return out
