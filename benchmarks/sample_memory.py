"""Peak memory of `fedsynth sample -n 10000000`: streaming keeps it bounded whatever n is.

    python -m benchmarks.sample_memory --out benchmarks/results/sample_memory.json

Target (issue 20): peak RSS under 1 GiB for 10 million rows on the WHAS500 schema, CSV and
Parquet, from a model made by `fedsynth fit`. Before streaming the same command peaked at
6.5 GB. Each `fedsynth sample` runs as its own process; its peak RSS is the kernel's
``ru_maxrss`` for that process (from ``os.wait4``), so nothing of this script is counted.
The written file is checked against the SHA-256 its provenance sidecar records.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_info
from fedsynth.data.datasets import bundled_schema, raw_dataset
from fedsynth.model.provenance import file_sha256, sidecar_path

GIB = 1024**3


def fedsynth(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedsynth.cli", *args]


def run_measured(command: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of ``command``, which must succeed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode() if process.stderr else ''}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--epochs", type=int, default=30, help="fit epochs (the model's size does not depend on them)")
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--note", help="what else the machine was doing (seconds vary with it, memory does not)")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "command": f"python -m benchmarks.sample_memory --rows {args.rows} --formats {' '.join(args.formats)}",
        "machine": machine_info(),
        "dataset": "whas500",
        "rows": args.rows,
        "target_peak_rss_gib": 1.0,
        **({"note": args.note} if args.note else {}),
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="sample-memory-") as work:
        root = Path(work)
        raw_dataset("whas500").to_csv(root / "whas500.csv", index=False)
        (root / "whas500.toml").write_text(bundled_schema("whas500").to_toml(), encoding="utf-8")
        fit = ["fit", str(root / "whas500.csv"), "--schema", str(root / "whas500.toml"), "-o", str(root / "model")]
        subprocess.run(fedsynth(*fit, "--epochs", str(args.epochs)), check=True, stdout=subprocess.DEVNULL)
        for fmt in args.formats:
            output = root / f"synthetic.{fmt}"
            sample = ["sample", str(root / "model"), "-n", str(args.rows), "--seed", "0", "-o", str(output)]
            seconds, peak = run_measured(fedsynth(*sample))
            sidecar = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
            results["runs"][fmt] = {
                "command": "fedsynth " + " ".join(sample).replace(str(root) + "/", ""),
                "peak_rss_gib": round(peak / GIB, 3),
                "under_target": peak < GIB,
                "seconds": round(seconds, 1),
                "rows_per_second": round(args.rows / seconds),
                "file_gib": round(output.stat().st_size / GIB, 3),
                "sidecar_sha256_matches_file": sidecar["sha256"] == file_sha256(output),
            }
            print(fmt, json.dumps(results["runs"][fmt]), flush=True)
            output.unlink()
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
