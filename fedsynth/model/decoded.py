"""Generators that decode rows from a prior (Med-VAE, CK4Gen): one value per column drawn from
its output head, and conditions honoured by rejection.

A condition is honoured by drawing rows and keeping those that satisfy it
(:func:`~fedsynth.data.conditions.satisfies`), again until there are enough; a condition the
model almost never produces is refused with its name instead of drawing for ever.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from fedsynth.data.conditions import (
    ConditionError,
    ConditionsLike,
    ResolvedCondition,
    enforce_conditions,
    resolve_any,
    satisfies,
)
from fedsynth.data.schema import ColumnKind
from fedsynth.model.calibrated import calibrated_frames
from fedsynth.model.draws import inverse_cdf
from fedsynth.model.generator import Network, NetworkGenerator
from fedsynth.model.layout import Layout
from fedsynth.model.sampler import GROUP_ROWS, group_seeds

PILOT_ROWS = 20_000  # rows drawn before an acceptance rate is trusted enough to refuse on
MAX_DRAWS = 5_000_000  # rows one group may draw before its conditions are called hopeless
MAX_BATCH = 200_000  # rows decoded at once (memory bound)


class DecodingGenerator(NetworkGenerator[Network]):
    """A network generator whose rows are decoded in groups and kept when they meet the
    conditions; subclasses say how one group's rows are drawn (``_draw``)."""

    def _draw(self, generator: torch.Generator) -> Callable[[int], pd.DataFrame]:
        """``draw(n)``: ``n`` canonical rows, from ``generator`` alone."""
        raise NotImplementedError

    def resolve(self, conditions: ConditionsLike) -> list[ResolvedCondition]:
        """Parse (if text) and check conditions against the schema; resolved ones pass through."""
        return resolve_any(conditions, self._schema())

    def sample(self, n: int, conditions: ConditionsLike = None, seed: int = 0) -> pd.DataFrame:
        """``n`` synthetic rows, every one satisfying every condition (see :meth:`MCM.sample`'s
        grammar); deterministic for ``seed``."""
        frames = list(self.sample_chunks(n, conditions, seed))
        if not frames:
            return self.transformer.from_codes(torch.zeros(0, len(self._schema().columns)).double().numpy())
        return pd.concat(frames, ignore_index=True)

    def sample_chunks(
        self, n: int, conditions: ConditionsLike = None, seed: int = 0, workers: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """``sample``'s rows in order, in frames of at most ``GROUP_ROWS`` rows, each group drawn
        from its own seed derived from ``seed``. ``workers`` is accepted for the
        :class:`~fedsynth.model.generator.Generator` interface; groups are drawn one at a time.
        Conditions are checked now, not at the first frame. With ``calibration_`` each group's
        rows are calibrated to its DP marginal tables (:mod:`fedsynth.model.calibrated`)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self._network()
        resolved = self.resolve(conditions)
        if self.calibration_ is not None:
            return calibrated_frames(DecodedCandidates(self), self.calibration_, int(n), resolved, seed)
        return self._decoded_frames(int(n), resolved, seed)

    def _decoded_frames(self, n: int, resolved: list[ResolvedCondition], seed: int) -> Iterator[pd.DataFrame]:
        starts = list(range(0, int(n), GROUP_ROWS))
        seeds = group_seeds(seed, len(starts))

        def frames() -> Iterator[pd.DataFrame]:
            for start, group_seed in zip(starts, seeds, strict=True):
                draw = self._draw(torch.Generator().manual_seed(int(group_seed) % (2**63)))
                size = min(GROUP_ROWS, int(n) - start)
                yield enforce_conditions(accepted_rows(draw, size, resolved, self.title), resolved)

        return frames()


class DecodedCandidates:
    """A decoding generator's rows as calibration's candidate source (groups of ``GROUP_ROWS``).
    A generator whose outcome is a model of the covariates (CK4Gen's distilled Cox model:
    ``redraws_outcome``) draws it again for the calibrated rows; otherwise each keeps its own."""

    def __init__(self, model: DecodingGenerator) -> None:  # type: ignore[type-arg]
        self.model = model

    @property
    def has_survival_head(self) -> bool:
        return bool(getattr(self.model, "redraws_outcome", False))

    def group_starts(self, n: int) -> list[int]:
        return [*range(0, n, GROUP_ROWS), n] if n else [0, 0]

    def iter_frames(
        self, n: int, conditions: list[ResolvedCondition], seed: int, workers: int | None = None
    ) -> Iterator[pd.DataFrame]:
        return self.model._decoded_frames(n, conditions, seed)

    def redraw_outcome(self, frame: pd.DataFrame, seed: int, event_offset: float = 0.0) -> pd.DataFrame:
        if event_offset:  # only the MCM's hazard head takes a shift (calibrated_frames passes 0 here)
            raise ValueError("a decoding generator's outcome model takes no event offset")
        return self.model.redraw_outcome(frame, seed)  # type: ignore[attr-defined,no-any-return]

    def event_offset_for(self, frame: pd.DataFrame, share: float) -> float:
        return 0.0


def draw_codes(layout: Layout, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One value per column from its head: a bin then a uniform point inside it (numeric), a
    Bernoulli (binary), a category (categorical); model codes (n, n_columns)."""
    n = logits.shape[0]
    codes = torch.zeros(n, layout.n_columns)
    for head in layout.heads:
        block = logits[:, head.out_start : head.out_stop]
        u = torch.rand(n, generator=generator)
        if head.column.is_numeric:
            index = inverse_cdf(torch.softmax(block, dim=1), u)
            codes[:, head.index] = (index + torch.rand(n, generator=generator)) / layout.n_bins
        elif head.kind == ColumnKind.BINARY:
            codes[:, head.index] = (u < torch.sigmoid(block[:, 0])).float()
        else:
            codes[:, head.index] = inverse_cdf(torch.softmax(block, dim=1), u).float()
    return codes


def describe(condition: ResolvedCondition) -> str:
    """A resolved condition as the user would write it."""
    column = condition.column
    if condition.codes is not None:
        return f"{column.name} in {{{', '.join(column.labels[c] for c in condition.codes)}}}"
    return f"{condition.lower_value:g}<={column.name}<={condition.upper_value:g}"


def accepted_rows(
    draw: Callable[[int], pd.DataFrame], m: int, conditions: list[ResolvedCondition], title: str
) -> pd.DataFrame:
    """The first ``m`` rows satisfying every condition among rows from ``draw`` (called again
    until there are ``m``); refuses, naming the rarest condition and the generator (``title``),
    when ``m`` would take more than ``MAX_DRAWS`` rows."""
    if not conditions:
        return draw(m)
    kept: list[pd.DataFrame] = []
    have = drawn = 0
    each = np.zeros(len(conditions))  # rows satisfying each condition on its own
    batch = max(m, 1024)
    while have < m:
        frame = draw(batch)
        truth = [satisfies(frame, c).to_numpy() for c in conditions]
        each += [t.sum() for t in truth]
        ok = np.logical_and.reduce(truth)
        kept.append(frame[ok])
        have += int(ok.sum())
        drawn += batch
        rate = have / drawn
        needed = math.inf if have == 0 else (m - have) / rate
        if drawn >= PILOT_ROWS and drawn + needed > MAX_DRAWS:
            raise _hopeless(conditions, each, have, drawn, m, title)
        batch = int(min(MAX_BATCH, max(1024, 1.2 * needed if have else 4 * batch)))
    return pd.concat(kept, ignore_index=True).iloc[:m].reset_index(drop=True)


def _hopeless(
    conditions: list[ResolvedCondition], each: np.ndarray, have: int, drawn: int, m: int, title: str
) -> ConditionError:
    rarest = int(np.argmin(each))
    condition = conditions[rarest]
    together = "" if len(conditions) == 1 else f"; all conditions together: {have} of {drawn}"
    return ConditionError(
        f"condition '{describe(condition)}' is almost never produced by this {title}: {int(each[rarest])} of "
        f"{drawn} drawn rows satisfy it{together}, too few to draw {m} rows within {MAX_DRAWS} draws; "
        "widen the condition (e.g. a range instead of a single value) or ask for fewer rows",
        condition.column.name,
    )
