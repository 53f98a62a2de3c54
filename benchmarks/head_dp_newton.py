"""Can a one-shot DP Newton step fit the hazard head better than DP-SGD? (Issue 3, a diagnostic.)

A diagnostic, not a product path, next to ``benchmarks/head_dp_limit.py`` (same sites, splits,
covariates centred at the real pooled mean, and Harrell's C on each site's holdout). Each site
spends its whole budget (epsilon, delta) on one Gaussian release, composed by Opacus' RDP
accountant at sample rate 1 and one step: the sum over its training rows of each record's
gradient and Hessian of the head's discrete-time hazard likelihood with respect to the
effects, each record's gradient clipped to ``G`` and its Hessian to ``H`` (Frobenius), both
divided by their clip norm so that one noise multiplier (times sqrt(2): two parts) covers the
pair. The server adds the sites' releases, floors the Hessian's eigenvalues at ``floor`` (it
must be positive definite; a floor is a ridge) and takes the Newton step from zero effects.

Deliberately optimistic, so that a loss is the mechanism's and not the set-up's:

* the baseline hazards are fitted (with zero effects) on the pooled real rows, without DP;
* ``oracle`` rows use the exact pooled Hessian, with noise on the gradient alone (not DP:
  the Hessian is private): the most a noisy score vector can do in one step.

Scored next to Cox on the pooled real rows (TRTR, penalizer 0.01) and the same Newton step
without noise (``head_one_step``, the mechanism's ceiling); the DP-SGD head of the same seeds
is in ``results/head_dp_limit.json``. Each step's event effects are also scored against the
head's MLE on the pooled rows in the MLE's standard errors (``effects_inside_<label>``: share
within 1.96; ``effects_median_z_<label>``), as ``head_dp_limit`` does for DP-SGD.

    OMP_NUM_THREADS=1 python -m benchmarks.head_dp_newton --seeds 0 1 2 --clips 1:0 0.5:1
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
from benchmarks.head_dp_limit import EffectErrors, fit_mle, harrell, new_head, write_result
from fedsynth.data.datasets import load_dataset
from fedsynth.evaluation.utility import utility_report
from fedsynth.model.loss import survival_hazard_nll
from fedsynth.model.mcm import MCM
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS


def clip_rows(values: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each record's (first axis) values to Frobenius norm at most ``max_norm``."""
    norms = values.flatten(1).norm(dim=1).clamp_min(max_norm)
    return values * (max_norm / norms).view(-1, *[1] * (values.dim() - 1))


def positive_definite(matrix: torch.Tensor, floor: float) -> torch.Tensor:
    """The symmetric matrix with its eigenvalues floored at ``floor`` (a noisy Hessian is indefinite)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return vectors @ torch.diag(values.clamp_min(floor)) @ vectors.T


def run(
    dataset: str,
    seed: int,
    clips: list[tuple[float, float]],
    floor: float,
    model_runs: Path | None = None,
    iterations: tuple[int, ...] = (),
    standardise: bool = False,
) -> dict[str, Any]:
    """One seed: references, then one DP Newton step per (gradient clip, Hessian clip)."""
    with tempfile.TemporaryDirectory() as tmp:
        frame, schema = load_dataset(dataset)
        sites = federated_sites(frame, schema, seed, Path(tmp))
        model = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"seed": seed})).build(schema)
        layout, covariates = model.network_.layout, model.network_.covariate_input
        codes = [model.codes_tensor(s.train) for s in sites]
        centre = torch.cat([layout.encode_codes(c) for c in codes]).mean(0)
        x = [(layout.encode_codes(c) - centre) * covariates for c in codes]
        holdout_x = [(layout.encode_codes(model.codes_tensor(s.holdout)) - centre) * covariates for s in sites]
        if standardise:  # each covariate position in units of its pooled SD (the real one: optimistic)
            spread = torch.cat(x).std(0).where(covariates.bool(), torch.ones(())).clamp_min(1e-3)
            x, holdout_x = [v / spread for v in x], [v / spread for v in holdout_x]
        pooled = pd.concat([s.train for s in sites], ignore_index=True)
        result: dict[str, Any] = {"seed": seed}
        result["trtr"] = float(np.mean([utility_report(pooled, s.holdout, pooled, schema).cindex_trtr for s in sites]))

        head = new_head(layout.encoded_width, layout.n_bins)
        params = {name: p.detach().clone() for name, p in head.named_parameters()}
        # The effects of covariate positions (outcome positions are zeroed inputs: no gradient).
        live = covariates.bool().repeat(2)
        select = torch.eye(live.numel())[:, live]  # (all effects, live effects): zero-fills the rest

        def nll(baseline: torch.Tensor, effects: torch.Tensor, row: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
            weights = dict(params, **{"baseline.weight": baseline.view(-1, 1)})
            weights["effects.weight"] = (select @ effects).view(2, -1)
            logits = functional_call(head, weights, (row.unsqueeze(0),))
            return survival_hazard_nll(layout, logits, code.unsqueeze(0))[0]

        all_x, all_codes = torch.cat(x), torch.cat(codes)
        baseline = params["baseline.weight"].flatten()
        zero = torch.zeros(int(live.sum()))
        for _ in range(8):  # Newton on the baseline alone, effects at zero (non-private: see above)
            g = vmap(grad(nll, 0), (None, None, 0, 0))(baseline, zero, all_x, all_codes).sum(0)
            h = vmap(hessian(nll, 0), (None, None, 0, 0))(baseline, zero, all_x, all_codes).sum(0)
            baseline = baseline - torch.linalg.solve(h + 1e-6 * torch.eye(len(h)), g)

        def derivatives(site_x: torch.Tensor, site_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Per-record gradient (n, p) and Hessian (n, p, p) of the effects at zero."""
            g = vmap(grad(nll, 1), (None, None, 0, 0))(baseline, zero, site_x, site_codes)
            h = vmap(hessian(nll, 1), (None, None, 0, 0))(baseline, zero, site_x, site_codes)
            return g, h

        def score(effects: torch.Tensor) -> float:
            full = (select @ effects).view(2, -1)
            return harrell(sites, schema.time_column, schema.event_column, [(hx @ full[1]).numpy() for hx in holdout_x])

        per_site = [derivatives(sx, sc) for sx, sc in zip(x, codes, strict=True)]
        gradient = sum(g.sum(0) for g, _ in per_site)
        exact_hessian = sum(h.sum(0) for _, h in per_site)
        assert isinstance(gradient, torch.Tensor) and isinstance(exact_hessian, torch.Tensor)
        one_step = -torch.linalg.solve(exact_hessian + 1e-2 * torch.eye(len(zero)), gradient)
        result["head_one_step"] = score(one_step)
        errors = EffectErrors(fit_mle(layout, all_x, all_codes), layout, all_x, all_codes, covariates.bool())

        def record_errors(label: str, effects: torch.Tensor) -> None:
            inside, median = errors((select @ effects).view(2, -1)[1])
            result[f"effects_inside_{label}"], result[f"effects_median_z_{label}"] = inside, median

        record_errors("head_one_step", one_step)
        norms = torch.cat([g.norm(dim=1) for g, _ in per_site])
        result["gradient_norm_median"] = float(norms.median())
        # One release per site at its own (epsilon, delta): delta = 1/n^1.1 differs by site size.
        sigmas = [
            get_noise_multiplier(
                target_epsilon=plan.target_epsilon,
                target_delta=plan.target_delta,
                sample_rate=1.0,
                steps=1,
                accountant="rdp",
            )
            for plan in (s.plan("newton", 1) for s in sites)
        ]
        model_hessian = None
        if model_runs is not None:
            # The Hessian from a DP-trained global model's own calibrated sample of the pooled size
            # (covariates and times; a logistic hazard's Hessian does not depend on the event), at
            # the same baseline and centre: what a coordinator could compute at no privacy cost.
            trained = MCM.load(model_runs / f"{dataset}-{seed}" / "model")
            synthetic = trained.sample(len(all_x), seed=seed + 1)
            synthetic_codes = model.codes_tensor(synthetic)
            synthetic_x = (layout.encode_codes(synthetic_codes) - centre) * covariates
            model_hessian = vmap(hessian(nll, 1), (None, None, 0, 0))(baseline, zero, synthetic_x, synthetic_codes).sum(
                0
            )
        noise = torch.Generator().manual_seed(seed)
        for gradient_clip, hessian_clip in clips:
            oracle = hessian_clip == 0
            total_g, total_h = torch.zeros_like(zero), torch.zeros(len(zero), len(zero))
            for (g, h), sigma in zip(per_site, sigmas, strict=True):
                parts = 1.0 if oracle else 2**0.5  # the pair's sensitivity after dividing by the clips
                total_g += clip_rows(g, gradient_clip).sum(0)
                total_g += torch.randn(len(zero), generator=noise) * sigma * parts * gradient_clip
                if not oracle:
                    total_h += clip_rows(h, hessian_clip).sum(0)
                    total_h += torch.randn(len(zero), len(zero), generator=noise) * sigma * parts * hessian_clip
            hessian_used = exact_hessian if oracle else total_h
            step = -torch.linalg.solve(positive_definite(hessian_used, floor), total_g)
            label = "oracle_hessian" if oracle else f"dp_newton_h{hessian_clip:g}"
            result[f"{label}_g{gradient_clip:g}"] = score(step)
            record_errors(f"{label}_g{gradient_clip:g}", step)
            if oracle and model_hessian is not None:  # the same DP gradient, the model's Hessian
                step = -torch.linalg.solve(positive_definite(model_hessian, floor), total_g)
                result[f"model_hessian_g{gradient_clip:g}"] = score(step)
                record_errors(f"model_hessian_g{gradient_clip:g}", step)
        result["noise_multipliers_one_release"] = sigmas
        for steps in iterations if model_runs is not None else ():
            # K DP gradient releases per site (the budget split over them), each a Newton step from
            # the last with a Hessian at the current effects: the model's, or (reference) the exact one.
            plans = [s.plan("newton", 1) for s in sites]
            sigmas_k = [
                get_noise_multiplier(
                    target_epsilon=p.target_epsilon, target_delta=p.target_delta, sample_rate=1.0, steps=steps,
                    accountant="rdp",
                )
                for p in plans
            ]  # fmt: skip
            for gradient_clip in [g for g, h in clips if h == 0]:
                for source in ("model", "exact"):
                    effects = torch.zeros_like(zero)
                    for _ in range(steps):
                        total_g = torch.zeros_like(zero)
                        for site_x, site_codes, sigma in zip(x, codes, sigmas_k, strict=True):
                            g = vmap(grad(nll, 1), (None, None, 0, 0))(baseline, effects, site_x, site_codes)
                            total_g += clip_rows(g, gradient_clip).sum(0)
                            total_g += torch.randn(len(zero), generator=noise) * sigma * gradient_clip
                        rows_x, rows_codes = (synthetic_x, synthetic_codes) if source == "model" else (all_x, all_codes)
                        h = vmap(hessian(nll, 1), (None, None, 0, 0))(baseline, effects, rows_x, rows_codes).sum(0)
                        effects = effects - torch.linalg.solve(positive_definite(h, floor), total_g)
                    label = f"{source}_hessian_k{steps}_g{gradient_clip:g}"
                    result[label] = score(effects)
                    record_errors(label, effects)
    return result


def parse_clip(text: str) -> tuple[float, float]:
    gradient_clip, hessian_clip = (float(v) for v in text.split(":"))
    return gradient_clip, hessian_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="actg320")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--clips", nargs="+", type=parse_clip, default=[(1.0, 0.0)], help="G:H per setting; H = 0: exact Hessian"
    )
    parser.add_argument("--floor", type=float, default=10.0, help="eigenvalue floor of the summed Hessian")
    parser.add_argument(
        "--iterations", nargs="*", type=int, default=[], help="with --model-runs: K DP gradient steps (budget split)"
    )
    parser.add_argument(
        "--model-runs", type=Path, help="runs kept by federated_quality --keep: adds model_hessian rows (H = 0 clips)"
    )
    parser.add_argument("--standardise", action="store_true", help="covariates in units of their pooled SD")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        runs.append(
            run(args.dataset, seed, args.clips, args.floor, args.model_runs, tuple(args.iterations), args.standardise)
        )
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in runs[-1].items()}), flush=True)
    keys = [k for k in runs[0] if k not in ("seed", "noise_multipliers_one_release", "gradient_norm_median")]
    summary: dict[str, float] = {}
    for key in keys:
        gaps = np.array([r[key] - r["trtr"] for r in runs])
        summary[key] = round(float(np.mean([r[key] for r in runs])), 4)
        if key != "trtr" and not key.startswith("effects_"):
            summary[f"gap_{key}"] = round(float(gaps.mean()), 4)
            summary[f"gap_{key}_standard_error"] = round(float(gaps.std(ddof=1) / len(gaps) ** 0.5), 4)
    print(json.dumps(summary, indent=1))
    if args.out:
        protocol = __doc__.strip().split("\n\n", 1)[1].split("\n\n    OMP")[0]
        write_result(args.out, "benchmarks.head_dp_newton", protocol, summary, runs)


if __name__ == "__main__":
    main()
