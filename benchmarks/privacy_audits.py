"""Privacy audit speed (issue 4): each audit's time at 10k and 100k rows.

    python -m benchmarks.privacy_audits --out benchmarks/results/privacy_audits.json

Rows are FLChain records resampled with replacement to N synthetic, N train and N holdout
rows (the schema's transformed space has 17 dimensions).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.machine import machine_info
from fedsynth.data.datasets import load_dataset
from fedsynth.privacy.nearest_neighbour import nearest_neighbour_audit


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
        results[f"nearest_neighbour_{n}"] = {"seconds": seconds, "dcr_share": audit.dcr_share}
        print(f"nearest-neighbour audit, {n} rows each: {seconds:.1f} s", flush=True)
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
