"""Settings sweep for federated DP quality, in one process (issue 3's open quality targets).

The same sites (``fedsynth.client.site.Site``: split, ledger, DP plan, Opacus DP-SGD round) and
the same weighted FedAvg as a Flower run, without Ray, so a setting costs seconds instead of a
simulation start-up. Scored as ``benchmarks.federated_quality`` does: ``n_pooled_train`` rows
from the global model alone, Cox TSTR vs TRTR (pooled real train) on each site's holdout.

    OMP_NUM_THREADS=1 python -m benchmarks.federated_sweep '{"label": "head", "model": {"survival_head": true}}'

The JSON gives ``label``, optional ``datasets``/``seeds``/``rounds``, and ``training``,
``privacy`` and ``model`` overrides (site config sections and MCMConfig fields).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedsynth.client.config import SiteConfig
from fedsynth.client.site import Site
from fedsynth.data.datasets import load_dataset
from fedsynth.evaluation.utility import utility_report
from fedsynth.model.mcm import MCM
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS
from fedsynth.server.simulation import partition


def federated_sites(  # type: ignore[no-untyped-def]
    frame: pd.DataFrame, schema, seed: int, root: Path, training=None, privacy=None
) -> list[Site]:
    """The three IID sites of the quality benchmark (epsilon 4, 5 local epochs, batch 64), under ``root``."""
    training = {"local_epochs": 5, "batch_size": 64, **(training or {}), "split_seed": seed}
    privacy = {"target_epsilon": 4.0, **(privacy or {})}
    return [
        Site(
            SiteConfig.from_dict({"site": {"name": f"site-{i}"}, "privacy": privacy, "training": training}),
            schema,
            root / f"site-{i}",
            part,
        )
        for i, part in enumerate(partition(frame, 3, "iid", seed))
    ]


def run(dataset: str, seed: int, rounds: int = 5, training=None, privacy=None, model=None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    config = FEDERATED_MODEL_DEFAULTS.model_copy(update={**(model or {}), "seed": seed})
    frame, schema = load_dataset(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        sites = federated_sites(frame, schema, seed, Path(tmp), training, privacy)
        global_model = MCM(config).build(schema)
        state = {k: v.clone() for k, v in global_model.network_.state_dict().items()}
        started = time.time()
        for server_round in range(1, rounds + 1):
            results = [
                s.train_round(state, config, run_id="sweep", server_round=server_round, planned_rounds=rounds)
                for s in sites
            ]
            total = sum(r.num_examples for r in results)
            state = {k: sum(r.state_dict[k] * r.num_examples for r in results) / total for k in state}
        seconds = time.time() - started
        global_model.network_.load_state_dict(state)
        pooled = pd.concat([s.train for s in sites], ignore_index=True)
        synthetic = global_model.sample(len(pooled), seed=seed + 1)
        reports = [utility_report(pooled, s.holdout, synthetic, schema) for s in sites]
        noise = sites[0].plan("sweep", rounds).noise_multiplier
    hazard_ratios = reports[0].hazard_ratios.round(4).reset_index(names="covariate").to_dict("records")
    tstr = float(np.mean([r.cindex_tstr for r in reports]))
    trtr = float(np.mean([r.cindex_trtr for r in reports]))
    return {"seed": seed, "tstr": tstr, "trtr": trtr, "gap": tstr - trtr, "hr_in_ci": reports[0].hr_in_ci_fraction,
            "mean_ks": reports[0].mean_ks, "noise_multiplier": noise, "seconds": seconds,
            "hazard_ratios": hazard_ratios}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    spec = json.loads(sys.argv[1])
    label = spec.pop("label")
    seeds, datasets = spec.pop("seeds", [0, 1, 2]), spec.pop("datasets", ["actg320", "flchain"])
    for dataset in datasets:
        runs = [run(dataset, seed, **spec) for seed in seeds]
        mean = {k: round(float(np.mean([r[k] for r in runs])), 3) for k in ("tstr", "trtr", "gap", "hr_in_ci")}
        line = {"label": label, "dataset": dataset, "settings": spec, "mean": mean, "runs": runs}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
