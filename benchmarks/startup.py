"""Start-up time of the command line (issue 22: light commands under 1 s).

    OMP_NUM_THREADS=1 python -m benchmarks.startup --out benchmarks/results/startup.json

Wall time of fresh interpreters running ``fedsynth --help``, ``fedsynth --version`` and
``fedsynth schema --help`` (``python -m fedsynth.cli``), best and median of ``--repeats``.
``--label`` names the code measured (e.g. a commit); results of several labels are merged into
``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import machine_info

COMMANDS = {"--help": ["--help"], "--version": ["--version"], "schema --help": ["schema", "--help"]}


def measure(args: list[str], repeats: int) -> dict[str, float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedsynth.cli", *args], check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return {"best_s": round(min(seconds), 3), "median_s": round(statistics.median(seconds), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {name: measure(command, args.repeats) for name, command in COMMANDS.items()}
    for name, r in results.items():
        print(f"{args.label}: fedsynth {name}: best {r['best_s']} s, median {r['median_s']} s")
    if args.out:
        document = json.loads(args.out.read_text()) if args.out.exists() else {"results": {}}
        document.update(command="python -m benchmarks.startup --label LABEL --out " + str(args.out))
        document["machine"] = machine_info()
        document["results"][args.label] = results
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
