"""Clip-and-scale vs least-squares projection for making the summed noisy tables non-negative.

Same protocol as :mod:`benchmarks.marginals_noise` (3 IID sites, epsilon 4, each site's release
as in a run, summed, made consistent), once per way of making the 1-way margins and the
(time x event) joint non-negative; means over seeds of the released tables' distance to the real
pooled training tables. The DP noise is drawn from the OS (not seeded), so use many seeds.

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m benchmarks.marginals_nonnegative --seeds 16 \
        --out benchmarks/results/marginals_nonnegative.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.machine import write_record
from benchmarks.marginals_noise import DATASETS, one_run
from fedsynth.marginals import consistency

KEYS = ("mean_tvd_categorical", "mean_binned_ks_numeric", "worst_binned_ks")


def clip_and_scale(values: np.ndarray, total: float) -> np.ndarray:
    """The former rule: negative cells to 0, then every cell scaled to the total."""
    clipped = np.clip(values, 0.0, None)
    return clipped * (total / clipped.sum()) if clipped.sum() > 0 else np.full_like(clipped, total / clipped.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, rule in (("clip_and_scale", clip_and_scale), ("projection", consistency.nonnegative)):
        with mock.patch.object(consistency, "nonnegative", rule):
            for dataset in DATASETS:
                runs = [one_run(dataset, args.share, seed, 3, 4.0) for seed in range(args.seeds)]
                results.setdefault(name, {})[dataset] = {k: float(np.mean([r[k] for r in runs])) for k in KEYS}
                print(name, dataset, results[name][dataset], flush=True)
    if args.out:
        write_record(args.out, "benchmarks.marginals_nonnegative", results)


if __name__ == "__main__":
    main()
