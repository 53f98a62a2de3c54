"""Would a DP Gaussian copula of the covariates give back their dependence? (issue 21)

    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/research/2026-12-05-copula.py RUN_DIR ... \
        --sigmas 0 3 6 --out benchmarks/results/copula_feasibility.json

RUN_DIR: kept runs of ``benchmarks.federated_quality --keep``. For each, the run's global model
samples the pooled training size (seed 1, calibrated as released), then:

* ``released``: that sample, scored as the protocol does;
* ``copula sigma=S``: its ordinal covariates' values reordered so that their normal scores follow
  a Gaussian copula whose correlation matrix was measured on the sites' training rows the way a
  site would release it (normal scores by rank, each record's score vector clipped to squared
  norm CLIP_FACTOR x d, the sum of outer products plus Gaussian noise of std S x that bound per
  entry at each of the 3 sites, summed, projected to the nearest correlation matrix), then the
  outcome drawn again from the model's survival head given the new covariates.

Each column keeps its values (its DP marginal), only which row holds which changes. Optimistic
in one way: a site's normal scores come from its own ranks, where a release would take them from
the DP marginal's CDF; the noise is the release's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from fedsynth.evaluation.fidelity import correlation_difference, correlation_matrices, marginal_distances
from fedsynth.evaluation.utility import utility_report
from fedsynth.model.mcm import MCM
from fedsynth.server.simulation_score import site_tables

CLIP_FACTOR = 2.0


def normal_scores(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Per column: Phi^-1(rank / (n + 1)), ties broken at random."""
    n = len(frame)
    scores = np.empty(frame.shape)
    for j, column in enumerate(frame.columns):
        values = frame[column].to_numpy(float)
        order = np.lexsort((rng.random(n), values))
        ranks = np.empty(n)
        ranks[order] = np.arange(1, n + 1)
        scores[:, j] = norm.ppf(ranks / (n + 1))
    return scores


def noisy_site_sum(scores: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    d = scores.shape[1]
    bound = CLIP_FACTOR * d  # squared norm of one record's score vector after clipping
    norms = (scores**2).sum(axis=1)
    clipped = scores * np.sqrt(np.minimum(1.0, bound / norms))[:, None]
    total = clipped.T @ clipped
    noise = np.triu(rng.normal(0.0, sigma * bound, (d, d)))
    return total + noise + np.triu(noise, 1).T


def nearest_correlation(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    fixed = vectors @ np.diag(np.maximum(values, 1e-3)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    return fixed / np.outer(scale, scale)


def coded(frame: pd.DataFrame, schema, columns: list[str]) -> pd.DataFrame:
    """Numeric columns as they are, a binary one as the index of its label in the schema."""
    out = {}
    for name in columns:
        column = schema.column(name)
        if column.is_numeric:
            out[name] = frame[name].astype(float)
        else:
            out[name] = frame[name].map({label: i for i, label in enumerate(column.labels)}).astype(float)
    return pd.DataFrame(out, index=frame.index)


def impose(sample: pd.DataFrame, columns: list[str], correlation: np.ndarray, rng: np.random.Generator,
           schema) -> pd.DataFrame:  # fmt: skip
    latent = rng.multivariate_normal(np.zeros(len(columns)), correlation, size=len(sample))
    out = sample.copy()
    codes = coded(sample, schema, columns)
    for j, column in enumerate(columns):
        values = sample[column].to_numpy()
        present = codes[column].notna().to_numpy()  # a missing cell stays where the model put it
        kept = values[present][np.argsort(codes[column].to_numpy()[present], kind="stable")]
        reordered = values.copy()
        reordered[present] = kept[np.argsort(np.argsort(latent[present, j]))]
        out[column] = reordered
    return out


def _filled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.fillna(frame.median())


def score(pooled: pd.DataFrame, tables, synthetic: pd.DataFrame, schema) -> dict:
    reports = [utility_report(pooled, holdout, synthetic, schema) for _, _, holdout in tables]
    distances = marginal_distances(pooled, synthetic, schema)
    ks = [d["value"] for d in distances.values() if d["statistic"] == "ks"]
    gap = correlation_difference(correlation_matrices(pooled, synthetic, schema))
    return {
        "hr_in_ci_fraction": reports[0].hr_in_ci_fraction,
        "cindex_gap": float(np.mean([r.cindex_tstr - r.cindex_trtr for r in reports])),
        "numeric_mean_ks": float(np.mean(ks)),
        "correlation_gap_max": gap["max_abs"],
        "correlation_gap_mean": gap["mean_abs"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 3.0, 6.0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {}
    for run in args.runs:
        model = MCM.load(run / "model")
        schema = model.schema_
        tables = site_tables(run)
        pooled = pd.concat([train for _, train, _ in tables], ignore_index=True)
        synthetic = model.sample(len(pooled), seed=1)
        # Ordinal covariates only: numeric, binary, and categoricals kept as the model drew them.
        columns = [c.name for c in schema.columns
                   if c.name in schema.covariates and (c.is_numeric or len(c.labels) == 2)]  # fmt: skip
        entry = {"released": score(pooled, tables, synthetic, schema), "columns": columns}
        sampler = model._sampler(len(pooled))
        for sigma in args.sigmas:
            rng = np.random.default_rng(0)
            total = sum(
                noisy_site_sum(normal_scores(_filled(coded(train, schema, columns)), rng), sigma, rng)
                for _, train, _ in tables
            )
            correlation = nearest_correlation(total / len(pooled))
            reordered = impose(synthetic, columns, correlation, rng, schema)
            redrawn = sampler.redraw_outcome(reordered, seed=2)
            entry[f"copula sigma={sigma:g}"] = score(pooled, tables, redrawn, schema)
        results[run.name] = entry
        print(run.name, json.dumps(entry, indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"command": "python docs/research/2026-12-05-copula.py " + " ".join(
            str(r) for r in args.runs) + f" --sigmas {' '.join(map(str, args.sigmas))}", "results": results},
            indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
