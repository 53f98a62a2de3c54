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
from typing import Protocol

import numpy as np
import pandas as pd

from fedsynth.data.conditions import ResolvedCondition, enforce_conditions
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.sampler import group_seeds


class CandidateSource(Protocol):
    """What calibration needs of a generator's sampler: its row groups, the rows of each, and
    (with a survival head) the outcome drawn again for given covariates.
    :class:`~fedsynth.model.sampler.ConditionalSampler` is one."""

    @property
    def has_survival_head(self) -> bool: ...

    def group_starts(self, n: int) -> list[int]: ...

    def iter_frames(
        self, n: int, conditions: list[ResolvedCondition], seed: int, workers: int | None = None
    ) -> Iterator[pd.DataFrame]: ...

    def redraw_outcome(self, frame: pd.DataFrame, seed: int, event_offset: float = 0.0) -> pd.DataFrame: ...

    def event_offset_for(self, frame: pd.DataFrame, share: float) -> float: ...


# The population the event share is set on: unconditional calibrated rows from a fixed seed, so
# that the offset belongs to the model and its tables, not to one sample or its conditions.
OFFSET_ROWS = 4096
OFFSET_SEED = 0


def event_offset_of(sampler: CandidateSource, target: MarginalTarget) -> float:
    """The shift of the survival head's event log-hazards that gives the calibrated unconditional
    population the DP tables' event share (0 without a head or an event table).

    Why: under DP-SGD the head's level lags (ACTG320: 6.9% events against 8.4%), which leaves a
    Cox model fitted on the sample fewer events than the real data has. One shift of every row's
    event hazard fixes the share and keeps every hazard ratio; conditioned samples get the same
    shift, so a subgroup's event rate still follows its covariates."""
    share = target.event_share()
    if not sampler.has_survival_head or share is None:
        return 0.0
    rows = pd.concat(list(calibrated_frames(sampler, target, OFFSET_ROWS, [], OFFSET_SEED)), ignore_index=True)
    return sampler.event_offset_for(rows, share)


def calibrated_frames(
    sampler: CandidateSource,
    target: MarginalTarget,
    n: int,
    conditions: list[ResolvedCondition],
    seed: int,
    workers: int | None = None,
    event_offset: float = 0.0,
) -> Iterator[pd.DataFrame]:
    """The calibrated sample's row groups, in order; ``workers`` draw each group's candidates;
    ``event_offset`` shifts the redrawn outcomes' event hazards (:func:`event_offset_of`)."""
    if n == 0:
        yield from sampler.iter_frames(0, conditions, seed, workers)
        return
    starts = sampler.group_starts(n)
    outcome = {target.spec.time_column, target.spec.event_column}
    # With a survival head the outcome is drawn again given the calibrated covariates (unless a
    # condition fixes part of it): the model's per-unit effects survive calibration.
    redraw = sampler.has_survival_head and not any(c.column.name in outcome for c in conditions)
    for group, group_seed in enumerate(group_seeds(seed, len(starts) - 1)):
        size = starts[group + 1] - starts[group]
        pool = sampler.iter_frames(target.n_candidates(size), conditions, int(group_seed), workers)
        candidates = pd.concat(list(pool), ignore_index=True)
        outcome_seed = int(np.random.SeedSequence([int(group_seed), 1]).generate_state(1)[0] >> 1)
        redraw_outcome = (
            (lambda rows, s=outcome_seed: sampler.redraw_outcome(rows, s, event_offset)) if redraw else None
        )
        rows = target.calibrate(candidates, size, int(group_seed), conditions, redraw_outcome)
        yield enforce_conditions(rows, conditions)
