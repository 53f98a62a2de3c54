"""Quality benchmark of model-only sampling (non-DP), as the foundation issue asks.

For each dataset and seed: 50/50 train/holdout split, fit MCM with the CLI defaults, draw
n_train rows from the model alone, then: mean KS of numeric columns vs train, share of Cox
log-HRs inside the real 95% CI, C-index on the real holdout of Cox trained on synthetic
(TSTR) vs trained on real (TRTR), exact copies of training rows, and the site audits'
memorisation measures: DCR share (``fedsynth.privacy.nearest_neighbour``: share of synthetic
rows closer to a training row than to a holdout row; 0.5 for a generator that does not
memorise) and the distance membership attack's AUC (``fedsynth.privacy.membership``).

    OMP_NUM_THREADS=1 python -m benchmarks.quality --seeds 0 1 2 --out benchmarks/results/quality.json

(one thread per process: the models are small, and results then do not depend on the
machine's core count).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import machine_info
from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.utility import utility_report
from fedsynth.model.mcm import MCM
from fedsynth.privacy.copies import exact_copy_count
from fedsynth.privacy.membership import distance_attack
from fedsynth.privacy.nearest_neighbour import nearest_neighbour_audit


def run(dataset: str, seed: int, overrides: dict) -> dict:
    frame, schema = load_dataset(dataset)
    train, holdout = train_holdout_split(frame, 0.5, seed)
    started = time.perf_counter()
    model = MCM(seed=seed, **overrides).fit(train, schema)
    fit_seconds = time.perf_counter() - started
    synthetic = model.sample(len(train), seed=seed + 1000)
    report = utility_report(train, holdout, synthetic, schema)
    ks_holdout = utility_report(holdout, train, synthetic, schema).mean_ks
    # The audits compare equal-size train and holdout sets: an odd row count leaves one extra.
    audit_holdout = holdout.iloc[: len(train)]
    return {
        "dataset": dataset,
        "seed": seed,
        "n_train": len(train),
        "fit_seconds": round(fit_seconds, 2),
        "mean_ks_vs_train": report.mean_ks,
        "mean_ks_vs_holdout": ks_holdout,
        "ks": report.ks,
        "hr_in_ci_fraction": report.hr_in_ci_fraction,
        "hr_sign_agreement": report.hr_sign_agreement,
        "cindex_trtr": report.cindex_trtr,
        "cindex_tstr": report.cindex_tstr,
        "exact_copies": exact_copy_count(synthetic, train),
        "dcr_share": nearest_neighbour_audit(synthetic, train, audit_holdout, schema, seed=seed).dcr_share,
        "mia_auc": distance_attack(synthetic, train, audit_holdout, schema, seed=seed).auc,
        "training": model.training_info_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["whas500", "gbsg2", "actg320"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="MCMConfig overrides, e.g. epochs=500")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            row = run(dataset, seed, overrides)
            rows.append(row)
            print(
                f"{dataset:8s} seed {seed}: KS {row['mean_ks_vs_train']:.3f} (holdout {row['mean_ks_vs_holdout']:.3f}) "
                f"HR-in-CI {row['hr_in_ci_fraction']:.2f} C TRTR {row['cindex_trtr']:.4f} "
                f"TSTR {row['cindex_tstr']:.4f} copies {row['exact_copies']} DCR {row['dcr_share']:.3f} "
                f"MIA {row['mia_auc']:.3f} fit {row['fit_seconds']}s",
                flush=True,
            )
    summary = {}
    for dataset in args.datasets:
        sub = [r for r in rows if r["dataset"] == dataset]
        summary[dataset] = {
            key: float(np.mean([r[key] for r in sub]))
            for key in (
                "mean_ks_vs_train",
                "mean_ks_vs_holdout",
                "hr_in_ci_fraction",
                "cindex_trtr",
                "cindex_tstr",
                "exact_copies",
                "dcr_share",
                "mia_auc",
                "fit_seconds",
            )
        }
        s = summary[dataset]
        print(
            f"{dataset:8s} MEAN: KS {s['mean_ks_vs_train']:.3f} HR-in-CI {s['hr_in_ci_fraction']:.2f} "
            f"C gap {s['cindex_trtr'] - s['cindex_tstr']:+.4f} copies {s['exact_copies']:.1f} "
            f"DCR {s['dcr_share']:.3f} MIA {s['mia_auc']:.3f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python -m benchmarks.quality "
                    + " ".join(
                        ["--datasets", *args.datasets, "--seeds", *map(str, args.seeds)]
                        + (["--set", *args.set] if args.set else [])
                    ),
                    "machine": machine_info(),
                    "overrides": overrides,
                    "runs": rows,
                    "summary": summary,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
