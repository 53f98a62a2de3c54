"""Would refining the hazard head after DP-SGD with a few DP Newton steps pay? (Issue 21, a diagnostic.)

A diagnostic before building, next to ``benchmarks/head_dp_newton.py``. The same sites and
DP-SGD rounds as ``benchmarks/federated_sweep.py`` (Opacus, the sites' plans, FedAvg, one
process). Two arms per seed (more with ``--hessian``, below):

* ``sgd``: DP-SGD at the whole per-site epsilon (the federated default, uncalibrated samples);
* ``refined``: DP-SGD at ``(1 - share)`` of it, then ``steps`` Gaussian releases per site
  spending the rest. Each release is the site's sum of per-record gradients of the head's
  likelihood, with respect to its covariate effects and levels at the current global head,
  clipped to ``clip``. The coordinator takes a Newton step with the Hessian of the same
  likelihood on the global model's own sample of the pooled size, at the current head: a
  function of DP outputs alone.

``--hessian`` picks where the refined arm's Newton Hessian comes from; each source is its own
arm, all refining the same ``before`` model (DP-SGD at ``(1 - share)``) with the same gradient
noise and sample seeds, so they differ only in the Hessian's rows:

* ``model`` (default; keys ``refined_*``): the global model's own sample, as above;
* ``oracle`` (``refined_oracle_*``): the sites' pooled real training rows (not private: the
  ceiling of what a better Hessian could give);
* ``copula`` (``refined_copula_*``): the model's own sample with its ordinal covariates (numeric
  and binary) reordered among rows to a DP Gaussian copula measured on the sites' training rows
  (``docs/research/2026-12-05-copula.py``, noise sigma ``--copula-sigma``), then the outcome drawn
  again from the current head. The copula release's budget is not charged (a ceiling question);
* ``redrawn`` (``refined_redrawn_*``): the model's own sample with the outcome drawn again from
  the current head, covariates untouched (the control for ``copula``'s redraw).

``--effect-errors`` adds, for every arm, how far its event effects lie from the MLE of the same
head (same centring and encoding) on the pooled real training rows, in the MLE's marginal
standard errors: ``<arm>_effects_inside`` (share within 1.96) and ``<arm>_effects_median_z``.

``hessian_corr_gap_<source>`` (when a source other than ``model`` runs): the largest absolute
difference between the Pearson correlations of the ordinal covariates in the first step's
Hessian rows and in the pooled training rows.

The split between the arms' budgets is by basic composition (epsilon adds), which over-counts:
the refined arm is if anything under-budgeted. The samples are the model's alone, uncalibrated,
and the pooled training size. Scored by the protocol's HR-in-CI and TSTR - TRTR C-index (each
site's holdout), at 1x and 5x the pooled size.

    OMP_NUM_THREADS=1 python -m benchmarks.head_refinement --dataset flchain --seeds 0 1 2 --share 0.3 --steps 3
    OMP_NUM_THREADS=1 python -m benchmarks.head_refinement --dataset flchain --seeds 0 1 --hessian model oracle copula
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from collections.abc import Callable
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

HESSIAN_SOURCES = ("model", "oracle", "copula", "redrawn")
COPULA_SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "research" / "2026-12-05-copula.py"
_COPULA: list[Any] = []


def copula_module() -> Any:
    """``docs/research/2026-12-05-copula.py`` (normal scores, the noisy site sums, ``impose``)."""
    if not _COPULA:
        spec = importlib.util.spec_from_file_location("copula_2026_12_05", COPULA_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _COPULA.append(module)
    return _COPULA[0]


def ordinal_covariates(schema) -> list[str]:
    """The covariates the copula reorders: numeric and binary (categoricals as the model drew them)."""
    return [c.name for c in schema.columns
            if c.name in schema.covariates and (c.is_numeric or len(c.labels) == 2)]  # fmt: skip


def copula_correlation(schema, sites: list, sigma: float, seed: int) -> np.ndarray:
    """The copula script's DP correlation matrix of the ordinal covariates' normal scores."""
    copula, columns = copula_module(), ordinal_covariates(schema)
    rng = np.random.default_rng(seed)
    total = sum(
        copula.noisy_site_sum(copula.normal_scores(copula._filled(copula.coded(s.train, schema, columns)), rng),
                              sigma, rng)
        for s in sites
    )  # fmt: skip
    return copula.nearest_correlation(total / sum(len(s.train) for s in sites))


def correlation_gap(frame: pd.DataFrame, pooled: pd.DataFrame, schema) -> float:
    """Largest |Pearson r difference| between the ordinal covariates of ``frame`` and ``pooled``."""
    copula, columns = copula_module(), ordinal_covariates(schema)
    ours, real = copula.coded(frame, schema, columns).corr(), copula.coded(pooled, schema, columns).corr()
    return float(np.nanmax(np.abs(ours.to_numpy() - real.to_numpy())))


def hessian_rows(source: str, pooled: pd.DataFrame, correlation: np.ndarray | None,
                 seed: int) -> Callable[[MCM, int, int], pd.DataFrame]:  # fmt: skip
    """The rows whose Hessian (at the current head) a Newton step of ``source`` uses."""

    def rows(model: MCM, n: int, step: int) -> pd.DataFrame:
        if source == "oracle":
            return pooled
        sample = model.sample(n, seed=seed + 100 + step)  # the model arm's rows, the same seeds
        if source == "model":
            return sample
        if source == "copula":
            rng = np.random.default_rng(seed + 300 + step)
            sample = copula_module().impose(sample, ordinal_covariates(model.schema_), correlation, rng,
                                            model.schema_)  # fmt: skip
        return model._sampler(n).redraw_outcome(sample, seed=seed + 200 + step)

    return rows


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


def head_likelihood(model: MCM) -> tuple[torch.Tensor, Callable, Callable]:
    """The head's current parameters ``theta`` (covariate effects of both causes, then the levels),
    ``unpack(theta)`` (the head's parameters) and the per-record ``nll(theta, row, code)``."""
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
    return theta, unpack, nll


class EffectErrors:
    """How far a head's event effects lie from the MLE of the same head on ``reference`` (the
    pooled real training rows; no DP, a diagnostic), in the MLE's standard errors (the diagonal
    of the inverse of the whole Hessian: marginal, not conditional on the other parameters)."""

    def __init__(self, model: MCM, reference: pd.DataFrame, iterations: int = 30) -> None:
        theta, _, nll = head_likelihood(model)
        codes = model.codes_tensor(reference)
        x = model.network_.layout.encode_codes(codes)
        ridge = 1e-4 * torch.eye(len(theta))

        def loss(t: torch.Tensor) -> torch.Tensor:
            return vmap(nll, (None, 0, 0))(t, x, codes).sum()

        current = loss(theta)
        for _ in range(iterations):  # damped Newton from the model's head
            g = vmap(grad(nll), (None, 0, 0))(theta, x, codes).sum(0)
            h = vmap(hessian(nll), (None, 0, 0))(theta, x, codes).sum(0)
            step, scale = torch.linalg.solve(h + ridge, g), 1.0
            while scale > 1e-3 and loss(theta - scale * step) > current:
                scale /= 2
            theta, current = theta - scale * step, loss(theta - scale * step)
            if float((scale * step).abs().max()) < 1e-7:
                break
        h = vmap(hessian(nll), (None, 0, 0))(theta, x, codes).sum(0)
        self.d = (len(theta) - int(model.network_.survival_head.effects.bias.numel())) // 2
        self.mle = theta[self.d : 2 * self.d]
        self.se = torch.linalg.inv(h + ridge).diagonal()[self.d : 2 * self.d].clamp_min(1e-12).sqrt()

    def __call__(self, model: MCM) -> dict[str, float]:
        """Share of the event effects within 1.96 SE of the MLE's, and their median |z|."""
        z = ((head_likelihood(model)[0][self.d : 2 * self.d] - self.mle) / self.se).abs()
        return {"effects_inside": float((z <= 1.96).float().mean()), "effects_median_z": float(z.median())}


def refine(
    model: MCM,
    sites: list,
    n_pooled: int,
    epsilon: float,
    steps: int,
    clip: float,
    seed: int,
    rows_for_hessian: Callable[[MCM, int, int], pd.DataFrame] | None = None,
) -> list[pd.DataFrame]:
    """``steps`` DP gradient releases per site at ``epsilon`` in all, each a Newton step with the
    Hessian on ``rows_for_hessian(model, n_pooled, step)`` at the current head (default: the
    model's own sample). Returns the rows each step's Hessian was taken on."""
    network = model.network_
    head, layout = network.survival_head, network.layout
    theta, unpack, nll = head_likelihood(model)
    rows = [(layout.encode_codes(c), c) for c in (model.codes_tensor(s.train) for s in sites)]
    sigmas = [
        get_noise_multiplier(target_epsilon=epsilon, target_delta=s.plan("refine-releases", 1).target_delta,
                             sample_rate=1.0, steps=steps, accountant="rdp")
        for s in sites
    ]  # fmt: skip
    noise = torch.Generator().manual_seed(seed)
    used = []
    for step in range(steps):
        total = torch.zeros_like(theta)
        for (x, codes), sigma in zip(rows, sigmas, strict=True):
            per_record = vmap(grad(nll), (None, 0, 0))(theta, x, codes)
            total += clip_rows(per_record, clip).sum(0) + torch.randn(len(theta), generator=noise) * sigma * clip
        with torch.no_grad():  # the model's own rows at the current head (post-processing of DP weights)
            for name, value in unpack(theta).items():
                dict(head.named_parameters())[name].copy_(value)
        if rows_for_hessian is None:
            frame = model.sample(n_pooled, seed=seed + 100 + step)
        else:
            frame = rows_for_hessian(model, n_pooled, step)
        used.append(frame)
        synthetic = model.codes_tensor(frame)
        h = vmap(hessian(nll), (None, 0, 0))(theta, layout.encode_codes(synthetic), synthetic).sum(0)
        theta = theta - torch.linalg.solve(positive_definite(h, 1.0), total)
    with torch.no_grad():
        for name, value in unpack(theta).items():
            dict(head.named_parameters())[name].copy_(value)
    return used


def run(dataset: str, seed: int, rounds: int, share: float, steps: int, clip: float,
        hessians: tuple[str, ...] = ("model",), copula_sigma: float = 3.0,
        effect_errors: bool = False) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model, sites, pooled = train(dataset, seed, 4.0, rounds, Path(tmp) / "sgd")
        result: dict[str, Any] = {"seed": seed, **{f"sgd_{k}": v for k, v in score(model, sites, pooled, seed).items()}}
        if effect_errors:
            result.update({f"sgd_{k}": v for k, v in EffectErrors(model, pooled)(model).items()})
        model, sites, pooled = train(dataset, seed, 4.0 * (1.0 - share), rounds, Path(tmp) / "refined")
        result.update({f"before_{k}": v for k, v in score(model, sites, pooled, seed).items()})
        before = {k: v.clone() for k, v in model.network_.state_dict().items()}
        errors = EffectErrors(model, pooled) if effect_errors else None
        if errors is not None:
            result.update({f"before_{k}": v for k, v in errors(model).items()})
        correlation = copula_correlation(model.schema_, sites, copula_sigma, seed) if "copula" in hessians else None
        for source in hessians:  # each arm refines the same DP-SGD model, same gradient noise and sample seeds
            model.network_.load_state_dict(before)
            rows = None if source == "model" else hessian_rows(source, pooled, correlation, seed)
            used = refine(model, sites, len(pooled), 4.0 * share, steps, clip, seed, rows)
            prefix = "refined" if source == "model" else f"refined_{source}"
            result.update({f"{prefix}_{k}": v for k, v in score(model, sites, pooled, seed).items()})
            if errors is not None:
                result.update({f"{prefix}_{k}": v for k, v in errors(model).items()})
            if tuple(hessians) != ("model",):
                result[f"hessian_corr_gap_{source}"] = correlation_gap(used[0], pooled, model.schema_)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="flchain")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--share", type=float, default=0.3, help="share of each site's epsilon for the releases")
    parser.add_argument("--steps", type=int, default=3, help="Gaussian releases per site (Newton steps)")
    parser.add_argument("--clip", type=float, default=2.0, help="per-record gradient clip of a release")
    parser.add_argument(
        "--hessian",
        nargs="+",
        choices=HESSIAN_SOURCES,
        default=["model"],
        help="Hessian sources of the refined arm, one arm each (see above)",
    )
    parser.add_argument("--copula-sigma", type=float, default=3.0, help="noise of the copula release (x bound)")
    parser.add_argument(
        "--effect-errors",
        action="store_true",
        help="also each arm's event effects against the head's MLE on the pooled rows (effects_inside, _median_z)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        runs.append(run(args.dataset, seed, args.rounds, args.share, args.steps, args.clip, tuple(args.hessian),
                        args.copula_sigma, args.effect_errors))  # fmt: skip
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in runs[-1].items()}), flush=True)
    summary = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0] if k != "seed"}
    print(json.dumps(summary, indent=1))
    if args.out:
        write_result(args.out, "benchmarks.head_refinement", __doc__.strip().split("\n\n", 2)[1], summary, runs)


if __name__ == "__main__":
    main()
