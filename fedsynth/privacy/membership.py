"""Membership inference at a site: can an attacker tell the site's training rows from its holdout?

Members are the site's training rows, non-members its holdout rows (never trained on). Each
attack gives every candidate record a score (higher = "more likely a member"); what is reported
is what a privacy officer needs: the true-positive rate at low false-positive rates (0.1%, 1%),
which AUC hides, plus the AUC with a confidence interval and a fixed-size ROC curve for plots.

This module holds the scoring summary, the black-box distance attack (synthetic sample only)
and the white-box attack (the global model's weights); both run at the site on its own rows
and return aggregates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from fedsynth.data.schema import Schema
from fedsynth.data.transforms import Transformer
from fedsynth.model.generators import AnyGenerator
from fedsynth.privacy.empirical_epsilon import empirical_epsilon
from fedsynth.privacy.kde import NeighbourKDE, nearest_neighbour_bandwidth
from fedsynth.privacy.nearest_neighbour import Z_95, nearest_distances

KDE_BANDWIDTH_FACTOR = 0.5
ROC_POINTS = 101  # FPR grid for the plotted curve: log-spaced from 1e-4 to 1
# Candidates scored per class. 10,000 non-members put 10 above the threshold at 0.1% FPR and
# give an AUC CI of about +-0.008: enough for every reported number, and it keeps the attacks
# at a 100k-row site to seconds (the white-box attack's cost is one forward pass per candidate
# and mask draw).
MAX_CANDIDATES = 10_000

# Non-members a TPR at 1% FPR needs: one false positive is then 1% (at 0.1% FPR, ten times as many).
MIN_NON_MEMBERS = 100


def candidate_indices(
    n_train: int, n_holdout: int, rng: np.random.Generator, cap: int = MAX_CANDIDATES
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded positions of the members (train) and non-members (holdout) an attack scores.

    Both classes get the same size, min(n_holdout, cap), so an attack that says "member" at
    random scores AUC 0.5 and the TPR at a fixed FPR is comparable across sites.
    """
    size = min(n_holdout, n_train, cap)
    members = rng.choice(n_train, size=size, replace=False) if size < n_train else np.arange(n_train)
    non_members = rng.choice(n_holdout, size=size, replace=False) if size < n_holdout else np.arange(n_holdout)
    return members, non_members


@dataclass(frozen=True)
class AttackResult:
    """Aggregates of one membership-inference attack (safe to send to the coordinator)."""

    attack: str
    n_members: int
    n_non_members: int
    auc: float
    auc_ci: tuple[float, float]
    # None (withheld) when there are fewer than 1/FPR non-members: with 33 non-members, "1% FPR"
    # means "above every non-member", and the TPR is noise (0.24 for a DP model at epsilon 1).
    tpr_at_0_1pct_fpr: float | None
    tpr_at_1pct_fpr: float | None
    roc_fpr: list[float]
    roc_tpr: list[float]
    # The statistical lower bound on epsilon this attack proves, at the site's delta (None when
    # no delta was given): see :mod:`fedsynth.privacy.empirical_epsilon`.
    empirical_epsilon: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tpr_at_fpr(member_scores: np.ndarray, non_member_scores: np.ndarray, fpr: float) -> float:
    """Share of members scored strictly above the threshold that at most ``fpr`` of non-members exceed."""
    ordered = np.sort(non_member_scores)[::-1]
    allowed = int(math.floor(fpr * len(ordered)))  # non-members allowed above the threshold
    threshold = ordered[allowed] if allowed < len(ordered) else -np.inf
    return float(np.mean(member_scores > threshold))


def summarise_attack(
    name: str, member_scores: np.ndarray, non_member_scores: np.ndarray, delta: float | None = None
) -> AttackResult:
    """AUC (Mann-Whitney, ties half) with a Hanley-McNeil 95% CI, TPR at 0.1%/1% FPR, ROC points,
    and, given ``delta``, the empirical epsilon lower bound from the same scores."""
    members = np.asarray(member_scores, dtype=float)
    non_members = np.asarray(non_member_scores, dtype=float)
    m, n = len(members), len(non_members)
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 members and 2 non-members, got {m} and {n}")
    ranks = rankdata(np.concatenate([members, non_members]))
    auc = float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (m - 1) * (q1 - auc**2) + (n - 1) * (q2 - auc**2)) / (m * n)
    half = Z_95 * math.sqrt(max(variance, 0.0))
    grid = np.concatenate([[0.0], np.logspace(-4, 0, ROC_POINTS - 1)])
    return AttackResult(
        attack=name,
        n_members=m,
        n_non_members=n,
        auc=auc,
        auc_ci=(max(0.0, auc - half), min(1.0, auc + half)),
        tpr_at_0_1pct_fpr=tpr_at_fpr(members, non_members, 0.001) if n >= 10 * MIN_NON_MEMBERS else None,
        tpr_at_1pct_fpr=tpr_at_fpr(members, non_members, 0.01) if n >= MIN_NON_MEMBERS else None,
        roc_fpr=grid.tolist(),
        roc_tpr=[tpr_at_fpr(members, non_members, f) for f in grid],
        empirical_epsilon=None if delta is None else empirical_epsilon(members, non_members, delta).to_dict(),
    )


def distance_attack(
    synthetic: pd.DataFrame,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    schema: Schema,
    seed: int = 0,
    delta: float | None = None,
) -> AttackResult:
    """Black-box: a record is called a member the closer it lies to some synthetic row.

    Candidates: :func:`candidate_indices` (equal, capped class sizes).
    """
    transformer = Transformer(schema)
    members, non_members = candidate_indices(len(train), len(holdout), np.random.default_rng(seed))
    reference = transformer.encode(synthetic)
    member_scores = -nearest_distances(reference, transformer.encode(train.iloc[members]), 1)[:, 0]
    non_member_scores = -nearest_distances(reference, transformer.encode(holdout.iloc[non_members]), 1)[:, 0]
    return summarise_attack("distance", member_scores, non_member_scores, delta)


def white_box_attack(
    model: AnyGenerator,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    draws: int = 16,
    seed: int = 0,
    delta: float | None = None,
) -> AttackResult:
    """White-box: a record is called a member the lower the global model's masked loss on it.

    The loss is the generator's own training objective (``per_record_loss``: the MCM's
    masked-column negative log-likelihood, the Med-VAE's negative ELBO), averaged over ``draws``
    random masks or latent draws per record: records the model was fitted to are reconstructed
    better. Black-box attacks on a DP generator give loose bounds; this one
    reads the released weights, which is what an attacker holding the model can do.
    """
    members, non_members = candidate_indices(len(train), len(holdout), np.random.default_rng(seed))
    generator = torch.Generator().manual_seed(seed)
    network = model.network_
    network.eval()

    def mean_loss(frame: pd.DataFrame) -> np.ndarray:
        codes = model.codes_tensor(frame)
        with torch.no_grad():
            total = sum(model.per_record_loss(codes, generator, 1.0) for _ in range(draws))
        return (total / draws).numpy()

    return summarise_attack("white-box", -mean_loss(train.iloc[members]), -mean_loss(holdout.iloc[non_members]), delta)


def density_attack(
    synthetic: pd.DataFrame,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    schema: Schema,
    seed: int = 0,
    delta: float | None = None,
) -> AttackResult:
    """Black-box, DOMIAS-style (van Breugel et al., 2023): synthetic density over reference density.

    A generator that memorises puts extra density on its training records, beyond what the
    population explains. The population's density comes from a reference set the model never
    saw: half of the holdout; the other half are the non-member candidates, and as many training
    rows are the members.
    """
    transformer = Transformer(schema)
    rng = np.random.default_rng(seed)
    held = transformer.encode(holdout)[rng.permutation(len(holdout))]
    half = len(held) // 2
    reference, non_members = held[:half], held[half:]
    if half < 2:
        raise ValueError(f"the density attack needs at least 4 holdout rows, got {len(holdout)}")
    member_index, non_member_index = candidate_indices(len(train), len(non_members), rng)
    members, non_members = transformer.encode(train.iloc[member_index]), non_members[non_member_index]
    synthetic_rows = transformer.encode(synthetic)
    # Bandwidth: half the median nearest-neighbour distance. A global rule (Scott's) smooths
    # over FLChain's transformed space so much that a copied training set gave AUC 0.59; the
    # nearest-neighbour scale keeps the local structure memorisation creates (AUC 0.76 at the
    # median, 0.87 at half of it, 0.88 at a quarter).
    synthetic_density, reference_density = (
        NeighbourKDE(rows, nearest_neighbour_bandwidth(rows, KDE_BANDWIDTH_FACTOR, rng))
        for rows in (synthetic_rows, reference)
    )

    def score(rows: np.ndarray) -> np.ndarray:  # log p_synthetic(x) - log p_reference(x)
        return synthetic_density.score_samples(rows) - reference_density.score_samples(rows)

    return summarise_attack("density", score(members), score(non_members), delta)
