"""Speed benchmark: MCM fit time per epoch and model-only sampling throughput.

    python -m benchmarks.speed --out benchmarks/results/speed.json

Targets (foundation issue): sampling >= 100k rows/s on the WHAS500 schema on the 2-core
reference machine. The headline is the best of several repeats (the machine is a shared VM
whose speed drifts by +-15% within minutes); the median and every repeat are recorded too.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.machine import machine_info
from fedsynth.data.datasets import load_dataset
from fedsynth.marginals.tables import MarginalSpec, count_tables
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.mcm import MCM
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS


def timings(repeats: int, func) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="whas500")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    frame, schema = load_dataset(args.dataset)
    started = time.perf_counter()
    model = MCM(epochs=args.epochs, seed=0).fit(frame, schema)
    epoch_seconds = (time.perf_counter() - started) / args.epochs

    results: dict[str, object] = {
        "command": "python -m benchmarks.speed " + f"--dataset {args.dataset} --rows {args.rows}",
        "machine": machine_info(),
        "dataset": args.dataset,
        "n_rows_fit": len(frame),
        "batch_size": model.config.batch_size,
        "fit_seconds_per_epoch": round(epoch_seconds, 4),
        "sampling": {},
    }
    cases = {"unconditional": [], "chf=1 and 60<=age<=80": ["chf=1", "60<=age<=80"]}
    if args.dataset != "whas500":
        cases = {"unconditional": []}
    # The DP release path: a model with the federated defaults (a DP run's architecture, with its
    # survival head) alone, then calibrated to marginal tables. The tables' values do not change
    # the work, so the real counts stand in for the DP ones.
    spec = MarginalSpec.from_schema(schema)
    federated = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"epochs": args.epochs, "seed": 0})).fit(frame, schema)
    calibrated = copy.deepcopy(federated).calibrate_to(MarginalTarget(spec, count_tables(frame, spec)))
    runs = [(label, model, c) for label, c in cases.items()]
    runs += [(f"federated defaults, {label}", federated, c) for label, c in cases.items()]
    runs += [(f"federated defaults calibrated, {label}", calibrated, c) for label, c in cases.items()]
    for label, generator, conditions in runs:
        generator.sample(1000, conditions, seed=0)  # warm-up
        times = timings(args.repeats, lambda g=generator, c=conditions: g.sample(args.rows, c, seed=1))
        results["sampling"][label] = {
            "rows": args.rows,
            "seconds": round(min(times), 3),
            "rows_per_second": round(args.rows / min(times)),
            "rows_per_second_median": round(args.rows / statistics.median(times)),
            "rows_per_second_all": [round(args.rows / t) for t in times],
        }
    results["torch_threads"] = torch.get_num_threads()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
