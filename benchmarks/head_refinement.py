"""Would refining the hazard head after DP-SGD with a few DP Newton steps pay? (Issue 21, a diagnostic.)

A diagnostic before building, next to ``benchmarks/head_dp_newton.py``. The same sites and
DP-SGD rounds as ``benchmarks/federated_sweep.py`` (Opacus, the sites' plans, FedAvg, one
process). Two arms per seed:

* ``sgd``: DP-SGD at the whole per-site epsilon (the federated default, uncalibrated samples);
* ``refined``: DP-SGD at ``(1 - share)`` of it, then ``steps`` Gaussian releases per site
  spending the rest. Each release is the site's sum of per-record gradients of the head's
  likelihood, with respect to its covariate effects and levels at the current global head,
  clipped to ``clip``. The coordinator takes a Newton step with the Hessian of the same
  likelihood on the global model's own sample of the pooled size, at the current head: a
  function of DP outputs alone.

The split between the arms' budgets is by basic composition (epsilon adds), which over-counts:
the refined arm is if anything under-budgeted. The samples are the model's alone, uncalibrated,
and the pooled training size. Scored by the protocol's HR-in-CI and TSTR - TRTR C-index (each
site's holdout), at 1x and 5x the pooled size.

    OMP_NUM_THREADS=1 python -m benchmarks.head_refinement --dataset flchain --seeds 0 1 2 --share 0.3 --steps 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from opacus.accountants.utils import get_noise_multiplier
from torch.func import functional_call, grad, hessian, vmap

from benchmarks.federated_sweep import federated_sites
from benchmarks.head_dp_limit import write_result
from benchmarks.head_dp_newton import clip_rows, positive_definite
from fedsynth.data.datasets import load_dataset
from fedsynth.evaluation.utility import utility_report
from fedsynth.model.loss import survival_hazard_nll
from fedsynth.model.mcm import MCM
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS


def train(dataset: str, seed: int, epsilon: float, rounds: int, root: Path) -> tuple[MCM, list, pd.DataFrame]:
    """The federated DP-SGD model at ``epsilon`` per site, its sites and the pooled training rows."""
    frame, schema = load_dataset(dataset)
    sites = federated_sites(frame, schema, seed, root, privacy={"target_epsilon": epsilon})
    model = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"seed": seed})).build(schema)
    state = {k: v.clone() for k, v in model.network_.state_dict().items()}
    config = model.config
    for server_round in range(1, rounds + 1):
        results = [s.train_round(state, config, run_id="refine", server_round=server_round, planned_rounds=rounds)
                   for s in sites]  # fmt: skip
        total = sum(r.num_examples for r in results)
        state = {k: sum(r.state_dict[k] * r.num_examples for r in results) / total for k in state}
    model.network_.load_state_dict(state)
    return model, sites, pd.concat([s.train for s in sites], ignore_index=True)


def score(model: MCM, sites: list, pooled: pd.DataFrame, seed: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for multiple in (1, 5):
        synthetic = model.sample(len(pooled) * multiple, seed=seed + 1)
        reports = [utility_report(pooled, s.holdout, synthetic, model.schema_) for s in sites]
        out[f"hr_in_ci_{multiple}x"] = reports[0].hr_in_ci_fraction
        out[f"gap_{multiple}x"] = float(np.mean([r.cindex_tstr - r.cindex_trtr for r in reports]))
    return out


def refine(model: MCM, sites: list, n_pooled: int, epsilon: float, steps: int, clip: float, seed: int) -> None:
    """``steps`` DP gradient releases per site at ``epsilon`` in all, each a model-Hessian Newton step."""
    network = model.network_
    head, layout = network.survival_head, network.layout
    with torch.no_grad():
        centre = network.marginal_encoding()
    live = network.covariate_input.bool()
    select = torch.eye(len(live))[:, live]  # (width, d)
    fixed = {name: p.detach().clone() for name, p in head.named_parameters()}
    masked = fixed["effects.weight"] * (~live).float()  # outcome positions: kept (their inputs are 0)
    d = int(live.sum())

    def unpack(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        weight = masked + theta[: 2 * d].view(2, d) @ select.T
        return dict(fixed, **{"effects.weight": weight, "effects.bias": theta[2 * d :]})

    def nll(theta: torch.Tensor, row: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        inputs = ((row - centre) * network.covariate_input).unsqueeze(0)
        logits = functional_call(head, unpack(theta), (inputs,))
        return survival_hazard_nll(layout, logits, code.unsqueeze(0))[0]

    theta = torch.cat([(fixed["effects.weight"] @ select).flatten(), fixed["effects.bias"]])
    rows = [(layout.encode_codes(c), c) for c in (model.codes_tensor(s.train) for s in sites)]
    sigmas = [
        get_noise_multiplier(target_epsilon=epsilon, target_delta=s.plan("refine-releases", 1).target_delta,
                             sample_rate=1.0, steps=steps, accountant="rdp")
        for s in sites
    ]  # fmt: skip
    noise = torch.Generator().manual_seed(seed)
    for step in range(steps):
        total = torch.zeros_like(theta)
        for (x, codes), sigma in zip(rows, sigmas, strict=True):
            per_record = vmap(grad(nll), (None, 0, 0))(theta, x, codes)
            total += clip_rows(per_record, clip).sum(0) + torch.randn(len(theta), generator=noise) * sigma * clip
        with torch.no_grad():  # the model's own rows at the current head (post-processing of DP weights)
            for name, value in unpack(theta).items():
                dict(head.named_parameters())[name].copy_(value)
        synthetic = model.codes_tensor(model.sample(n_pooled, seed=seed + 100 + step))
        h = vmap(hessian(nll), (None, 0, 0))(theta, layout.encode_codes(synthetic), synthetic).sum(0)
        theta = theta - torch.linalg.solve(positive_definite(h, 1.0), total)
    with torch.no_grad():
        for name, value in unpack(theta).items():
            dict(head.named_parameters())[name].copy_(value)


def run(dataset: str, seed: int, rounds: int, share: float, steps: int, clip: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        model, sites, pooled = train(dataset, seed, 4.0, rounds, Path(tmp) / "sgd")
        result: dict[str, Any] = {"seed": seed, **{f"sgd_{k}": v for k, v in score(model, sites, pooled, seed).items()}}
        model, sites, pooled = train(dataset, seed, 4.0 * (1.0 - share), rounds, Path(tmp) / "refined")
        result.update({f"before_{k}": v for k, v in score(model, sites, pooled, seed).items()})
        refine(model, sites, len(pooled), 4.0 * share, steps, clip, seed)
        result.update({f"refined_{k}": v for k, v in score(model, sites, pooled, seed).items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="flchain")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--share", type=float, default=0.3, help="share of each site's epsilon for the releases")
    parser.add_argument("--steps", type=int, default=3, help="Gaussian releases per site (Newton steps)")
    parser.add_argument("--clip", type=float, default=2.0, help="per-record gradient clip of a release")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        runs.append(run(args.dataset, seed, args.rounds, args.share, args.steps, args.clip))
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in runs[-1].items()}), flush=True)
    summary = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0] if k != "seed"}
    print(json.dumps(summary, indent=1))
    if args.out:
        write_result(args.out, "benchmarks.head_refinement", __doc__.strip().split("\n\n", 2)[1], summary, runs)


if __name__ == "__main__":
    main()
