"""Calibrated sampling on WHAS500: quality before/after, candidate multiples, and speed (issue 21).

    OMP_NUM_THREADS=1 python -m benchmarks.marginal_calibration --marginal-epsilon 0.4 0.8 2 \
        --out benchmarks/results/marginal_calibration.json

A deliberately poor model (MCM fitted for ``--epochs`` epochs: near-flat marginals, as DP-SGD
gives) samples candidates; 3 IID sites each release noisy tables at the noise multiplier that
``--marginal-epsilon`` buys alone at n = 130 (one Gaussian step, Opacus RDP); their sum is
calibrated. Scored on the real holdout's protocol of ``benchmarks/quality.py``. With
``--federated DIR`` the model is instead the DP federated one (3 IID sites at epsilon 4, trained
into DIR once) and the sites' own splits are used. Speed: calibrate 100,000 rows from 500,000
uniform candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from benchmarks.machine import machine_info
from fedsynth.client.rdp import rdp_epsilon
from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.data.transforms import Transformer
from fedsynth.evaluation.fidelity import marginal_distances
from fedsynth.evaluation.utility import utility_report
from fedsynth.marginals.calibration import calibrate
from fedsynth.marginals.tables import MarginalSpec, add_gaussian_noise, count_tables
from fedsynth.model.mcm import MCM

RELATIONS = [False]  # set once from the command line


def noise_for(epsilon: float, n_site: int = 130) -> float:
    delta = n_site**-1.1
    return float(brentq(lambda s: rdp_epsilon([(s, 1.0, 1)], delta) - epsilon, 0.2, 200.0))


def score(train, holdout, synthetic, schema) -> dict:
    d = marginal_distances(train, synthetic, schema)
    ks = [v["value"] for v in d.values() if v["statistic"] == "ks"]
    tv = [v["value"] for v in d.values() if v["statistic"] == "tv"]
    report = utility_report(train, holdout, synthetic, schema)
    return {
        "mean_ks": float(np.mean(ks)),
        "mean_tvd": float(np.mean(tv)),
        "worst_ks": float(max(ks)),
        "cindex_tstr": report.cindex_tstr,
        "cindex_trtr": report.cindex_trtr,
        "hr_in_ci_fraction": report.hr_in_ci_fraction,
    }


def score_calibrated(model, train, holdout, tables, spec, multiples, seed, schema) -> dict:
    """Score the model's own sample, then samples calibrated to ``tables`` from k x n candidates."""
    n = len(train)
    out = {"before": score(train, holdout, model.sample(n, seed=seed + 1000), schema)}
    for k in multiples:
        candidates = model.sample(k * n, seed=seed + 1000)
        calibrated = calibrate(candidates, tables, spec, n, seed, relations=RELATIONS[0])
        out[f"x{k}"] = score(train, holdout, calibrated, schema)
    return out


def run(
    seed: int, epochs: int, sigma: float, multiples: list[int], numeric_bins: int, time_bins: int, selection: str
) -> dict:
    frame, schema = load_dataset("whas500")
    train, holdout = train_holdout_split(frame, 0.5, seed)
    spec = MarginalSpec.from_schema(schema, numeric_bins=numeric_bins, time_bins=time_bins, selection=selection)
    rng = np.random.default_rng(seed)
    sites = np.array_split(rng.permutation(len(train)), 3)
    noisy = [add_gaussian_noise(count_tables(train.iloc[s], spec), sigma, spec, rng) for s in sites]
    summed = {name: sum(t[name] for t in noisy) for name in noisy[0]}
    model = MCM(seed=seed, epochs=epochs).fit(train, schema)
    return score_calibrated(model, train, holdout, summed, spec, multiples, seed, schema)


def federated_model(dataset: str, seed: int, root: Path):
    """A DP federated model (3 IID sites, epsilon 4, the benchmarks' federated defaults) and its
    sites' (train, holdout), reused from ``root`` when already trained."""
    from fedsynth.model.mcm import MCM as Model
    from fedsynth.server.config import FederationConfig
    from fedsynth.server.simulation import simulate
    from fedsynth.server.simulation_score import site_tables

    run_dir = root / f"{dataset}-{seed}"
    if not (run_dir / "model").exists():
        simulate(FederationConfig.from_dict({
            "federation": {"rounds": 5, "min_sites": 3, "run_dir": str(run_dir)},
            "simulation": {"dataset": dataset, "sites": 3, "seed": seed},
            "site": {"privacy": {"target_epsilon": 4.0},
                     "training": {"local_epochs": 5, "batch_size": 64, "split_seed": seed}},
            "model": {"seed": seed},
        }))  # fmt: skip
    return Model.load(run_dir / "model"), [(train, holdout) for _, train, holdout in site_tables(run_dir)]


def run_federated(seed: int, sigma: float, multiples: list[int], spec_args: dict, root: Path) -> dict:
    model, sites = federated_model("whas500", seed, root)
    schema = model.schema_
    spec = MarginalSpec.from_schema(schema, **spec_args)
    rng = np.random.default_rng(seed)
    noisy = [add_gaussian_noise(count_tables(train, spec), sigma, spec, rng) for train, _ in sites]
    summed = {name: sum(t[name] for t in noisy) for name in noisy[0]}
    train = pd.concat([t for t, _ in sites], ignore_index=True)
    holdout = pd.concat([h for _, h in sites], ignore_index=True)
    return score_calibrated(model, train, holdout, summed, spec, multiples, seed, schema)


def speed() -> float:
    _, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema)
    rng = np.random.default_rng(0)
    frame, _ = load_dataset("whas500")
    tables = count_tables(frame, spec)
    codes = np.column_stack(
        [rng.uniform(size=500_000) if c.is_numeric else rng.integers(0, len(c.labels), 500_000) for c in schema.columns]
    )
    candidates = Transformer(schema).from_codes(codes)
    started = time.perf_counter()
    calibrate(candidates, tables, spec, 100_000, 0)
    return 100_000 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--marginal-epsilon", nargs="+", type=float, default=[0.8])
    parser.add_argument("--multiples", nargs="+", type=int, default=[3, 5, 10])
    parser.add_argument("--numeric-bins", type=int, default=16)
    parser.add_argument("--time-bins", type=int, default=8)
    parser.add_argument("--selection", default="compact", choices=["all", "compact"])
    parser.add_argument("--relations", action="store_true", help="calibrate with relations=True")
    parser.add_argument("--federated", type=Path, help="folder of DP federated runs (trained if missing)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    RELATIONS[0] = args.relations
    results = {}
    for eps in args.marginal_epsilon:
        sigma = noise_for(eps)
        if args.federated:
            spec_args = {"numeric_bins": args.numeric_bins, "time_bins": args.time_bins, "selection": args.selection}
            runs = [run_federated(s, sigma, args.multiples, spec_args, args.federated) for s in args.seeds]
        else:
            runs = [
                run(s, args.epochs, sigma, args.multiples, args.numeric_bins, args.time_bins, args.selection)
                for s in args.seeds
            ]
        results[str(eps)] = {"noise_multiplier": sigma, "runs": runs}
        for key in runs[0]:
            mean = {m: float(np.mean([r[key][m] for r in runs])) for m in runs[0][key]}
            figures = " ".join(f"{m} {v:.3f}" for m, v in mean.items())
            print(f"eps {eps} sigma {sigma:.2f} {key:6s} {figures}", flush=True)
    rows_per_second = speed()
    print(f"calibrate: {rows_per_second:,.0f} output rows/s (100,000 from 500,000 candidates)")
    if args.out:
        threads = os.environ.get("OMP_NUM_THREADS", "")
        command = f"OMP_NUM_THREADS={threads} python -m benchmarks.marginal_calibration " + (
            f"--seeds {' '.join(map(str, args.seeds))} --marginal-epsilon {' '.join(map(str, args.marginal_epsilon))} "
            f"--multiples {' '.join(map(str, args.multiples))} --epochs {args.epochs} --selection {args.selection} "
            f"--numeric-bins {args.numeric_bins} --time-bins {args.time_bins}"
            + (f" --federated {args.federated}" if args.federated else "")
            + (" --relations" if args.relations else "")
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": command, "args": {k: str(v) for k, v in vars(args).items()},
                                        "machine": machine_info(), "results": results,
                                        "calibrate_rows_per_second": rows_per_second}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
