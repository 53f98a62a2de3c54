"""MCM vs Med-VAE vs CK4Gen, all non-DP with their defaults, on one dataset: the same 50/50 split,
n_train rows drawn from each model alone, mean KS of numeric columns vs train and the real
holdout's C-index of a Cox model trained on the synthetic rows (TSTR) vs on the real ones (TRTR),
and memorisation as benchmarks/quality.py measures it (exact copies, DCR share, distance-MIA AUC).

    OMP_NUM_THREADS=1 python -m benchmarks.generators --dataset whas500 --seeds 0 1 2 \\
        --out benchmarks/results/generators.json

One TSTR C-index moves by about 0.03 between samples of one model (benchmarks/README.md), so
read the per-generator means over seeds, not one row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import write_record
from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.utility import utility_report
from fedsynth.model.ck4gen import CK4Gen
from fedsynth.model.generator import Generator
from fedsynth.model.mcm import MCM
from fedsynth.model.medvae import MedVAE
from fedsynth.privacy.copies import exact_copy_count
from fedsynth.privacy.membership import distance_attack
from fedsynth.privacy.nearest_neighbour import nearest_neighbour_audit

GENERATORS: dict[str, type] = {"mcm": MCM, "medvae": MedVAE, "ck4gen": CK4Gen}


def run(dataset: str, seed: int, name: str) -> dict:
    frame, schema = load_dataset(dataset)
    train, holdout = train_holdout_split(frame, 0.5, seed)
    model: Generator = GENERATORS[name](seed=seed)
    started = time.perf_counter()
    model.fit(train, schema)
    fit_seconds = time.perf_counter() - started
    synthetic = model.sample(len(train), seed=seed + 1000)
    report = utility_report(train, holdout, synthetic, schema)
    audit_holdout = holdout.iloc[: len(train)]  # the audits compare equal-size train and holdout sets
    return {
        "generator": name,
        "dataset": dataset,
        "seed": seed,
        "n_train": len(train),
        "fit_seconds": round(fit_seconds, 2),
        "mean_ks_vs_train": report.mean_ks,
        "hr_in_ci_fraction": report.hr_in_ci_fraction,
        "cindex_trtr": report.cindex_trtr,
        "cindex_tstr": report.cindex_tstr,
        "exact_copies": exact_copy_count(synthetic, train),
        "dcr_share": nearest_neighbour_audit(synthetic, train, audit_holdout, schema, seed=seed).dcr_share,
        "mia_auc": distance_attack(synthetic, train, audit_holdout, schema, seed=seed).auc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="whas500")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--generators", nargs="+", choices=list(GENERATORS), default=list(GENERATORS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        for name in args.generators:
            row = run(args.dataset, seed, name)
            rows.append(row)
            print(
                f"{name:7s} {args.dataset} seed {seed}: KS {row['mean_ks_vs_train']:.3f} "
                f"HR-in-CI {row['hr_in_ci_fraction']:.2f} C TRTR {row['cindex_trtr']:.4f} "
                f"TSTR {row['cindex_tstr']:.4f} DCR {row['dcr_share']:.3f} MIA {row['mia_auc']:.3f} "
                f"fit {row['fit_seconds']}s",
                flush=True,
            )
    keys = (
        "mean_ks_vs_train",
        "hr_in_ci_fraction",
        "cindex_trtr",
        "cindex_tstr",
        "dcr_share",
        "mia_auc",
        "exact_copies",
        "fit_seconds",
    )
    means = {
        name: {key: round(float(np.mean([r[key] for r in rows if r["generator"] == name])), 4) for key in keys}
        for name in args.generators
    }
    for name, mean in means.items():
        print(f"{name:7s} MEAN: " + " ".join(f"{key} {value}" for key, value in mean.items()))
    if args.out:
        write_record(args.out, "benchmarks.generators", means=means, rows=rows)


if __name__ == "__main__":
    main()
