"""Model-only conditional sampling: no real row is read, so this runs on the server.

Every value is drawn from the network's learned conditional distribution, feature by
feature in a random order, each draw conditioned on everything drawn before (masked
tabular transformers such as TabMT sample this way). Conditions are honoured exactly:

* a fixed value (``diabetes=1``, ``age=65``) is given to the model as visible from the start;
* a set or a range is drawn first, from the model's distribution *truncated* to it, so the
  other features are then drawn given a value that satisfies the condition. For a single
  constrained column this is exactly p(x | condition) under the model; with several, each
  is truncated given those drawn before it (an approximation of the joint truncation).

Every row gets its own random order, so the errors any one order would make average out
over a sample instead of shifting all of it; each step is still one batched forward pass
(the trunk), with each column's head applied to the rows drawing that column. Rows are
processed in groups of ``GROUP_ROWS`` to bound memory. Given a seed the output is
deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fedsynth.data.schema import ColumnKind
from fedsynth.data.transforms import Transformer
from fedsynth.model.conditions import ResolvedCondition
from fedsynth.model.layout import HeadSpec, Layout
from fedsynth.model.network import MCMNetwork

GROUP_ROWS = 8192


class ConditionalSampler:
    """Draw synthetic rows from a trained :class:`MCMNetwork` alone."""

    def __init__(
        self,
        network: MCMNetwork,
        transformer: Transformer,
        group_rows: int = GROUP_ROWS,
    ) -> None:
        self.network = network.eval()
        self.layout: Layout = network.layout
        self.transformer = transformer
        self.group_rows = group_rows
        edges = torch.linspace(0.0, 1.0, self.layout.n_bins + 1, dtype=torch.float64)
        self._bin_low = edges[:-1].float()
        self._bin_high = edges[1:].float()

    @torch.inference_mode()
    def sample_codes(self, n: int, conditions: list[ResolvedCondition], seed: int) -> np.ndarray:
        """(n, n_columns) codes: unit values for numeric columns, integer codes otherwise."""
        generator = torch.Generator().manual_seed(int(seed))
        out = np.empty((n, self.layout.n_columns), dtype=np.float64)
        for start in range(0, n, self.group_rows):
            stop = min(n, start + self.group_rows)
            out[start:stop] = self._sample_group(stop - start, conditions, generator).double().numpy()
        return out

    def sample(self, n: int, conditions: list[ResolvedCondition], seed: int) -> pd.DataFrame:
        """``n`` rows in canonical form, every one satisfying every condition."""
        frame = self.transformer.from_codes(self.sample_codes(n, conditions, seed))
        return enforce_conditions(frame, conditions)

    def _sample_group(self, n: int, conditions: list[ResolvedCondition], generator: torch.Generator) -> torch.Tensor:
        layout = self.layout
        codes = torch.zeros(n, layout.n_columns)
        encoded = torch.zeros(n, layout.encoded_width)
        masked = torch.ones(n, layout.n_columns, dtype=torch.bool)
        by_index = {c.index: c for c in conditions}
        # Sort key per row and column: constrained columns first, then free ones, each in an
        # independent random order per row; fixed columns are set now and never drawn.
        key = torch.rand(n, layout.n_columns, generator=generator) + 1.0
        for condition in conditions:
            if condition.is_fixed:
                value = float(condition.codes[0]) if condition.codes is not None else condition.unit_lower
                rows = torch.arange(n)
                self._set(layout.heads[condition.index], rows, codes, encoded, masked, torch.full((n,), value))
                key[:, condition.index] = 3.0
            else:
                key[:, condition.index] -= 1.0
        n_steps = layout.n_columns - sum(c.is_fixed for c in conditions)
        order = key.argsort(dim=1)[:, :n_steps]
        for step in range(n_steps):
            if step == 0 and not conditions:
                # Nothing is visible yet: every row has the same context, so one row suffices.
                hidden = self.network.trunk(encoded[:1], masked[:1]).expand(n, -1)
            else:
                hidden = self.network.trunk(encoded, masked)
            columns = order[:, step]
            for index in columns.unique().tolist():
                rows = (columns == index).nonzero().squeeze(1)
                head = layout.heads[index]
                logits = self.network.head_logits(hidden[rows], index)
                value = self._draw(head, logits, by_index.get(index), generator)
                self._set(head, rows, codes, encoded, masked, value)
        return codes

    def _set(
        self,
        head: HeadSpec,
        rows: torch.Tensor,
        codes: torch.Tensor,
        encoded: torch.Tensor,
        masked: torch.Tensor,
        value: torch.Tensor,
    ) -> None:
        codes[rows, head.index] = value
        masked[rows, head.index] = False
        if head.kind == ColumnKind.CATEGORICAL:
            width = head.in_stop - head.in_start
            encoded[rows, head.in_start : head.in_stop] = torch.nn.functional.one_hot(value.long(), width).float()
        else:
            encoded[rows, head.in_start] = value

    def _draw(
        self, head: HeadSpec, logits: torch.Tensor, condition: ResolvedCondition | None, generator: torch.Generator
    ) -> torch.Tensor:
        n = logits.shape[0]
        if head.kind == ColumnKind.BINARY:
            p_one = torch.sigmoid(logits[:, 0])
            probs = torch.stack([1.0 - p_one, p_one], dim=1)
        else:
            probs = torch.softmax(logits, dim=1)
        if head.column.is_numeric:
            low, high = (condition.unit_lower, condition.unit_upper) if condition else (0.0, 1.0)
            lo = torch.clamp(self._bin_low, min=low)
            hi = torch.clamp(self._bin_high, max=high)
            overlap = torch.clamp(hi - lo, min=0.0) * self.layout.n_bins
            probs = probs * overlap
            k = _categorical(probs, generator)
            u = torch.rand(n, generator=generator)
            return torch.clamp(lo[k] + u * (hi[k] - lo[k]), low, high)
        if condition is not None and condition.codes is not None:
            allowed = torch.zeros(probs.shape[1])
            allowed[list(condition.codes)] = 1.0
            probs = probs * allowed
        return _categorical(probs, generator).float()


def _categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row from unnormalised probabilities (inverse CDF, batched)."""
    cdf = probs.cumsum(dim=1)
    u = torch.rand(probs.shape[0], 1, generator=generator) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True).squeeze(1)
    return torch.clamp(index, max=probs.shape[1] - 1)


def enforce_conditions(frame: pd.DataFrame, conditions: list[ResolvedCondition]) -> pd.DataFrame:
    """Make returned rows satisfy numeric conditions to the last bit, then verify all of them.

    Sampling already draws inside each condition; this removes rounding residue of the
    inverse transform (e.g. 25.499999 for 'bmi=25.5') and proves the promise holds.
    """
    for condition in conditions:
        name = condition.column.name
        if condition.codes is None:
            clipped = frame[name].clip(condition.lower_value, condition.upper_value)
            frame[name] = clipped.astype(frame[name].dtype)
    violations = [c.column.name for c in conditions if not satisfies(frame, c).all()]
    if violations:
        raise RuntimeError(f"internal error: sampled rows violate conditions on {violations}")
    return frame


def satisfies(frame: pd.DataFrame, condition: ResolvedCondition) -> pd.Series:
    """Row-wise truth of one resolved condition on a canonical frame."""
    values = frame[condition.column.name]
    if condition.codes is not None:
        allowed = {condition.column.labels[c] for c in condition.codes}
        if condition.column.kind == ColumnKind.BINARY and condition.column.categories is None:
            allowed_codes = set(condition.codes)
            return values.isin(allowed_codes)
        return values.isin(allowed)
    return (values >= condition.lower_value) & (values <= condition.upper_value)
