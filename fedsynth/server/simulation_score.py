"""Score a *simulated* federation's global model against its virtual sites' real holdouts.

Only for Flower's simulation engine, where every virtual site's data sits on this machine
(the demo and the quality benchmarks). In a real deployment the coordinator never holds a
real row: evaluation runs at the sites and returns aggregates (``fedsynth.evaluation``'s
site-side protocol). The numbers here are the same ones, computed in one place.

Protocol (issue 3's DP quality check): ``n`` rows sampled from the global model alone, where
``n`` is the pooled training size; Cox models trained on the pooled real training rows (TRTR)
and on the synthetic rows (TSTR); Harrell's C-index of each on *each site's* real holdout;
synthetic log-HRs inside the pooled real model's 95% CI.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.client.app import open_site
from fedsynth.data.schema import Schema
from fedsynth.evaluation.fidelity import correlation_difference, correlation_matrices, marginal_distances
from fedsynth.evaluation.utility import utility_report
from fedsynth.model.generators import load_generator


@dataclass(frozen=True)
class SiteScore:
    site: str
    n_holdout: int
    cindex_trtr: float
    cindex_tstr: float


@dataclass(frozen=True)
class SimulatedRunScore:
    n_synthetic: int
    differentially_private: bool
    mean_ks: float
    hr_in_ci_fraction: float
    hr_sign_agreement: float
    excluded_covariates: dict[str, str]
    sites: list[SiteScore]
    # The issue-21 protocol's marginal figures vs the pooled training rows: mean KS of numeric
    # columns, mean TVD of binary/categorical ones, and the worst numeric column's KS.
    numeric_mean_ks: float = math.nan
    discrete_mean_tvd: float = math.nan
    worst_ks: float = math.nan
    worst_ks_column: str | None = None
    # Largest and mean |Pearson r real - r synthetic| over pairs of the design's columns (covariates,
    # time, event): the dependence between columns that marginals do not show.
    correlation_gap_max: float = math.nan
    correlation_gap_mean: float = math.nan

    @property
    def cindex_trtr(self) -> float:
        return sum(s.cindex_trtr for s in self.sites) / len(self.sites)

    @property
    def cindex_tstr(self) -> float:
        return sum(s.cindex_tstr for s in self.sites) / len(self.sites)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cindex_trtr_mean": self.cindex_trtr, "cindex_tstr_mean": self.cindex_tstr}


def site_tables(run_dir: Path) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(name, train, holdout) of every virtual site of a simulation run, from the sites' own split."""
    tables = []
    for site_dir in sorted((Path(run_dir) / "sites").glob("site-*"), key=lambda p: int(p.name.split("-")[1])):
        site = open_site(site_dir)
        tables.append((site.config.name, site.train, site.holdout))
    if not tables:
        raise FileNotFoundError(f"{run_dir}/sites holds no site-* directories: is this a simulation run?")
    return tables


def score_simulated_run(
    run_dir: Path, seed: int = 0, n_synthetic: int | None = None
) -> tuple[SimulatedRunScore, pd.DataFrame]:
    """The global model's sample quality against the virtual sites; returns (score, the sample).

    ``n_synthetic`` rows are sampled (default: the pooled training size, the protocol's). More
    rows measure the model rather than one sample of its size: a benchmark's question only.
    """
    from fedsynth.server.evidence import check_dp_claim

    model = load_generator(Path(run_dir) / "model")
    dp = check_dp_claim(Path(run_dir) / "model", model)  # the run's records decide, not the model's flag
    tables = site_tables(run_dir)
    n_pooled = sum(len(train) for _, train, _ in tables)
    synthetic = model.sample(n_pooled if n_synthetic is None else n_synthetic, seed=seed)
    return score_sample(tables, synthetic, model.schema_, dp.differentially_private), synthetic


def score_sample(
    tables: list[tuple[str, pd.DataFrame, pd.DataFrame]],
    synthetic: pd.DataFrame,
    schema: Schema,
    differentially_private: bool,
) -> SimulatedRunScore:
    """The protocol's figures of any ``synthetic`` table against the sites' (name, train, holdout)."""
    pooled_train = pd.concat([train for _, train, _ in tables], ignore_index=True)
    sites, first = [], None
    for name, _, holdout in tables:
        report = utility_report(pooled_train, holdout, synthetic, schema)
        first = first or report
        sites.append(SiteScore(name, len(holdout), report.cindex_trtr, report.cindex_tstr))
    assert first is not None
    distances = marginal_distances(pooled_train, synthetic, schema)
    ks = {name: d["value"] for name, d in distances.items() if d["statistic"] == "ks"}
    tvd = [d["value"] for d in distances.values() if d["statistic"] == "tv"]
    worst = max(ks, key=ks.__getitem__) if ks else None
    correlation = correlation_difference(correlation_matrices(pooled_train, synthetic, schema))
    return SimulatedRunScore(
        n_synthetic=len(synthetic),
        differentially_private=differentially_private,
        mean_ks=first.mean_ks,
        hr_in_ci_fraction=first.hr_in_ci_fraction,
        hr_sign_agreement=first.hr_sign_agreement,
        excluded_covariates=first.excluded_covariates,
        sites=sites,
        numeric_mean_ks=float(np.mean(list(ks.values()))) if ks else math.nan,
        discrete_mean_tvd=float(np.mean(tvd)) if tvd else math.nan,
        worst_ks=ks[worst] if worst else math.nan,
        worst_ks_column=worst,
        correlation_gap_max=correlation["max_abs"],
        correlation_gap_mean=correlation["mean_abs"],
    )
