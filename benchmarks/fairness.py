"""The fairness option (issue 24, seed 003) measured: the non-DP MCM with and without
``fairness_weight`` on bundled datasets with a sensitive column, the same 50/50 split, n_train
rows drawn from each model alone, and the subgroup fairness figures of
:mod:`fedsynth.evaluation.fairness` on the real holdout: per-level C-index of a Cox model trained
on the synthetic rows (TSTR) and on real + synthetic rows (augmented), calibration-in-the-large at
the median follow-up, event rates, and each figure's gap (max - min over the levels), next to the
overall C-indices, i.e. the option's cost.

    OMP_NUM_THREADS=1 python -m benchmarks.fairness --cases whas500:gender actg320:sex flchain:sex \\
        --seeds 0 1 2 --weights 0 1 --out benchmarks/results/fairness.json

``--max-steps`` caps the optimiser steps of a fit (the MCM's ``max_auto_steps``, 10,000 by default)
so the whole run fits in about 10 minutes on one core; WHAS500 trains its default 1,000 epochs
under the cap of 4,000. One TSTR C-index moves by about 0.03 between samples of one model
(benchmarks/README.md): read the means over seeds and the paired differences, not one row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import write_record
from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.fairness import FIGURES, subgroup_fairness
from fedsynth.model.mcm import MCM

OVERALL = ("cindex_trtr", "cindex_tstr", "cindex_augmented")


def run(dataset: str, column: str, seed: int, weight: float, max_steps: int) -> dict:
    frame, schema = load_dataset(dataset)
    train, holdout = train_holdout_split(frame, 0.5, seed)
    model = MCM(seed=seed, max_auto_steps=max_steps, fairness_column=column, fairness_weight=weight)
    started = time.perf_counter()
    model.fit(train, schema)
    fit_seconds = time.perf_counter() - started
    synthetic = model.sample(len(train), seed=seed + 1000)
    report = subgroup_fairness(train, holdout, synthetic, schema, column)
    return {
        "dataset": dataset,
        "column": column,
        "seed": seed,
        "fairness_weight": weight,
        "n_train": len(train),
        "epochs": model.training_info_["epochs"],
        "fit_seconds": round(fit_seconds, 2),
        **report.to_dict(),
    }


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return round(float(np.mean(finite)), 4) if finite else None


def summarise(rows: list[dict]) -> dict:
    """Per case and weight: mean overall C-indices and gaps over seeds, and per case the mean
    paired change (each weight's seed minus the same seed without the option)."""
    out: dict[str, dict] = {}
    for case in dict.fromkeys(f"{r['dataset']}:{r['column']}" for r in rows):
        mine = [r for r in rows if f"{r['dataset']}:{r['column']}" == case]
        weights = sorted({r["fairness_weight"] for r in mine})
        entry: dict[str, dict] = {}
        for weight in weights:
            some = [r for r in mine if r["fairness_weight"] == weight]
            entry[f"weight {weight:g}"] = {
                **{key: _mean([r["overall"][key] for r in some]) for key in OVERALL},
                **{f"gap {key}": _mean([r["gaps"][key] for r in some]) for key in FIGURES},
                "seeds": len(some),
            }
        base = {r["seed"]: r for r in mine if r["fairness_weight"] == 0}
        for weight in (w for w in weights if w > 0):
            pairs = [(r, base[r["seed"]]) for r in mine if r["fairness_weight"] == weight and r["seed"] in base]
            entry[f"weight {weight:g} - weight 0"] = {
                **{key: _mean([_diff(r["overall"][key], b["overall"][key]) for r, b in pairs]) for key in OVERALL},
                **{f"gap {key}": _mean([_diff(r["gaps"][key], b["gaps"][key]) for r, b in pairs]) for key in FIGURES},
                "pairs": len(pairs),
            }
        out[case] = entry
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["whas500:gender", "actg320:sex", "flchain:sex"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 1.0])
    parser.add_argument("--max-steps", type=int, default=4000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for case in args.cases:
        dataset, column = case.split(":")
        for seed in args.seeds:
            for weight in args.weights:
                row = run(dataset, column, seed, weight, args.max_steps)
                rows.append(row)
                gaps = row["gaps"]
                print(
                    f"{case} seed {seed} weight {weight:g}: C TRTR {row['overall']['cindex_trtr']:.4f} "
                    f"TSTR {row['overall']['cindex_tstr']:.4f} aug {row['overall']['cindex_augmented']:.4f} | gaps "
                    + " ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in gaps.items())
                    + f" | fit {row['fit_seconds']}s",
                    flush=True,
                )
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    if args.out:
        write_record(args.out, "benchmarks.fairness", summary=summary, rows=rows)


if __name__ == "__main__":
    main()
