"""Re-score kept federated runs with the sampling code as it is now (no retraining).

    OMP_NUM_THREADS=1 python -m benchmarks.rescore_runs /tmp/runs/whas500-* --bundled-schema \
        --out benchmarks/results/rescore.json

Runs come from ``benchmarks.federated_quality --keep DIR``. Each run's global model samples the
pooled training size (seed = the run's seed + 1, as the protocol) and is scored like
:func:`fedsynth.server.simulation_score.score_simulated_run`, with the per-column KS/TVD kept.
``--bundled-schema``: sample under today's bundled schema of the dataset (e.g. a ``step`` declared
since the run was trained); the weights and the DP tables are the run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.machine import machine_info
from fedsynth.data.datasets import load_dataset
from fedsynth.evaluation.fidelity import marginal_distances
from fedsynth.evaluation.utility import utility_report
from fedsynth.model.mcm import MCM
from fedsynth.server.simulation_score import site_tables


def rescore(run_dir: Path, seed: int, bundled_schema: bool, uncalibrated: bool = False) -> dict[str, Any]:
    model = MCM.load(run_dir / "model")
    if uncalibrated:
        model.calibrate_to(None)
    if bundled_schema:
        _, schema = load_dataset(model.schema_.name)
        model.schema_ = schema
        if model.calibration_ is not None:
            spec = dataclasses.replace(model.calibration_.spec, schema=schema)
            model.calibration_ = dataclasses.replace(model.calibration_, spec=spec)
    sites = site_tables(run_dir)
    train = pd.concat([t for _, t, _ in sites], ignore_index=True)
    synthetic = model.sample(len(train), seed=seed)
    distances = marginal_distances(train, synthetic, model.schema_)
    ks = {k: round(v["value"], 4) for k, v in distances.items() if v["statistic"] == "ks"}
    tvd = {k: round(v["value"], 4) for k, v in distances.items() if v["statistic"] == "tv"}
    reports = [utility_report(train, holdout, synthetic, model.schema_) for _, _, holdout in sites]
    return {
        "run": run_dir.name,
        "numeric_mean_ks": float(np.mean(list(ks.values()))),
        "discrete_mean_tvd": float(np.mean(list(tvd.values()))) if tvd else float("nan"),
        "worst_ks": max(ks.values()),
        "worst_ks_column": max(ks, key=ks.__getitem__),
        "gap": float(np.mean([r.cindex_tstr - r.cindex_trtr for r in reports])),
        "hr_in_ci_fraction": reports[0].hr_in_ci_fraction,
        "ks": ks,
        "tvd": tvd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--bundled-schema", action="store_true")
    parser.add_argument("--uncalibrated", action="store_true", help="sample the model without its DP tables")
    parser.add_argument("--draws", type=int, default=1, help="samples per run (seeds: the run's seed + 1, + 2, ...)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for run_dir in args.runs:
        dataset, seed = run_dir.name.rsplit("-", 1)
        for draw in range(1, args.draws + 1):
            result = rescore(run_dir, int(seed) + draw, args.bundled_schema, args.uncalibrated)
            by_dataset.setdefault(dataset, []).append(result)
            print(json.dumps({k: v for k, v in result.items() if k not in ("ks", "tvd")}), flush=True)
    summary = {
        dataset: {
            key: float(np.mean([r[key] for r in runs]))
            for key in ("numeric_mean_ks", "discrete_mean_tvd", "worst_ks", "gap", "hr_in_ci_fraction")
        }
        | {"worst_ks_max": max(r["worst_ks"] for r in runs), "runs": runs}
        for dataset, runs in by_dataset.items()
    }
    for dataset, s in summary.items():
        print(dataset, {k: round(v, 3) for k, v in s.items() if k != "runs"})
    if args.out:
        document = {
            "command": " ".join(["python -m benchmarks.rescore_runs", *sys.argv[1:]]),
            "machine": machine_info(),
            "results": summary,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
