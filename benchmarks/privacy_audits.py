"""Privacy audit speed (issue 4): each audit's time, and a full site audit, at 10k and 100k rows.

    python -m benchmarks.privacy_audits --out benchmarks/results/privacy_audits.json

A site is built from FLChain records resampled with replacement to N training rows plus the
default holdout fraction (0.2 of the site: N/4 holdout rows), with the federation's default
model (fitted for two epochs: the audits' cost does not depend on how good the model is). The
full site audit is exactly what a site runs when the coordinator asks (``run_site_audit``):
N synthetic rows sampled at the site, the nearest-neighbour audit, the distance, density and
white-box attacks with their empirical epsilons, and Anonymeter; its own per-audit timings
are recorded. The standalone nearest-neighbour audit with N rows on every side is kept too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine_info
from fedsynth.client.audit import run_site_audit
from fedsynth.client.config import SiteConfig
from fedsynth.client.site import Site
from fedsynth.data.datasets import load_dataset
from fedsynth.model.mcm import MCM
from fedsynth.privacy.nearest_neighbour import nearest_neighbour_audit
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS


def site_audit(n_train: int, frame, schema) -> dict:  # type: ignore[no-untyped-def]
    holdout_fraction = 0.2
    n_site = round(n_train / (1 - holdout_fraction))
    data = frame.sample(n=n_site, replace=True, random_state=4).reset_index(drop=True)
    model = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"epochs": 2})).fit(frame, schema)
    with tempfile.TemporaryDirectory() as directory:
        config = SiteConfig.from_dict(
            {"site": {"name": "bench"}, "training": {"holdout_fraction": holdout_fraction}, "privacy": {}}
        )
        site = Site(config, schema, Path(directory), frame=data)
        started = time.perf_counter()
        result = run_site_audit(site, model, seed=0)
        seconds = time.perf_counter() - started
        site.close()
    return {
        "n_train": result["n_train"],
        "n_holdout": result["n_holdout"],
        "n_synthetic": result["n_synthetic"],
        "seconds": seconds,
        "per_audit_seconds": result["seconds"],
        "sampling_and_other_seconds": seconds - sum(result["seconds"].values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    frame, schema = load_dataset("flchain")
    results = {}
    for n in args.rows:
        synthetic, train, holdout = (frame.sample(n=n, replace=True, random_state=s) for s in (1, 2, 3))
        started = time.perf_counter()
        audit = nearest_neighbour_audit(synthetic, train, holdout, schema)
        seconds = time.perf_counter() - started
        results[f"nearest_neighbour_{n}_each"] = {"seconds": seconds, "dcr_share": audit.dcr_share}
        print(f"nearest-neighbour audit, {n} rows each: {seconds:.1f} s", flush=True)
        results[f"site_audit_{n}_train"] = row = site_audit(n, frame, schema)
        print(f"full site audit, {n} training rows: {row['seconds']:.1f} s {row['per_audit_seconds']}", flush=True)
    document = {
        "command": " ".join(["python -m benchmarks.privacy_audits", *sys.argv[1:]]),
        "machine": machine_info(),
        "results": results,
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
