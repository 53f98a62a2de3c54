"""How often the default policy signs `fedsynth demo`, and which hazard ratios miss when it does not.

    OMP_NUM_THREADS=1 python -m benchmarks.demo_verdicts --repeats 8 --workdir /tmp/demos \
        --out benchmarks/results/demo_verdicts.json
    python -m benchmarks.demo_verdicts --runs /tmp/demos/* --out ...   # summarise runs made before

Every demo run draws fresh DP noise (the sites seed it from ``secrets``), so its verdict is a
random variable; one run says little. For each run: the outcome and every rule's value; over
all runs, per covariate, how often a site's synthetic log-HR fell outside that site's real 95%
CI and its mean offset in half-widths of that CI ((synthetic - real) / half-width: a bias shows
as a mean far from 0, DP noise as a wide spread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.machine import write_record


def run_demos(repeats: int, workdir: Path) -> list[Path]:
    runs = []
    for index in range(repeats):
        out = workdir / f"demo-{index}"
        done = subprocess.run([sys.executable, "-m", "fedsynth.cli", "demo", "-o", str(out)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"demo {index} exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        runs.append(out)
    return runs


def summarise(runs: list[Path]) -> dict[str, Any]:
    verdicts = []
    offsets: dict[str, list[float]] = defaultdict(list)
    misses: dict[str, int] = defaultdict(int)
    for run in runs:
        verdict = json.loads((run / "signoff.json").read_text())["verdict"]
        verdicts.append({"run": run.name, "outcome": verdict["outcome"],
                         "rules": {r["name"]: r["value"] for r in verdict["rules"]}})  # fmt: skip
        for site in json.loads((run / "evaluation.json").read_text())["sites"]:
            for name, c in site["hazard_ratios"]["covariates"].items():
                half_width = (c["real_upper"] - c["real_lower"]) / 2
                offsets[name].append((c["synthetic_log_hr"] - c["real_log_hr"]) / half_width)
                misses[name] += not c["inside_real_ci"]
    covariates = {
        name: {
            "outside_real_ci": f"{misses[name]}/{len(values)}",
            "offset_mean": statistics.mean(values),
            "offset_sd": statistics.stdev(values) if len(values) > 1 else None,
        }
        for name, values in sorted(offsets.items())
    }
    outcomes = [v["outcome"] for v in verdicts]
    return {
        "runs": len(runs),
        "pass_share": outcomes.count("PASS") / len(outcomes),
        "hr_in_ci_fraction": [v["rules"].get("hr_in_ci_fraction") for v in verdicts],
        "verdicts": verdicts,
        "covariates": covariates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=0, help="demo runs to make now")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/demo_verdicts"))
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="demo run directories made before")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = list(args.runs) + (run_demos(args.repeats, args.workdir) if args.repeats else [])
    if not runs:
        parser.error("give --repeats N or --runs DIR ...")
    result = summarise(runs)
    print(json.dumps({k: result[k] for k in ("runs", "pass_share", "hr_in_ci_fraction", "covariates")}, indent=1))
    if args.out:
        write_record(args.out, "benchmarks.demo_verdicts", result)


if __name__ == "__main__":
    main()
