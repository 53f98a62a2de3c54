"""Drawing rows from the Med-VAE's prior, and conditions honoured by rejection.

Rows are decoded from z ~ N(0, I), not from the paper's "condition-specific libraries" of
encoded training rows: such a library is the training rows themselves, kept in the model.
A condition is honoured by drawing rows and keeping those that satisfy it
(:func:`~fedsynth.data.conditions.satisfies`), again until there are enough; a condition the
model almost never produces is refused with its name instead of drawing for ever.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from fedsynth.data.conditions import ConditionError, ResolvedCondition, satisfies
from fedsynth.data.schema import ColumnKind
from fedsynth.data.transforms import Transformer
from fedsynth.model.draws import inverse_cdf
from fedsynth.model.layout import Layout
from fedsynth.model.medvae.network import MedVAENetwork

PILOT_ROWS = 20_000  # rows drawn before an acceptance rate is trusted enough to refuse on
MAX_DRAWS = 5_000_000  # rows one group may draw before its conditions are called hopeless
MAX_BATCH = 200_000  # rows decoded at once (memory bound)


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


def decode_rows(network: MedVAENetwork, transformer: Transformer, n: int, generator: torch.Generator) -> pd.DataFrame:
    """``n`` canonical rows decoded from the prior (NaN where a missing = "model" value is drawn missing)."""
    with torch.inference_mode():
        z = torch.randn(n, network.latent, generator=generator)
        codes = draw_codes(network.layout, network.decode(z), generator)
        collapsed = network.layout.collapse(codes)
    return transformer.from_codes(collapsed.double().numpy())


def describe(condition: ResolvedCondition) -> str:
    """A resolved condition as the user would write it."""
    column = condition.column
    if condition.codes is not None:
        return f"{column.name} in {{{', '.join(column.labels[c] for c in condition.codes)}}}"
    return f"{condition.lower_value:g}<={column.name}<={condition.upper_value:g}"


def accepted_rows(
    draw: Callable[[int], pd.DataFrame], m: int, conditions: list[ResolvedCondition], title: str = "Med-VAE"
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
