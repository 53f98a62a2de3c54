"""Anonymeter's re-identification risks at a site: singling out, linkability, inference.

Anonymeter (Giomi et al., 2023; the tool the French CNIL reviewed) measures GDPR's three
re-identification risks by attacking the *training* rows through the synthetic data and the
same attack on a *control* set the generator never saw; the risk is the excess success over
the control. Here the control is the site's holdout.

Traps handled (each seen in anonymeter's issue tracker or here):
* column names with spaces or symbols break its query strings: columns are renamed to safe
  names for the evaluation and the results use the schema's names;
* ``n_attacks`` larger than the control set raises inside anonymeter's singling-out and
  linkability evaluators: there it is capped. Its inference evaluator caps the training-row and
  control attacks separately, so inference attacks up to ``n_attacks`` training rows even when
  the holdout is small: at a 33-row holdout the risk's upper 95% limit is ~0.1 tighter with 134
  training attacks than with 33 (same rates), i.e. more of the evidence the site has is used;
* multivariate singling out can search for a very long time on data that resists it: the
  number of query attempts is bounded (``max_attempts``);
* its nearest-neighbour search (linkability, inference) sorts every distance per query: the
  same distance is searched exactly by faiss instead (:mod:`fedsynth.privacy.gower`), 100k
  synthetic rows in seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator
from anonymeter.stats.confidence import EvaluationResults

from fedsynth.data.schema import ColumnKind, ColumnRole, Schema
from fedsynth.privacy.gower import FaissInferencePredictor, faiss_linkability_neighbours


@dataclass(frozen=True)
class AnonymeterSettings:
    """What the attacker is assumed to know and how hard each attack tries."""

    n_attacks: int = 500
    # Linkability: two sets of columns held by two parties (default: features split in half).
    linkability_columns: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    # Inference: columns the attacker tries to learn from all the others (default: the event).
    secrets: tuple[str, ...] | None = None
    singling_out_columns: int = 3
    max_attempts: int = 20_000
    seed: int = 0


@dataclass(frozen=True)
class Risk:
    attack: str
    risk: float
    ci: tuple[float, float]
    n_attacks: int
    detail: dict[str, Any] = field(default_factory=dict)


def _safe(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _prepare(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame[columns].copy()
    out.columns = [_safe(c) for c in columns]
    return out.reset_index(drop=True)


COUNTS = ("n_baseline_attacks", "n_control_attacks", "n_success", "n_baseline_success", "n_control_success")


def _risk(name: str, evaluator: Any, **detail: Any) -> Risk:
    """The evaluator's risk and its attack counts, from one ``results()`` (``risk()`` recomputes it).

    The success counts (aggregates: how many of the attacks succeeded) let a coordinator pool
    the same attack over sites (:func:`pooled_risk`) instead of reading the worst of several
    small-sample CIs.
    """
    results = evaluator.results(confidence_level=0.95)
    value = results.risk()
    counts = {
        "n_baseline_attacks": int(results.n_attacks_baseline),
        "n_control_attacks": int(results.n_attacks_control),
        "n_success": int(results.n_success),
        "n_baseline_success": int(results.n_baseline),
        "n_control_success": int(results.n_control),
    }
    return Risk(
        name, float(value.value), (float(value.ci[0]), float(value.ci[1])), int(results.n_attacks_ori),
        {**detail, **counts},
    )  # fmt: skip


def risk_key(risk: dict[str, Any]) -> str:
    """Which attack a risk dict is, the same at every site (inference: per secret column)."""
    detail = risk.get("detail", {})
    return f"{risk['attack']}:{detail['secret']}" if "secret" in detail else risk["attack"]


def pooled_risk(risks: list[dict[str, Any]], confidence_level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """One attack's risk over several sites, from their summed attack and success counts.

    Anonymeter's own ``EvaluationResults`` computes it: the attack and control success rates
    are the pooled rates, i.e. the sites' rates weighted by their numbers of attacks. Sites hold
    different patients, so their attacks are independent; a binomial CI on the summed counts is
    if anything wider than the exact one when the sites' rates differ.
    """
    missing = [c for c in COUNTS if any(c not in r.get("detail", {}) for r in risks)]
    if not risks or missing:
        raise ValueError(f"cannot pool Anonymeter risks without {', '.join(missing) or 'any site'}")
    total = {c: sum(int(r["detail"][c]) for r in risks) for c in COUNTS}
    results = EvaluationResults(
        n_attacks=(sum(int(r["n_attacks"]) for r in risks), total["n_baseline_attacks"], total["n_control_attacks"]),
        n_success=total["n_success"],
        n_baseline=total["n_baseline_success"],
        n_control=total["n_control_success"],
        confidence_level=confidence_level,
    )
    value = results.risk()
    return float(value.value), (float(value.ci[0]), float(value.ci[1]))


MAX_DECIMALS = 6


def recorded_decimals(values: pd.Series) -> int | None:
    """Fewest decimals (0..6) that every value is recorded with; None for finer values."""
    finite = values.dropna().to_numpy(dtype=float)
    if len(finite) == 0:
        return None
    for decimals in range(MAX_DECIMALS + 1):
        if np.allclose(finite, np.round(finite, decimals), rtol=0.0, atol=1e-9):
            return decimals
    return None


def at_recorded_precision(synthetic: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    """Synthetic numeric values rounded to the precision the real rows are recorded with.

    Anonymeter compares values exactly: a synthetic age of 61.2837 singles out nobody where
    ages are recorded in whole years, but 61 may. Rounding lets the attacks query at the
    data's own precision (what an attacker would do); it also keeps univariate singling out
    from building one query per float in a 100k-row sample (40 s of a site audit).
    """
    out = synthetic.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]) and pd.api.types.is_numeric_dtype(real[column]):
            decimals = recorded_decimals(real[column])
            if decimals is not None:
                out[column] = out[column].round(decimals)
    return out


def anonymeter_audit(
    synthetic: pd.DataFrame,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    schema: Schema,
    settings: AnonymeterSettings | None = None,
) -> list[Risk]:
    """Singling out (univariate, multivariate), linkability and inference risks with 95% CIs."""
    settings = settings or AnonymeterSettings()
    columns = [c.name for c in schema.columns]
    features = [c.name for c in schema.columns if c.role is ColumnRole.FEATURE]
    unknown = [
        c for c in (*(settings.secrets or ()), *sum(settings.linkability_columns or ((), ()), ())) if c not in columns
    ]
    if unknown:
        raise ValueError(f"anonymeter settings name columns not in the schema: {unknown}; use {columns}")
    ori, syn, control = (_prepare(f, columns) for f in (train, synthetic, holdout))
    syn = at_recorded_precision(syn, pd.concat([ori, control], ignore_index=True))
    n_attacks = max(1, min(settings.n_attacks, len(control), len(ori)))
    n_inference = max(1, min(settings.n_attacks, len(ori)))  # control capped inside anonymeter
    risks: list[Risk] = []

    for mode in ("univariate", "multivariate"):
        evaluator = SinglingOutEvaluator(
            ori=ori, syn=syn, control=control, n_attacks=n_attacks, n_cols=settings.singling_out_columns,
            max_attempts=settings.max_attempts, seed=settings.seed,
        )  # fmt: skip
        evaluator.evaluate(mode=mode)
        risks.append(_risk(f"singling-out-{mode}", evaluator))

    left, right = settings.linkability_columns or (
        tuple(features[: len(features) // 2]),
        tuple(features[len(features) // 2 :]),
    )
    linkability = LinkabilityEvaluator(
        ori=ori, syn=syn, control=control, n_attacks=n_attacks,
        aux_cols=([_safe(c) for c in left], [_safe(c) for c in right]), n_neighbors=1,
    )  # fmt: skip
    with faiss_linkability_neighbours():
        linkability.evaluate(n_jobs=1)
    risks.append(_risk("linkability", linkability, columns=[list(left), list(right)]))

    event = [c.name for c in schema.columns if c.role is ColumnRole.EVENT]
    kinds = {c.name: c.kind for c in schema.columns}
    for secret in settings.secrets or tuple(event):
        # A numeric secret is guessed by regression (success = close enough, anonymeter's rule);
        # as a classification, success would need an exact value and the risk would read ~0.
        numeric = kinds[secret] in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER)
        aux = [_safe(c) for c in columns if c != secret]
        inference = InferenceEvaluator(
            ori=ori, syn=syn, control=control, aux_cols=aux, secret=_safe(secret), n_attacks=n_inference,
            regression=numeric, inference_model=FaissInferencePredictor(syn, aux, _safe(secret)),
        )  # fmt: skip
        inference.evaluate(n_jobs=1)
        risks.append(_risk("inference", inference, secret=secret, regression=numeric))
    return risks
