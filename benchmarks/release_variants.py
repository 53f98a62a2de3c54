"""Which marginal release gives the best calibrated samples, at the privacy a run spent?

    OMP_NUM_THREADS=1 python -m benchmarks.release_variants /tmp/runs/whas500-* --repeats 3 \
        --out benchmarks/results/release_variants.json

Runs come from ``benchmarks.federated_quality --keep DIR``. A run's DP-SGD model does not depend on
which tables its sites release, only on the marginal budget share, so a release variant can be
simulated on a trained run exactly: each site's tables on the variant's bins, counted on the site's
own training rows, Gaussian noise at the noise multiplier the site's ledger recorded for its
marginal release (times the variant's L2 sensitivity), summed, made consistent, and the run's model
calibrated to them. Scored on the pooled training rows (KS of numeric columns, TVD of the others),
``--repeats`` noise draws per run; ``--utility`` adds TSTR gap and HR-in-CI (slower).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.machine import machine_info
from fedsynth.data.datasets import load_dataset
from fedsynth.evaluation.fidelity import marginal_distances
from fedsynth.evaluation.utility import utility_report
from fedsynth.marginals.consistency import make_consistent
from fedsynth.marginals.tables import MarginalSpec, TableSpec, count_tables
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.mcm import MCM
from fedsynth.server.simulation_score import site_tables


def spec_for(schema, variant: str) -> MarginalSpec:
    """``<kind>-<numeric bins>-<time bins>[-w<a>]``. Kinds: ``compact`` (the default selection),
    ``xevent`` (compact as it was: each discrete covariate x event at weight 1); ``w<a>``: the
    discrete tables at weight a."""
    parts = variant.split("-")
    kind, numeric, time = parts[:3]
    spec = MarginalSpec.from_schema(schema, numeric_bins=int(numeric), time_bins=int(time), selection="compact")
    numeric_columns = {b.name for b in spec.bins if b.numeric}
    tables = []
    for t in spec.tables:
        if t.columns[0] in numeric_columns:
            tables.append(t)
        elif kind == "xevent":
            event = spec.bin(spec.event_column).n_bins
            tables.append(TableSpec(f"{t.name}|{spec.event_column}", (t.name, spec.event_column), (*t.shape, event)))
        else:
            tables.append(dataclasses.replace(t, weight=float(parts[3][1:])) if len(parts) > 3 else t)
    return MarginalSpec(spec.schema, spec.bins, tuple(tables), spec.time_column, spec.event_column)


def marginal_noise(run_dir: Path) -> dict[str, float]:
    out = {}
    for line in (run_dir / "budget.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("mechanism") == "marginals":
            out[entry["site"]] = float(entry["noise-multiplier"])
    return out


def score_variant(
    run_dir: Path, variant: str, repeats: int, utility: bool, multiple: int | None = None
) -> dict[str, Any]:
    model = MCM.load(run_dir / "model")
    _, schema = load_dataset(model.schema_.name)
    model.schema_ = schema
    spec = spec_for(schema, variant)
    sites = site_tables(run_dir)
    noise = marginal_noise(run_dir)
    train = pd.concat([t for _, t, _ in sites], ignore_index=True)
    seed = int(run_dir.name.rsplit("-", 1)[1])
    scores = []
    for r in range(repeats):
        rng = np.random.default_rng(1000 * seed + r)
        summed = {t.name: np.zeros(t.shape) for t in spec.tables}
        for name, site_train, _ in sites:
            counts = count_tables(site_train, spec)
            for t in spec.tables:
                std = spec.noise_std(t, noise[name])
                summed[t.name] += counts[t.name] + rng.normal(0.0, std, size=t.shape)
        target = MarginalTarget(spec, make_consistent(summed, spec))
        if multiple is not None:
            target = dataclasses.replace(target, candidate_multiple=multiple)
        model.calibrate_to(target)
        synthetic = model.sample(len(train), seed=seed + 1 + r)
        d = marginal_distances(train, synthetic, schema)
        ks = {k: v["value"] for k, v in d.items() if v["statistic"] == "ks"}
        tvd = [v["value"] for v in d.values() if v["statistic"] == "tv"]
        score = {"numeric_mean_ks": float(np.mean(list(ks.values()))), "discrete_mean_tvd": float(np.mean(tvd))}
        score["worst_ks"] = max(ks.values())
        if utility:
            reports = [utility_report(train, holdout, synthetic, schema) for _, _, holdout in sites]
            score["gap"] = float(np.mean([x.cindex_tstr - x.cindex_trtr for x in reports]))
            score["hr_in_ci_fraction"] = reports[0].hr_in_ci_fraction
        scores.append(score)
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--variants", nargs="+", default=["xevent-16-8", "compact-16-8"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--utility", action="store_true")
    parser.add_argument(
        "--candidate-multiple", type=int, help="candidates drawn per sampled row (default: the target's)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for variant in args.variants:
        for run_dir in args.runs:
            dataset = run_dir.name.rsplit("-", 1)[0]
            score = score_variant(run_dir, variant, args.repeats, args.utility, args.candidate_multiple)
            results.setdefault(variant, {}).setdefault(dataset, []).append(score)
            print(variant, run_dir.name, {k: round(v, 4) for k, v in score.items()}, flush=True)
    summary = {
        variant: {
            dataset: {key: float(np.mean([s[key] for s in runs])) for key in runs[0]} for dataset, runs in by.items()
        }
        for variant, by in results.items()
    }
    for variant, by in summary.items():
        for dataset, s in by.items():
            print(variant, dataset, {k: round(v, 4) for k, v in s.items()})
    if args.out:
        document = {
            "command": " ".join(["python -m benchmarks.release_variants", *sys.argv[1:]]),
            "machine": machine_info(),
            "results": summary,
            "runs": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
