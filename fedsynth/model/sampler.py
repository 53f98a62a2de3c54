"""Model-only conditional sampling: no real row is read, so this runs on the server.

Every value is drawn from the network's learned conditional distribution, feature by
feature in a random order, each draw conditioned on everything drawn before (masked
tabular transformers such as TabMT sample this way). Conditions are honoured exactly:

* a fixed value (``diabetes=1``, ``age=65``) is given to the model as visible from the start;
* a set or a range is drawn first, from the model's distribution *truncated* to it, so the
  other features are then drawn given a value that satisfies the condition. For a single
  constrained column this is exactly p(x | condition) under the model; with several, each
  is truncated given those drawn before it (an approximation of the joint truncation).

With a survival head (``MCMConfig.survival_head``) and no condition on the outcome, the
covariates are drawn this way and the outcome last, jointly (event, time bin) from the head
given every covariate. A condition on time or event keeps the MCM's own outcome heads, drawn
in the order above, so the covariates are drawn given the condition.

A missing = "model" column's missingness indicator is drawn just before its value; where it
says missing, the value stays hidden from every later draw and comes out as NaN. A condition
on such a column fixes its indicator to "present": a missing value satisfies no condition.

Every row gets its own random order, so the errors any one order would make average out
over a sample instead of shifting all of it; each step is still one batched forward pass
in which every row draws its own next column. Rows are
processed in groups of at most ``GROUP_ROWS``, each with its own generator derived from the
seed (:meth:`ConditionalSampler.iter_codes`): given a seed the output is deterministic, and a
sample streamed group by group (``fedsynth sample``, the service) holds exactly the rows of
the same sample kept in memory.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from fedsynth.data.conditions import ResolvedCondition, enforce_conditions
from fedsynth.data.schema import ColumnKind
from fedsynth.data.transforms import Transformer
from fedsynth.model.draws import draw_competing_hazards, inverse_cdf, solve_event_offset
from fedsynth.model.inference import InferenceTrunk
from fedsynth.model.layout import Layout
from fedsynth.model.network import MASKED_SCORE, MCMNetwork

GROUP_ROWS = 16384
# Groups a streamed sample draws at once: each holds ~40 MiB of activations (WHAS500), so
# a many-core machine would otherwise spend a group's memory per core; four keep two cores
# busy with room to spare and bound the stream's memory whatever the machine.
STREAM_WORKERS = 4


class ConditionalSampler:
    """Draw synthetic rows from a trained :class:`MCMNetwork` alone.

    Each step runs the trunk once for all rows, sorts rows by the column they draw, and
    applies each column's head to its contiguous slice: Bernoulli draws for binary columns,
    inverse-CDF draws over (truncated) bins or categories otherwise.
    """

    def __init__(
        self, network: MCMNetwork, transformer: Transformer, group_rows: int = GROUP_ROWS, outcome_last: bool = False
    ) -> None:
        self.network = network.eval()
        self.layout: Layout = network.layout
        self.transformer = transformer
        self.group_rows = group_rows
        self.outcome_last = outcome_last
        self._outcome_columns = [h.index for h in network.layout.heads if h.column.role != "feature"]
        layout = self.layout
        self.n_outcomes = max(h.n_outcomes for h in layout.heads)
        self._is_categorical = torch.tensor([h.kind == ColumnKind.CATEGORICAL for h in layout.heads])
        self._in_start = torch.tensor([h.in_start for h in layout.heads])
        self._width = torch.tensor([h.in_stop - h.in_start for h in layout.heads])
        self._max_width = int(self._width.max())
        # Per head, the index of its missingness indicator (-1: none).
        self._indicator = torch.full((layout.n_columns,), -1, dtype=torch.long)
        for value, indicator in layout.indicator_of.items():
            self._indicator[value] = indicator

    def _tables(self, conditions: list[ResolvedCondition]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per column and outcome: log prior weight (truncation; -inf excludes), bin bounds [lo, hi]."""
        layout, k = self.layout, self.n_outcomes
        by_index = {c.index: c for c in conditions}
        weight = torch.zeros(layout.n_columns, k)
        lo = torch.zeros(layout.n_columns, k)
        hi = torch.zeros(layout.n_columns, k)
        edges = torch.linspace(0.0, 1.0, layout.n_bins + 1, dtype=torch.float64).float()
        for head in layout.heads:
            condition = by_index.get(head.index)
            if head.column.is_numeric:
                low, high = (condition.unit_lower, condition.unit_upper) if condition else (0.0, 1.0)
                bin_lo = torch.clamp(edges[:-1], min=low)
                bin_hi = torch.clamp(edges[1:], max=high)
                # share of each bin inside the allowed interval: exact truncation of a histogram
                weight[head.index, : layout.n_bins] = torch.clamp(bin_hi - bin_lo, min=0.0) * layout.n_bins
                lo[head.index, : layout.n_bins] = bin_lo
                hi[head.index, : layout.n_bins] = torch.maximum(bin_hi, bin_lo)
            else:
                allowed = list(condition.codes) if condition and condition.codes else range(head.n_outcomes)
                weight[head.index, list(allowed)] = 1.0
        return torch.log(weight), lo, hi

    @torch.inference_mode()
    def sample_codes(self, n: int, conditions: list[ResolvedCondition], seed: int) -> np.ndarray:
        """(n, n_schema_columns) codes: unit values for numeric columns, integer codes otherwise, NaN
        for missing values (the transformer's codes)."""
        out = np.empty((n, self.layout.n_schema_columns), dtype=np.float64)
        start = 0
        for codes in self.iter_codes(n, conditions, seed):
            out[start : start + len(codes)] = codes
            start += len(codes)
        return out

    def iter_codes(
        self, n: int, conditions: list[ResolvedCondition], seed: int, workers: int | None = None
    ) -> Iterator[np.ndarray]:
        """The codes of :meth:`sample_codes`, one row group at a time, in order.

        This is the one definition of how ``n`` rows are drawn (group boundaries from
        :meth:`group_starts`, one generator per group from :func:`group_seeds`): the in-memory
        sample and every streamed one concatenate these groups, so they hold the same rows.
        At most ``workers`` groups (default: torch's thread count) are drawn at once and at
        most that many wait to be consumed, so memory is bounded whatever ``n`` is.
        """
        if n == 0:
            yield np.empty((0, self.layout.n_schema_columns), dtype=np.float64)
            return
        tables = self._tables(conditions)
        starts = self.group_starts(n)
        n_groups = len(starts) - 1
        seeds = group_seeds(seed, n_groups)

        def run(group: int) -> np.ndarray:
            generator = torch.Generator().manual_seed(int(seeds[group]))
            with torch.inference_mode():  # thread-local: pool threads do not inherit it
                codes = self._sample_group(starts[group + 1] - starts[group], conditions, tables, generator)
            return self.layout.collapse(codes).double().numpy()

        workers = min(n_groups, torch.get_num_threads() if workers is None else max(1, workers))
        if workers <= 1:
            for group in range(n_groups):
                yield run(group)
            return
        # Each step is many small tensor operations; groups on separate threads (torch releases
        # the GIL) keep the cores busier than splitting every small operation across them.
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        pending: deque[Future[np.ndarray]] = deque()
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                submitted = 0
                while pending or submitted < n_groups:
                    # Keep ``workers`` groups in flight while the caller writes the oldest one.
                    while submitted < n_groups and len(pending) < workers:
                        pending.append(pool.submit(run, submitted))
                        submitted += 1
                    yield pending.popleft().result()
        finally:
            for future in pending:  # the caller stopped early: draw nothing more
                future.cancel()
            torch.set_num_threads(previous)

    def group_starts(self, n: int) -> list[int]:
        """Boundaries of near-equal row groups of at most ``group_rows`` rows.

        More than one group is made an even number so two worker threads finish together
        (13 groups on 2 threads would leave one idle for a whole group). The split depends on
        ``n`` only, never on the thread count, so a seed gives the same rows on every machine.
        """
        n_groups = max(1, math.ceil(n / self.group_rows))
        if n_groups > 1 and n_groups % 2:
            n_groups += 1
        return [round(i * n / n_groups) for i in range(n_groups + 1)]

    def sample(self, n: int, conditions: list[ResolvedCondition], seed: int) -> pd.DataFrame:
        """``n`` rows in canonical form, every one satisfying every condition."""
        frame = self.transformer.from_codes(self.sample_codes(n, conditions, seed))
        return enforce_conditions(frame, conditions)

    def iter_frames(
        self, n: int, conditions: list[ResolvedCondition], seed: int, workers: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """The rows of :meth:`sample`, one row group at a time (decoding is row by row)."""
        for codes in self.iter_codes(n, conditions, seed, workers):
            yield enforce_conditions(self.transformer.from_codes(codes), conditions)

    def _sample_group(
        self,
        n: int,
        conditions: list[ResolvedCondition],
        tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        generator: torch.Generator,
    ) -> torch.Tensor:
        layout = self.layout
        log_weight, lo, hi = tables
        constrained = {c.index for c in conditions if not c.is_fixed}
        codes = torch.zeros(n, layout.n_columns)
        encoded = torch.zeros(n, layout.encoded_width)  # zero wherever masked
        masked_f = torch.ones(n, layout.n_columns)
        score_bias = torch.full((n, layout.encoded_width), MASKED_SCORE)
        rows = torch.arange(n)
        state = (codes, encoded, masked_f, score_bias)
        for condition in conditions:
            if condition.index in layout.indicator_of:  # a conditioned value is present
                self._set(rows, torch.full((n,), layout.indicator_of[condition.index]), torch.zeros(n), state)
            if condition.is_fixed:
                value = float(condition.codes[0]) if condition.codes is not None else condition.unit_lower
                self._set(rows, torch.full((n,), condition.index), torch.full((n,), value), state)
        use_head = self.network.survival_head is not None and not any(
            c.index in self._outcome_columns for c in conditions
        )
        order = self.draw_order(n, conditions, generator, skip=self._outcome_columns if use_head else ())
        trunk = InferenceTrunk(self.network, n)
        for step in range(order.shape[1]):
            if step == 0 and not conditions:
                # Nothing is visible yet: every row has the same context, so one row suffices.
                hidden = trunk(encoded[:1], masked_f[:1], score_bias[:1]).expand(n, -1)
            else:
                hidden = trunk(encoded, masked_f, score_bias)
            # Sort rows by the column they draw now, so each head runs on one contiguous slice.
            columns = order[:, step]
            perm = torch.argsort(columns, stable=True)
            sorted_columns = torch.index_select(columns, 0, perm)
            sorted_hidden = torch.index_select(hidden, 0, perm, out=trunk.spare)
            value = self._draw_sorted(sorted_hidden, sorted_columns, tables, constrained, generator)
            self._set(perm, sorted_columns, value, state)
        if use_head:
            self._draw_outcome(codes, encoded, generator)
        return codes

    @property
    def has_survival_head(self) -> bool:
        return self.network.survival_head is not None

    def redraw_outcome(self, frame: pd.DataFrame, seed: int, event_offset: float = 0.0) -> pd.DataFrame:
        """``frame`` (canonical) with (event, time) drawn afresh from the survival head given each
        row's covariates, kept as they are; a hazard head's event logits shifted by ``event_offset``."""
        codes = self._codes_of(frame)
        with torch.no_grad():
            self._draw_outcome(
                codes, self.layout.encode_codes(codes), torch.Generator().manual_seed(int(seed)), event_offset
            )
        drawn = self.transformer.from_codes(self.layout.collapse(codes).double().numpy())
        out = frame.copy()
        for index in self._outcome_columns:
            name = self.layout.heads[index].column.name
            out[name] = drawn[name].to_numpy()
        return out

    def event_offset_for(self, frame: pd.DataFrame, share: float) -> float:
        """The shift of a hazard head's event logits giving ``frame``'s rows a mean event share ``share``."""
        if self.network.survival_form != "hazard":
            return 0.0
        with torch.no_grad():
            return solve_event_offset(
                self.network.survival_logits(self.layout.encode_codes(self._codes_of(frame))), share
            )

    def _codes_of(self, frame: pd.DataFrame) -> torch.Tensor:
        return self.layout.expand(torch.tensor(self.transformer.codes(frame), dtype=torch.float32))

    def _draw_outcome(
        self, codes: torch.Tensor, encoded: torch.Tensor, generator: torch.Generator, event_offset: float = 0.0
    ) -> None:
        """(event, time) of every row from the survival head, given all its covariates."""
        n_bins = self.layout.n_bins
        logits = self.network.survival_logits(encoded)
        u_within = torch.rand(len(codes), generator=generator)
        if self.network.survival_form == "hazard":
            if event_offset:
                logits[:, n_bins:] += event_offset
            cause, time_bin = draw_competing_hazards(logits, generator)
        else:
            u_outcome = torch.rand(len(codes), generator=generator)
            k = inverse_cdf(torch.exp(logits - logits.amax(dim=1, keepdim=True)), u_outcome)
            cause, time_bin = torch.div(k, n_bins, rounding_mode="floor"), torch.remainder(k, n_bins)
        time = next(h for h in self.layout.heads if h.column.role == "time")
        event = next(h for h in self.layout.heads if h.column.role == "event")
        codes[:, event.index] = cause.float()
        codes[:, time.index] = (time_bin.float() + u_within) / n_bins

    def draw_order(
        self, n: int, conditions: list[ResolvedCondition], generator: torch.Generator, skip: list[int] | tuple = ()
    ) -> torch.Tensor:
        """(n, steps) column indices: each row's own random order of the columns to draw.

        Constrained columns (sets, ranges) come first so the rest is drawn given them; with
        ``outcome_last`` time and event come after every covariate; fixed columns are given
        and never drawn, nor are ``skip`` columns (drawn otherwise). Within each tier the
        order is uniformly random, row by row.
        """
        layout = self.layout
        key = torch.rand(n, layout.n_columns, generator=generator)
        if self.outcome_last:
            key[:, self._outcome_columns] += 1.0
        key[:, list(skip)] = math.inf
        n_fixed = len(skip)
        for value, indicator in layout.indicator_of.items():
            # Just before its value: the value head is trained on present values only, so it must
            # be drawn knowing the value is there (and is not drawn where it is not).
            key[:, indicator] = torch.nextafter(key[:, value], torch.tensor(-math.inf))
        for condition in conditions:
            if condition.index in layout.indicator_of:  # fixed to "present" (see _sample_group)
                key[:, layout.indicator_of[condition.index]] = math.inf
                n_fixed += 1
            if condition.is_fixed:
                key[:, condition.index] = math.inf
                n_fixed += 1
            else:
                key[:, condition.index] -= 2.0
        return key.argsort(dim=1)[:, : layout.n_columns - n_fixed]

    def _draw_sorted(
        self,
        hidden: torch.Tensor,
        sorted_columns: torch.Tensor,
        tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        constrained: set[int],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """One draw per row of its own column; rows are sorted by column.

        Binary columns are a Bernoulli draw from the sigmoid; categorical and numeric columns
        draw an outcome by inverse CDF from the head's (truncated) distribution, and numeric
        columns then a uniform position inside the drawn bin.
        """
        log_weight, lo, hi = tables
        n = hidden.shape[0]
        u_outcome = torch.rand(n, generator=generator)
        u_within = torch.rand(n, generator=generator)
        value = torch.empty(n)
        counts = torch.bincount(sorted_columns, minlength=self.layout.n_columns).tolist()
        start = 0
        for head, count in zip(self.layout.heads, counts, strict=True):
            if not count:
                continue
            rows = slice(start, start + count)
            start += count
            logits = self.network.head_logits(hidden[rows], head.index)
            if head.kind == ColumnKind.BINARY:
                value[rows] = (u_outcome[rows] < torch.sigmoid(logits[:, 0])).float()
                continue
            if head.index in constrained:
                logits = logits + log_weight[head.index, : head.n_outcomes]
            # Unnormalised probabilities suffice: the inverse-CDF draw scales by their sum.
            k = inverse_cdf(torch.exp(logits - logits.amax(dim=1, keepdim=True)), u_outcome[rows])
            if head.column.is_numeric:
                low, high = lo[head.index, k], hi[head.index, k]
                value[rows] = low + u_within[rows] * (high - low)
            else:
                value[rows] = k.float()
        return value

    def _set(self, rows: torch.Tensor, columns: torch.Tensor, value: torch.Tensor, state: tuple) -> None:
        """Record row i's draw of column ``columns[i]`` and make it visible to later steps.

        Writes go through flat indices into contiguous buffers (much cheaper than 2-D
        advanced indexing for one element per row).
        """
        codes, encoded, masked_f, score_bias = state
        indicator = self._indicator[columns]
        if (indicator >= 0).any():
            # A value whose indicator was drawn "missing" stays hidden (its code is NaN once collapsed).
            is_missing = codes.view(-1)[rows * codes.shape[1] + indicator.clamp(min=0)] >= 0.5
            keep = ~((indicator >= 0) & is_missing)
            rows, columns, value = rows[keep], columns[keep], value[keep]
        flat_column = rows * codes.shape[1] + columns
        codes.view(-1).index_copy_(0, flat_column, value)
        masked_f.view(-1).index_fill_(0, flat_column, 0.0)
        categorical = self._is_categorical[columns]
        flat_input = rows * encoded.shape[1] + self._in_start[columns]
        encoded.view(-1).index_copy_(
            0, flat_input + torch.where(categorical, value.long(), 0), torch.where(categorical, 1.0, value)
        )
        score_bias.view(-1).index_fill_(0, flat_input, 0.0)
        for offset in range(1, self._max_width):  # the rest of a categorical's one-hot block
            inside = offset < self._width[columns]
            score_bias.view(-1).index_fill_(0, flat_input[inside] + offset, 0.0)


def group_seeds(seed: int, n_groups: int) -> np.ndarray:
    """One generator seed per row group, derived from ``seed``: the rows do not depend on
    which thread draws which group, nor on whether the groups are streamed or kept."""
    return np.random.SeedSequence(int(seed)).generate_state(n_groups, dtype=np.uint64)
