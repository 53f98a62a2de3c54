"""How well can DP-SGD fit the hazard head alone? The ceiling of issue 3's ACTG320 C-index gap.

A diagnostic, not a product path. The federated generator's TSTR C-index follows its hazard
head's ranking (Cox on the samples recovers the head's effects), so this measures the head's
DP fit with nothing else in the way: the same sites and splits as a federation
(``fedsynth.client.site.Site``), the same DP plan per site (noise multiplier, sample rate,
steps, clip norm), Opacus' Poisson sampling, per-record clipping and Gaussian noise on
Adam, weighted FedAvg over the rounds, but only the ``HazardHead`` (no MCM network) and its
covariates centred at the *real* pooled mean (private: a diagnostic may use it; the
generator uses its own marginal mean, which a federated sweep found costs nothing).

Scored by Harrell's C on each site's real holdout (mean over sites) of:

* ``trtr``: lifelines Cox (penalizer 0.01, as in every TRTR/TSTR of this project) on the pooled
  real training rows: the acceptance target's reference;
* ``cox_unpenalised``: the same Cox fit without the penalizer;
* ``head_mle``: the head's own maximum-likelihood fit on the pooled real rows (no DP);
* ``head_dp``: the head trained with DP-SGD as above, once per ``--effects-lr`` multiplier.

and, because the C-index cannot tell fits apart on a large table (FLChain), by how far each fit's
event effects lie from the head's MLE in units of the MLE's standard error (from the pooled
Hessian of the event effects, the rest held at the MLE): ``effects_inside_<fit>``, the share of
covariate positions within 1.96 standard errors, and ``effects_median_z_<fit>``.

    OMP_NUM_THREADS=1 python -m benchmarks.head_dp_limit --seeds 0 1 2 --effects-lr 1 2

Unlike a site, whose sampling and noise use fresh OS randomness, this diagnostic draws both from
torch's global generator, which building the model seeds with the run's seed: a seed's result
is reproducible (the multipliers run one after another on the same stream, so they do not see
the same noise).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lifelines.utils import concordance_index
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.federated_sweep import federated_sites
from benchmarks.machine import machine_info
from fedsynth.client.site import Site
from fedsynth.data.datasets import load_dataset
from fedsynth.evaluation.utility import design_matrix, fit_cox, utility_report
from fedsynth.model.loss import survival_hazard_nll
from fedsynth.model.mcm import MCM
from fedsynth.model.network import HazardHead
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS


def new_head(width: int, n_bins: int) -> HazardHead:
    config = FEDERATED_MODEL_DEFAULTS
    return HazardHead(width, n_bins, config.survival_effect_scale, level=config.survival_level)


def fit_mle(layout, x: torch.Tensor, codes: torch.Tensor) -> HazardHead:  # type: ignore[no-untyped-def]
    """The head's maximum-likelihood fit on ``x`` (centred covariates) and ``codes`` (L-BFGS; no DP)."""
    mle = new_head(layout.encoded_width, layout.n_bins)
    lbfgs = torch.optim.LBFGS(list(mle.parameters()), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss = survival_hazard_nll(layout, mle(x), codes).mean()
        loss.backward()
        return loss

    lbfgs.step(closure)
    return mle


class EffectErrors:
    """How far a head's event effects lie from the MLE head's, in the MLE's standard errors."""

    def __init__(self, mle: HazardHead, layout, x: torch.Tensor, codes: torch.Tensor, live: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
        fixed = {name: p.detach() for name, p in mle.named_parameters()}

        def event_nll(event_weights: torch.Tensor) -> torch.Tensor:
            weights = dict(fixed, **{"effects.weight": torch.stack([fixed["effects.weight"][0], event_weights])})
            return survival_hazard_nll(layout, functional_call(mle, weights, (x,)), codes).sum()

        hessian = torch.autograd.functional.hessian(event_nll, fixed["effects.weight"][1])
        self.live = live
        self.mle = fixed["effects.weight"][1][live]
        self.se = torch.linalg.pinv(hessian[live][:, live]).diagonal().clamp_min(1e-12).sqrt()

    def __call__(self, event_weights: torch.Tensor) -> tuple[float, float]:
        """(share within 1.96 SE, median |z|) of ``event_weights`` (the effects' event row)."""
        z = ((event_weights.detach()[self.live] - self.mle) / self.se).abs()
        return float((z <= 1.96).float().mean()), float(z.median())


def dp_round(  # type: ignore[no-untyped-def]
    head: HazardHead,
    x: torch.Tensor,
    codes: torch.Tensor,
    layout,
    plan,
    lr: float,
    effects_lr: float,
    tail: float = 0.0,
) -> None:
    """One site round: ``plan.local_epochs`` epochs of Opacus DP-SGD on Adam, Adam restarted.

    ``tail`` > 0: the head sent is the plain mean of the iterates of the round's last ``tail``
    share of steps (Polyak-Ruppert tail averaging: post-processing, no privacy cost)."""
    module = GradSampleModule(head)
    groups = [
        {"params": [head.baseline.weight], "lr": lr},
        {"params": [p for p in head.effects.parameters()], "lr": lr * effects_lr},
    ]
    loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(x, codes), batch_size=plan.batch_size))
    optimizer = DPOptimizer(
        torch.optim.Adam(groups),
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=int(len(x) * loader.sample_rate),
        loss_reduction="mean",
    )
    total_steps = plan.local_epochs * len(loader)
    first_averaged = total_steps - max(1, round(tail * total_steps)) if tail > 0 else total_steps
    sums, averaged, step = [torch.zeros_like(p) for p in head.parameters()], 0, 0
    for _ in range(plan.local_epochs):
        for xb, cb in loader:
            optimizer.zero_grad(set_to_none=True)
            # Summed loss: exact per-record gradients (an empty Poisson batch gives zeros and a
            # noise-only step); the optimizer divides the noisy sum by the expected batch size.
            survival_hazard_nll(layout, module(xb), cb).sum().backward()
            optimizer.step()
            step += 1
            if step > first_averaged:
                averaged += 1
                for total, p in zip(sums, head.parameters(), strict=True):
                    total += p.detach()
    module._close()
    if averaged:
        with torch.no_grad():
            for total, p in zip(sums, head.parameters(), strict=True):
                p.copy_(total / averaged)


def harrell(sites: list[Site], time_col: str, event_col: str, risks: list[np.ndarray]) -> float:
    """Mean over sites of Harrell's C of ``risks`` (one array per site) on the site's holdout."""
    pairs = zip(sites, risks, strict=True)
    return float(np.mean([concordance_index(s.holdout[time_col], -r, s.holdout[event_col]) for s, r in pairs]))


def run(
    dataset: str, seed: int, rounds: int, effects_lrs: list[float], lr: float | None, tails: tuple[float, ...] = (0.0,)
) -> dict[str, Any]:
    """One seed: the sites' split, the references, then one DP fit per effects' multiplier."""
    with tempfile.TemporaryDirectory() as tmp:
        frame, schema = load_dataset(dataset)
        sites = federated_sites(frame, schema, seed, Path(tmp))
        lr = lr or sites[0].config.training.learning_rate  # what a site's DP rounds use (not MCMConfig's)
        model = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"seed": seed})).build(schema)
        layout, covariates = model.network_.layout, model.network_.covariate_input
        time_col, event_col = schema.time_column, schema.event_column
        codes = [model.codes_tensor(s.train) for s in sites]
        centre = torch.cat([layout.encode_codes(c) for c in codes]).mean(0)
        x = [(layout.encode_codes(c) - centre) * covariates for c in codes]
        holdout_x = [(layout.encode_codes(model.codes_tensor(s.holdout)) - centre) * covariates for s in sites]
        pooled = pd.concat([s.train for s in sites], ignore_index=True)
        result: dict[str, Any] = {"seed": seed}
        result["trtr"] = float(np.mean([utility_report(pooled, s.holdout, pooled, schema).cindex_trtr for s in sites]))
        cox = fit_cox(pooled, schema, penalizer=0.0)
        cox_risks = [cox.predict_log_partial_hazard(design_matrix(s.holdout, schema)).to_numpy() for s in sites]
        result["cox_unpenalised"] = harrell(sites, time_col, event_col, cox_risks)

        def event_risk(head: HazardHead) -> list[np.ndarray]:
            with torch.no_grad():
                return [head(hx)[:, -1].numpy() for hx in holdout_x]  # last event bin: monotone in the effect

        all_x, all_codes = torch.cat(x), torch.cat(codes)
        mle = fit_mle(layout, all_x, all_codes)
        result["head_mle"] = harrell(sites, time_col, event_col, event_risk(mle))
        errors = EffectErrors(mle, layout, all_x, all_codes, covariates.bool())
        plans = [s.plan("limit", rounds) for s in sites]
        for multiplier, tail in [(m, t) for m in effects_lrs for t in tails]:
            state = new_head(layout.encoded_width, layout.n_bins).state_dict()
            for _ in range(rounds):
                replies = []
                for site_x, site_codes, plan in zip(x, codes, plans, strict=True):
                    head = new_head(layout.encoded_width, layout.n_bins)
                    head.load_state_dict(state)
                    dp_round(head, site_x, site_codes, layout, plan, lr, multiplier, tail)
                    replies.append((head.state_dict(), len(site_x)))
                total = sum(n for _, n in replies)
                state = {k: sum(sd[k] * n for sd, n in replies) / total for k in state}
            head = new_head(layout.encoded_width, layout.n_bins)
            head.load_state_dict(state)
            label = f"head_dp_effects_lr_{multiplier:g}" + (f"_tail_{tail:g}" if tail else "")
            result[label] = harrell(sites, time_col, event_col, event_risk(head))
            result[f"effects_inside_{label}"], result[f"effects_median_z_{label}"] = errors(head.effects.weight[1])
        result["noise_multiplier"] = plans[0].noise_multiplier
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="actg320")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lr", type=float, help="Adam's rate (default: the site's training.learning_rate)")
    parser.add_argument("--effects-lr", nargs="+", type=float, default=[1.0], help="effects' learning-rate multipliers")
    parser.add_argument(
        "--tail-average",
        nargs="+",
        type=float,
        default=[0.0],
        help="shares of each round's last steps whose iterates a site averages (0: the last iterate)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    # Opacus' hooks on a module whose inputs need no gradient: harmless, once per step.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    runs = []
    for seed in args.seeds:
        runs.append(run(args.dataset, seed, args.rounds, args.effects_lr, args.lr, args.tail_average))
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in runs[-1].items()}), flush=True)
    keys = [k for k in runs[0] if k not in ("seed", "noise_multiplier")]
    summary = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in keys}
    summary.update(
        {f"gap_{k}": round(summary[k] - summary["trtr"], 4) for k in keys if k[:8] not in ("trtr", "effects_")}
    )
    print(json.dumps(summary, indent=1))
    if args.out:
        write_result(args.out, "benchmarks.head_dp_limit", __doc__.strip().split("\n\n", 2)[1], summary, runs)


def write_result(path: Path, module: str, protocol: str, summary: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """The recorded form of a head diagnostic: its command line, protocol, machine, summary, runs."""
    document = {
        "command": " ".join([f"python -m {module}", *sys.argv[1:]]),
        "protocol": protocol,
        "machine": machine_info(),
        "summary": summary,
        "runs": runs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
