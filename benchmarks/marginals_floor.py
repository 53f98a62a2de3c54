"""What a perfect generator reads under the fidelity protocol: two disjoint random halves of each
bundled dataset compared with ``marginal_distances`` (KS numeric, TVD discrete), per split.

    OMP_NUM_THREADS=1 python -m benchmarks.marginals_floor --splits 5 --out benchmarks/results/marginals_floor.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.machine import write_record
from fedsynth.data.datasets import load_dataset
from fedsynth.evaluation.fidelity import marginal_distances

DATASETS = ("whas500", "gbsg2", "actg320", "flchain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {}
    for dataset in DATASETS:
        frame, schema = load_dataset(dataset)
        runs = []
        for split in range(args.splits):
            order = np.random.default_rng(split).permutation(len(frame))
            half = len(frame) // 2
            distances = marginal_distances(frame.iloc[order[:half]], frame.iloc[order[half:]], schema)
            ks = [d["value"] for d in distances.values() if d["statistic"] == "ks"]
            tvd = [d["value"] for d in distances.values() if d["statistic"] == "tv"]
            runs.append({"mean_ks": float(np.mean(ks)), "mean_tvd": float(np.mean(tvd)), "worst_ks": max(ks)})
        results[dataset] = {
            "rows_per_half": len(frame) // 2,
            **{k: float(np.mean([r[k] for r in runs])) for k in runs[0]},
        }
        print(dataset, results[dataset], flush=True)
    if args.out:
        write_record(args.out, "benchmarks.marginals_floor", results)


if __name__ == "__main__":
    main()
