"""Conditional augmentation's effect on stratified calibration (issue 5; seed 000's use case).

For each dataset and seed: 50/50 train/holdout split; MCM fitted on the training rows (CLI
defaults, non-DP: seed 000's local setting); every binary-covariate level rarer than
``--max-share`` (default 40%) of the training rows topped up with ``--ratio`` (default 1) times
as many synthetic rows of that level, drawn conditionally from the model alone
(``fedsynth.evaluation.augmentation``). Cox fitted on real rows only (before) and on
real + conditional rows (after); both scored on the real holdout at a clinical horizon:
overall ICI, mean ICI over every estimable binary subgroup, the same over the augmented
(rare) subgroups only, the worst-group gap (max - min subgroup ICI), and Harrell's C.
Lower ICI is better. Reported whether it helps or not.

    OMP_NUM_THREADS=1 python -m benchmarks.augmentation --out benchmarks/results/augmentation.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.machine import machine_info
from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.augmentation import conditional_augmentation
from fedsynth.evaluation.calibration import calibration, stratified_calibration
from fedsynth.evaluation.utility import cindex_on, design_matrix, estimable_covariates, fit_cox
from fedsynth.model.mcm import MCM

# A clinical horizon per dataset, in its time unit (days): one year after the heart attack
# (WHAS500), three years after surgery (GBSG2), 300 days of the trial (ACTG320).
HORIZONS = {"whas500": 365.0, "gbsg2": 1095.0, "actg320": 300.0}


def _scores(model: Any, holdout: Any, schema: Any, horizon: float, rare: list[str]) -> dict[str, Any]:
    overall = calibration(model, holdout, schema, horizon)
    groups = stratified_calibration(model, holdout, schema, horizon)
    rare_icis = [g.ici for name, g in groups.groups.items() if name in rare]
    return {
        "overall_ici": overall.ici,
        "subgroup_ici": {name: g.ici for name, g in groups.groups.items()},
        "not_estimable": sorted(groups.not_estimable),
        "mean_subgroup_ici": groups.mean_ici,
        "mean_rare_subgroup_ici": float(np.mean(rare_icis)) if rare_icis else math.nan,
        "worst_group_gap": groups.worst_group_gap,
        "harrell_c": cindex_on(model, holdout, schema),
    }


def run(dataset: str, seed: int, max_share: float, ratio: float) -> dict[str, Any]:
    frame, schema = load_dataset(dataset)
    train, holdout = train_holdout_split(frame, 0.5, seed)
    started = time.time()
    model = MCM(seed=seed).fit(train, schema)
    extra, drawn = conditional_augmentation(
        train, schema, lambda n, c, s: model.sample(n, c, seed=s), max_share=max_share, ratio=ratio, seed=seed + 1
    )
    covariates, _ = estimable_covariates(design_matrix(train, schema))
    rare = [name.replace('"', "") for name in drawn]
    horizon = HORIZONS[dataset]
    before = _scores(fit_cox(train, schema, covariates=covariates), holdout, schema, horizon, rare)
    augmented = fit_cox(pd.concat([train, extra], ignore_index=True), schema, covariates=covariates)
    after = _scores(augmented, holdout, schema, horizon, rare)
    return {
        "dataset": dataset,
        "seed": seed,
        "horizon": horizon,
        "n_train": len(train),
        "rows_per_subgroup": drawn,
        "before": before,
        "after": after,
        "seconds": round(time.time() - started, 1),
    }


SUMMARY_KEYS = ("overall_ici", "mean_subgroup_ici", "mean_rare_subgroup_ici", "worst_group_gap", "harrell_c")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(HORIZONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-share", type=float, default=0.4, help="a level rarer than this share is augmented")
    parser.add_argument("--ratio", type=float, default=1.0, help="synthetic rows per real row of the subgroup")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs, summary = [], {}
    for dataset in args.datasets:
        dataset_runs = [run(dataset, seed, args.max_share, args.ratio) for seed in args.seeds]
        runs += dataset_runs
        summary[dataset] = {
            key: {when: float(np.nanmean([r[when][key] for r in dataset_runs])) for when in ("before", "after")}
            for key in SUMMARY_KEYS
        }
        for values in summary[dataset].values():
            change = (values["after"] - values["before"]) / values["before"] if values["before"] else math.nan
            values["relative_change"] = change
        s = summary[dataset]
        print(
            f"{dataset}: overall ICI {s['overall_ici']['before']:.4f} -> {s['overall_ici']['after']:.4f}, "
            f"mean subgroup ICI {s['mean_subgroup_ici']['before']:.4f} -> {s['mean_subgroup_ici']['after']:.4f}, "
            f"rare subgroups {s['mean_rare_subgroup_ici']['before']:.4f} -> "
            f"{s['mean_rare_subgroup_ici']['after']:.4f}, C {s['harrell_c']['before']:.4f} -> "
            f"{s['harrell_c']['after']:.4f}",
            flush=True,
        )
    document = {
        "command": " ".join(["OMP_NUM_THREADS=1 python -m benchmarks.augmentation", *sys.argv[1:]]),
        "protocol": __doc__.strip().split("\n\n")[1],
        "machine": machine_info(),
        "settings": {"max_share": args.max_share, "ratio": args.ratio, "seeds": args.seeds},
        "summary": summary,
        "runs": runs,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
