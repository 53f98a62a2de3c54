"""What each `privacy.marginals_share` costs: the tables' noise and the DP-SGD noise it leaves.

Accounting only (no training): for 3 IID sites of each bundled dataset at epsilon 4 with the
federated defaults (3 rounds, the site's default epochs, batch size and holdout), the noise
multiplier of the marginal release (one Gaussian step whose epsilon alone is share x 4), the
per-cell noise std of one site's tables and of the 3 sites' sum, and the DP-SGD noise
multiplier planned from the rest (RDP composition), next to the plan without marginals.

    OMP_NUM_THREADS=1 python -m benchmarks.marginals_share --out benchmarks/results/marginals_share.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.machine import write_record
from fedsynth.client.config import SiteConfig
from fedsynth.client.dp_training import marginal_noise_for_share, plan_dp
from fedsynth.client.ledger import default_delta
from fedsynth.data.datasets import bundled_schema, load_dataset
from fedsynth.marginals.tables import MarginalSpec
from fedsynth.server.config import FederationConfig

SHARES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
DATASETS = ("whas500", "actg320", "gbsg2", "flchain")


def rows(dataset: str, sites: int, epsilon: float) -> list[dict[str, float | int | str]]:
    site, federation = SiteConfig(name="s"), FederationConfig()
    n_rows = len(load_dataset(dataset)[0]) // sites
    n_train = n_rows - int(round(n_rows * site.training.holdout_fraction))
    delta = default_delta(n_train)
    tables = len(MarginalSpec.from_schema(bundled_schema(dataset)).tables)
    common = {
        "n_records": n_train, "batch_size": site.training.batch_size, "local_epochs": site.training.local_epochs,
        "planned_rounds": federation.rounds, "target_epsilon": epsilon, "target_delta": delta,
        "max_grad_norm": site.privacy.max_grad_norm,
    }  # fmt: skip
    alone = plan_dp(**common).noise_multiplier
    out = []
    for share in SHARES:
        z = marginal_noise_for_share(share, epsilon, delta)
        sgd = plan_dp(**common, marginal_noise_multiplier=z).noise_multiplier
        out.append(
            {
                "dataset": dataset, "n_train_per_site": n_train, "delta": delta, "tables": tables, "share": share,
                "marginal_noise_multiplier": round(z, 3),
                "cell_std_one_site": round(z * math.sqrt(tables), 2),
                "cell_std_sum_of_sites": round(z * math.sqrt(tables) * math.sqrt(sites), 2),
                "dp_sgd_noise_without_marginals": round(alone, 4), "dp_sgd_noise": round(sgd, 4),
                "dp_sgd_noise_increase_pct": round(100 * (sgd / alone - 1), 1),
            }
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = [row for dataset in DATASETS for row in rows(dataset, args.sites, args.epsilon)]
    for row in results:
        print(json.dumps(row))
    if args.out:
        write_record(args.out, "benchmarks.marginals_share", results)


if __name__ == "__main__":
    main()
