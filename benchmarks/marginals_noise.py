"""How far the federated DP marginals are from the real pooled training tables (no model involved).

For 3 IID sites of each bundled dataset at epsilon 4 with the site defaults, every site releases
its noisy tables exactly as in a run (``release_marginals``: plan, ledger, noise), the tables are
summed and made consistent as the coordinator does, and each column's 1-way table is compared
with the exact counts of the pooled training rows: total variation distance of the normalised
tables (TVD), for numeric columns also the largest gap of the binned CDFs (a binned KS). This
is the floor any sampler calibrated to these tables inherits, per share.

    OMP_NUM_THREADS=1 python -m benchmarks.marginals_noise --seeds 0 1 2 --out benchmarks/results/marginals_noise.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.machine import write_record
from fedsynth.client.config import SiteConfig
from fedsynth.client.marginal_release import release_marginals
from fedsynth.client.site import Site
from fedsynth.data.datasets import load_dataset
from fedsynth.marginals.consistency import make_consistent
from fedsynth.marginals.tables import MarginalSpec, count_tables, tables_from_json
from fedsynth.server.simulated_sites import partition

DATASETS = ("whas500", "actg320", "gbsg2", "flchain")


def margin(tables: dict[str, np.ndarray], spec: MarginalSpec, name: str) -> np.ndarray:
    """Column ``name``'s 1-way counts from the first table holding it (consistent tables agree)."""
    table = next(t for t in spec.tables if name in t.columns)
    axis = table.columns.index(name)
    return tables[table.name].sum(axis=tuple(i for i in range(len(table.columns)) if i != axis))


def one_run(dataset: str, share: float, seed: int, sites: int, epsilon: float) -> dict[str, float]:
    frame, schema = load_dataset(dataset)
    spec = MarginalSpec.from_schema(schema)
    noisy, exact = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index, part in enumerate(partition(frame, sites, "iid", seed)):
            config = SiteConfig.from_dict(
                {"site": {"name": f"s{index}"}, "privacy": {"target_epsilon": epsilon, "marginals_share": share}}
            )
            site = Site(config, schema, Path(tmp) / f"s{index}", frame=part.reset_index(drop=True))
            release = release_marginals(site, run_id="bench", planned_rounds=3, numeric_bins=16, time_bins=8)
            noisy.append(tables_from_json(release.tables, spec))
            exact.append(count_tables(site.train, spec))
            site.close()
    summed = {t.name: sum(n[t.name] for n in noisy) for t in spec.tables}
    consistent = make_consistent(summed, spec)
    pooled = {t.name: sum(e[t.name] for e in exact) for t in spec.tables}
    tvd, ks = {}, {}
    for b in spec.bins:
        real, released = margin(pooled, spec, b.name), margin(consistent, spec, b.name)
        real, released = real / real.sum(), released / released.sum()
        tvd[b.name] = 0.5 * float(np.abs(real - released).sum())
        if b.numeric:
            ks[b.name] = float(np.abs(np.cumsum(real) - np.cumsum(released)).max())
    categorical = [v for name, v in tvd.items() if name not in ks]
    return {
        "mean_tvd_categorical": float(np.mean(categorical)) if categorical else None,
        "mean_binned_ks_numeric": float(np.mean(list(ks.values()))),
        "worst_binned_ks": max(ks.values()),
        "worst_column": max(ks, key=ks.get),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.25, 0.4])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    for dataset in args.datasets:
        for share in args.shares:
            runs = [one_run(dataset, share, seed, args.sites, args.epsilon) for seed in args.seeds]
            row = {"dataset": dataset, "share": share, "seeds": args.seeds}
            for key in ("mean_tvd_categorical", "mean_binned_ks_numeric", "worst_binned_ks"):
                values = [r[key] for r in runs if r[key] is not None]
                row[key] = round(float(np.mean(values)), 4) if values else None
            row["worst_columns"] = [r["worst_column"] for r in runs]
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.out:
        write_record(args.out, "benchmarks.marginals_noise", results)


if __name__ == "__main__":
    main()
