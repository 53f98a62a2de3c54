"""The fairness objective of issue 24 (seed 003: Tarek, Poulain & Beheshti, "Fairness-Optimized
Synthetic EHR Generation for Arbitrary Downstream Predictive Tasks", arXiv 2406.02510), as a
per-record loss weight every generator's training loss takes.

What the paper does (github.com/healthylaife/FairSynth, ``HALOModel.forward``): the generator's
loss is ``L = L_BCE + lambda * |1 - DI|``, where DI, the disparate impact, is the ratio between two
sensitive groups of the rate of positive predictions over the *batch*, and lambda is the
``fairness_weight`` (1 in their runs). That term is a statistic of the whole batch: one record's
term depends on every other record of its group, which DP-SGD cannot have (a site clips each
record's gradient alone, :mod:`fedsynth.client.single_pass_clipping`). (In the released code the
term also carries no gradient: the rates are counted with ``(p > 0.5).sum().item()``.)

What this module does instead, per record: record i of sensitive level g(i) has the loss

    w_i * l_i,   w_i = 1 + lambda * (u_g(i) - 1),   u_g = 1 / (K * p_g),

``l_i`` its own loss, ``p_g`` the public share of level g and K the number of levels with a
positive share. That is ``L = sum_i l_i + lambda * L_fair`` with ``L_fair = sum_i (u_g(i) - 1) l_i``,
so lambda keeps the paper's meaning: 0 is the plain objective (bit for bit), larger lambda trades
fidelity for parity. Level g's total weight is ``N * ((1 - lambda) * p_g + lambda / K)``: the total
stays N, and at lambda = 1 every level weighs the same, so each group's loss counts equally
(the per-record form of the paper's aim that no group's outcomes be learnt from the majority's).
Because the weighted likelihood fits the distribution whose level shares are that mixture,
with every within-level distribution unchanged, a fitted model samples the minority levels
more often at the same fidelity: the paper's "more balanced representation across sensitive
subgroups", augmenting a real cohort where it is thin. w_i depends on record i's own level and
public constants only (declared shares, or a plain fit's training rows, never a DP site's rows).

Under DP-SGD the weight scales record i's gradient before it is clipped: a weighted gradient
above the clipping norm is cut back to it, so the weighting acts only on the records whose
gradients are below the norm, and less than in a plain fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedsynth.data.schema import ColumnRole, Schema
from fedsynth.model.config import GeneratorConfig, ModelConfigError

SHARES_KEY = "fairness_shares"  # training_info_'s record of the shares a plain fit weighed by


def check_fairness(config: GeneratorConfig, schema: Schema) -> None:
    """Refuse a ``fairness_column`` that is not a binary or categorical feature of ``schema``, or
    ``fairness_shares`` that do not give one share per level (ModelConfigError, naming the fix)."""
    name = config.fairness_column
    if name is None:
        return
    discrete = [c.name for c in schema.columns if c.role is ColumnRole.FEATURE and not c.is_numeric]
    where = f"fairness_column = {name!r}"
    if name not in schema.names:
        raise ModelConfigError(
            f"{where} is not a column of schema {schema.name!r}; name one of its binary or categorical "
            f"features: {discrete or 'none'}"
        )
    column = schema.column(name)
    if column.role is not ColumnRole.FEATURE:
        raise ModelConfigError(
            f"{where} is the {column.role} column; the sensitive column must be a feature: {discrete}"
        )
    if column.is_numeric:
        raise ModelConfigError(
            f"{where} is {column.kind}; the sensitive column must be binary or categorical (bin a numeric "
            f"attribute into a categorical column in the schema), e.g. one of {discrete or 'none'}"
        )
    if column.models_missing:
        raise ModelConfigError(
            f"{where} has missing = 'model': a record with a missing level has no group to be weighed in; "
            "declare the column with another missing policy"
        )
    shares = config.fairness_shares
    if shares is not None and len(shares) != len(column.labels):
        raise ModelConfigError(
            f"fairness_shares has {len(shares)} values but {name!r} has {len(column.labels)} levels "
            f"{list(column.labels)}: give one share per level, in that order"
        )


def dp_refusal(config: GeneratorConfig) -> str | None:
    """Why the sites cannot run this fairness option under DP-SGD (None: they can)."""
    return config.fairness_dp_refusal()


@dataclass(frozen=True)
class GroupWeights:
    """Each record's loss weight from its level of the sensitive column (see the module)."""

    column_index: int  # the sensitive column's place in model codes (the schema's order)
    per_level: torch.Tensor  # (K,) the weight of a record of each level
    shares: tuple[float, ...]  # the shares the weights were computed from

    def __call__(self, loss: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``loss`` (n,) of the records ``codes`` (n, n_columns), each times its level's weight."""
        return loss * self.per_level[codes[:, self.column_index].long()]

    def record(self) -> dict[str, Any]:
        """What ``training_info_`` keeps: the shares, so :func:`group_weights` finds them again."""
        return {SHARES_KEY: list(self.shares)}


def level_weights(shares: tuple[float, ...] | list[float], weight: float) -> torch.Tensor:
    """``1 + weight * (1 / (K p_g) - 1)`` per level g, K the levels with a positive share (a level
    of share 0 has no records and keeps weight 1)."""
    p = torch.tensor([float(s) for s in shares], dtype=torch.float64)
    p = p / p.sum()
    present = p > 0
    balanced = torch.where(present, 1.0 / (int(present.sum()) * p.clamp_min(1e-300)), torch.ones_like(p))
    return (1.0 + weight * (balanced - 1.0)).to(torch.float32)


def row_shares(codes: torch.Tensor, column_index: int, n_levels: int) -> tuple[float, ...]:
    """Shares of each level among the records ``codes`` (a plain fit's training rows)."""
    counts = torch.bincount(codes[:, column_index].long(), minlength=n_levels).double()
    return tuple(float(c) for c in counts / counts.sum())


def group_weights(
    config: GeneratorConfig,
    schema: Schema,
    codes: torch.Tensor | None = None,
    training_info: dict[str, Any] | None = None,
) -> GroupWeights | None:
    """The fairness weighting ``config`` asks for, or None when it is off (weight 0).

    Shares, first found: ``config.fairness_shares``; the training rows ``codes`` (a plain fit,
    which sees the rows anyway); the shares a plain fit recorded in ``training_info``. With none
    of them (a DP site without declared shares) ModelConfigError.
    """
    if config.fairness_weight <= 0 or config.fairness_column is None:
        return None
    check_fairness(config, schema)
    index = schema.names.index(config.fairness_column)
    n_levels = len(schema.column(config.fairness_column).labels)
    shares: tuple[float, ...] | None = config.fairness_shares
    if shares is None and codes is not None:
        shares = row_shares(codes, index, n_levels)
    if shares is None and training_info and SHARES_KEY in training_info:
        shares = tuple(float(s) for s in training_info[SHARES_KEY])
    if shares is None:
        raise ModelConfigError(dp_refusal(config) or "fairness_shares are needed")
    return GroupWeights(index, level_weights(shares, config.fairness_weight), tuple(shares))
