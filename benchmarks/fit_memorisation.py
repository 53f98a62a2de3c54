"""Memorisation of the non-DP generator along training (issue 21): where to stop.

For one dataset and seed (the quality protocol's 50/50 split), fit MCM with a validation
split and no early stop, snapshot the weights at chosen epochs and at the best validation
loss, and score each snapshot: mean KS vs train, DCR share, distance-MIA AUC (n_train rows
sampled from the model alone). The validation loss of every epoch comes with it, so the
early-stopping rule can be read off the same run.

    OMP_NUM_THREADS=1 python -m benchmarks.fit_memorisation --dataset whas500 --seed 0 \\
        --checkpoints 50 100 200 400 700 1000 --out /tmp/whas500_0.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.data.validation import validate_frame
from fedsynth.evaluation.utility import marginal_ks
from fedsynth.model.mcm import MCM
from fedsynth.model.training import train_plain, validation_loss, validation_split
from fedsynth.privacy.membership import distance_attack
from fedsynth.privacy.nearest_neighbour import nearest_neighbour_audit


def score(model: MCM, train, holdout, schema, seed: int) -> dict:  # type: ignore[no-untyped-def]
    synthetic = model.sample(len(train), seed=seed + 1000)
    ks = marginal_ks(train, synthetic, schema)
    holdout = holdout.iloc[: len(train)]  # an odd row count leaves the holdout one row larger
    return {
        "mean_ks": float(np.mean(list(ks.values()))),
        "dcr_share": nearest_neighbour_audit(synthetic, train, holdout, schema, seed=seed).dcr_share,
        "mia_auc": distance_attack(synthetic, train, holdout, schema, seed=seed).auc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="whas500")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[100, 200, 400, 1000])
    parser.add_argument("--set", nargs="*", default=[], help="MCMConfig overrides, e.g. n_bins=32")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    overrides.setdefault("validation_fraction", 0.2)
    frame, schema = load_dataset(args.dataset)
    train, holdout = train_holdout_split(frame, 0.5, args.seed)
    model = MCM(seed=args.seed, **overrides).build(schema)
    config, network = model.config, model.network_
    codes = model.codes_tensor(validate_frame(train, schema)[0])
    generator = torch.Generator().manual_seed(config.seed)
    fitted, held_out = validation_split(len(codes), config.validation_fraction, generator)
    snapshots: dict[int, dict] = {}
    valid: list[float] = []

    def on_epoch(epoch: int, total: int, loss: float) -> None:
        valid.append(validation_loss(network, codes[held_out], config))
        if epoch in args.checkpoints or epoch == total:
            snapshots[epoch] = copy.deepcopy(network.state_dict())

    started = time.perf_counter()
    history, stopping = train_plain(
        network,
        codes[fitted],
        config.model_copy(update={"early_stopping_patience": None}),
        generator,
        on_epoch,
        validation=codes[held_out],
    )
    seconds = time.perf_counter() - started
    rows = []
    for label, state in [*sorted(snapshots.items()), ("best", None)]:
        if state is None:
            stopping.restore(network)
        else:
            network.load_state_dict(state)
        row = {"epoch": stopping.best_epoch if state is None else label, "label": str(label)}
        row.update(score(model, train, holdout, schema, args.seed))
        row["validation_loss"] = valid[row["epoch"] - 1]
        rows.append(row)
        print(
            f"{args.dataset} seed {args.seed} {label!s:>5} epoch {row['epoch']}: KS {row['mean_ks']:.3f} "
            f"DCR {row['dcr_share']:.3f} MIA {row['mia_auc']:.3f} val {row['validation_loss']:.4f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "dataset": args.dataset,
                    "seed": args.seed,
                    "overrides": overrides,
                    "fit_seconds": seconds,
                    "train_loss": history,
                    "validation_loss": valid,
                    "snapshots": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
