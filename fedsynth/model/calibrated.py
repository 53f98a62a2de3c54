"""Calibrated model-only sampling: the model's rows, weighted to a run's DP marginal tables.

A model that carries a :class:`~fedsynth.marginals.target.MarginalTarget` draws each row group
of a sample (the boundaries and seeds of :class:`~fedsynth.model.sampler.ConditionalSampler`)
as ``target.n_candidates(size)`` model rows from that group's seed, calibrated to ``size`` rows
(:func:`fedsynth.marginals.calibration.calibrate`). The in-memory sample and every streamed one
concatenate the same groups, so they hold the same rows, as uncalibrated samples do.
Only the model and the DP tables are read: post-processing of DP releases.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from fedsynth.data.conditions import ResolvedCondition
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.sampler import ConditionalSampler, enforce_conditions, group_seeds


def calibrated_frames(
    sampler: ConditionalSampler,
    target: MarginalTarget,
    n: int,
    conditions: list[ResolvedCondition],
    seed: int,
    workers: int | None = None,
) -> Iterator[pd.DataFrame]:
    """The calibrated sample's row groups, in order; ``workers`` draw each group's candidates."""
    if n == 0:
        yield from sampler.iter_frames(0, conditions, seed, workers)
        return
    starts = sampler.group_starts(n)
    for group, group_seed in enumerate(group_seeds(seed, len(starts) - 1)):
        size = starts[group + 1] - starts[group]
        pool = sampler.iter_frames(target.n_candidates(size), conditions, int(group_seed), workers)
        candidates = pd.concat(list(pool), ignore_index=True)
        rows = target.calibrate(candidates, size, int(group_seed), conditions)
        yield enforce_conditions(rows, conditions)
