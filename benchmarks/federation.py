"""Federated DP training benchmarks (issue 3): DP-SGD cost, round time per engine, many sites.

    python -m benchmarks.federation dp-epoch --out benchmarks/results/dp_epoch.json
    python -m benchmarks.federation rounds --out benchmarks/results/rounds.json
    python -m benchmarks.federation many-sites --sites 50 --out benchmarks/results/many_sites.json

* ``dp-epoch``: one epoch of MCM training on FLChain's rows (5,219: 80%),
  plain Adam vs the sites' DP-SGD (Poisson sampling, one-pass per-record clipping, noise), at
  batch 64 and 256. Target: DP <= 2x non-DP at batch 256. Best and median of ``--repeats``, plain and DP interleaved.
* ``rounds``: seconds per federated round on Flower's simulation engine (Ray) and on the
  deployment engine (flower-superlink + one flower-supernode per site over TLS on loopback),
  3 and 10 sites, FLChain by default, one local epoch, DP. Round 1 includes start-up; rounds 2.. are the
  steady state. The deployment engine's extra cost is broken down (ClientApp process start-up
  and imports, measured separately).
* ``many-sites``: a simulation with N virtual sites (FLChain, IID) runs to completion; peak
  resident memory of the whole process tree (driver + Ray workers), sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import machine_info


def _iso_seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# ----------------------------------------------------------------------------------- dp-epoch
def dp_epoch(repeats: int) -> dict[str, Any]:
    from fedsynth.client.dp_training import CLIPPING
    from fedsynth.data.datasets import load_dataset
    from fedsynth.model.config import MCMConfig
    from fedsynth.model.mcm import MCM

    frame, schema = load_dataset("flchain")
    frame = frame.sample(frac=0.8, random_state=0)
    codes = MCM(MCMConfig()).build(schema).codes_tensor(frame)
    results: dict[str, Any] = {
        "rows": len(codes),
        "clipping": CLIPPING,
        "protocol": "seconds per epoch; batch_B: a one-epoch round (Opacus set-up included); "
        "batch_B_in_5_epoch_round: a 5-epoch round (the sites' default local_epochs) / 5; "
        "plain and DP runs interleaved",
    }
    for batch_size, epochs in ((64, 1), (256, 1), (64, 5), (256, 5)):
        plain, private = _epoch_times(codes, schema, batch_size, repeats, epochs)
        key = f"batch_{batch_size}" if epochs == 1 else f"batch_{batch_size}_in_{epochs}_epoch_round"
        results[key] = {
            "non_dp_seconds": {"best": min(plain), "median": statistics.median(plain), "all": plain},
            "dp_seconds": {"best": min(private), "median": statistics.median(private), "all": private},
            "dp_over_non_dp_best": min(private) / min(plain),
            "dp_over_non_dp_median": statistics.median(private) / statistics.median(plain),
        }
        print(f"{key}: non-DP {min(plain):.2f}s, DP {min(private):.2f}s, "
              f"ratio {min(private) / min(plain):.2f}", flush=True)  # fmt: skip
    return results


def _epoch_times(
    codes: torch.Tensor, schema: Any, batch_size: int, repeats: int, epochs: int = 1
) -> tuple[list[float], list[float]]:
    """Seconds per epoch over ``epochs`` epochs, plain Adam vs the sites' DP-SGD round, same model and batch."""
    from fedsynth.client.dp_training import plan_dp, train_dp_round
    from fedsynth.model.config import MCMConfig
    from fedsynth.model.mcm import MCM
    from fedsynth.model.training import per_sample_loss

    config = MCMConfig(batch_size=batch_size)
    plan = plan_dp(
        n_records=len(codes), batch_size=batch_size, local_epochs=epochs, planned_rounds=1,
        target_epsilon=4.0, target_delta=1e-5, max_grad_norm=1.0,
    )  # fmt: skip

    def plain_epoch() -> None:
        network = MCM(config).build(schema).network_
        optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
        generator = torch.Generator().manual_seed(0)
        network.train()
        for _ in range(epochs):
            order = torch.randperm(len(codes), generator=generator)
            for start in range(0, len(codes), batch_size):
                loss = per_sample_loss(network, codes[order[start : start + batch_size]], config, generator).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def dp_epoch_once() -> None:
        network = MCM(config).build(schema).network_
        train_dp_round(network, codes, config, plan, config.learning_rate, torch.Generator().manual_seed(0))

    plain_epoch(), dp_epoch_once()  # warm-up
    plain, private = [], []
    for _ in range(repeats):  # interleaved, so that a slow spell of the machine hits both alike
        plain.append(_timed(plain_epoch) / epochs)
        private.append(_timed(dp_epoch_once) / epochs)
    return plain, private


def _timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


# ----------------------------------------------------------------------------------- rounds
def _federation_config(
    root: Path, engine: str, sites: int, rounds: int, dataset: str, local_epochs: int, secure: bool = False
) -> Any:
    from fedsynth.server.config import FederationConfig

    return FederationConfig.from_dict(
        {
            "federation": {
                "engine": engine, "rounds": rounds, "min_sites": sites, "round_timeout": 600,
                "run_dir": str(root / f"{engine}-{sites}{'-secagg' if secure else ''}"),
            },
            "simulation": {"dataset": dataset, "sites": sites},
            "site": {"privacy": {"target_epsilon": 4.0}, "training": {"local_epochs": local_epochs}},
            "secure_aggregation": {"enabled": secure},
        }
    )  # fmt: skip


def _round_seconds(run_dir: Path, started: float) -> dict[str, Any]:
    from fedsynth.server.run import RunDirectory

    ends: dict[int, float] = {}
    for record in RunDirectory(run_dir).budget_records():
        ends[record["round"]] = _iso_seconds(record["time"])
    rounds = sorted(ends)
    steady = [ends[r] - ends[r - 1] for r in rounds[1:]]
    return {
        "first_round_incl_startup": ends[rounds[0]] - started,
        "steady_round_seconds": steady,
        "steady_round_mean": statistics.mean(steady) if steady else None,
    }


def clientapp_startup(repeats: int = 3) -> dict[str, float]:
    """What a fresh ClientApp process pays before training: interpreter + imports, site opening."""
    code = "import time; t=time.perf_counter(); import fedsynth.client.app as a; print(time.perf_counter()-t)"
    imports = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        imports.append(float(out.stdout.strip()))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - started
    return {"python_start_seconds": bare, "import_fedsynth_client_app_seconds_best": min(imports)}


def rounds_benchmark(
    site_counts: list[int], rounds: int, dataset: str, local_epochs: int = 1, secure_modes: tuple[bool, ...] = (False,)
) -> dict[str, Any]:
    """Seconds per round on both engines; with ``secure_modes`` (False, True) each also under SecAgg+."""
    from fedsynth.deploy.loopback_runs import run_on_loopback
    from fedsynth.server.simulation import simulate

    results: dict[str, Any] = {"dataset": dataset, "rounds": rounds, "local_epochs": local_epochs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sites in site_counts:
            for engine in ("simulation", "deployment"):
                for secure in secure_modes:
                    key = f"{engine}_{sites}_sites{'_secagg' if secure else ''}"
                    config = _federation_config(root, engine, sites, rounds, dataset, local_epochs, secure)
                    started = time.time()
                    if engine == "simulation":
                        simulate(config)
                    else:
                        run_on_loopback(config)
                    total = time.time() - started
                    entry = {"total_seconds": total, **_round_seconds(config.run_dir, started)}
                    results[key] = entry
                    plain = results.get(f"{engine}_{sites}_sites", {}).get("steady_round_mean")
                    if secure and plain and entry["steady_round_mean"]:
                        results[f"{engine}_secagg_over_plain_{sites}_sites"] = entry["steady_round_mean"] / plain
                    print(f"{key}: {json.dumps(entry)}", flush=True)
            for suffix in ("", "_secagg"):
                deployed = results.get(f"deployment_{sites}_sites{suffix}", {}).get("steady_round_mean")
                simulated = results.get(f"simulation_{sites}_sites{suffix}", {}).get("steady_round_mean")
                if deployed and simulated:
                    results[f"deployment_over_simulation_{sites}_sites{suffix}"] = deployed / simulated
    results["clientapp_process_startup"] = clientapp_startup()
    return results


# ------------------------------------------------------------------------------- many-sites
class TreeMemory:
    """Peak resident memory of this process and all its descendants (Ray workers included)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.peak_bytes, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import os

        from fedsynth.deploy.local import _children

        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            total = 0
            for pid in [os.getpid(), *_children(os.getpid())]:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def many_sites(sites: int, dataset: str) -> dict[str, Any]:
    from fedsynth.server.run import RunDirectory
    from fedsynth.server.simulation import simulate

    with tempfile.TemporaryDirectory() as tmp:
        config = _federation_config(Path(tmp), "simulation", sites, 1, dataset)
        config = config.model_copy(update={"min_sites": sites})
        started = time.time()
        with TreeMemory() as memory:
            simulate(config)
        records = RunDirectory(config.run_dir).budget_records()
    ok = [r for r in records if r["status"] == "ok"]
    return {
        "sites": sites,
        "dataset": dataset,
        "rounds": 1,
        "sites_replied_ok": len(ok),
        "records_per_site": sorted({int(r["num-examples"]) for r in ok}),
        "seconds": time.time() - started,
        "peak_tree_rss_gib": memory.peak_bytes / 1024**3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["dp-epoch", "rounds", "many-sites"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sites", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--local-epochs", type=int, default=1, help="rounds: each site's epochs per round")
    parser.add_argument(
        "--secure-aggregation", nargs="+", choices=["off", "on"], default=["off"],
        help="rounds: run each engine without and/or with SecAgg+",
    )  # fmt: skip
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    command = " ".join(["python -m benchmarks.federation", *sys.argv[1:]])
    if args.what == "dp-epoch":
        result = dp_epoch(args.repeats)
    elif args.what == "rounds":
        secure = tuple(mode == "on" for mode in args.secure_aggregation)
        result = rounds_benchmark(
            args.sites or [3, 10], args.rounds, args.dataset or "flchain", args.local_epochs, secure
        )
    else:
        result = many_sites((args.sites or [50])[0], args.dataset or "flchain")
    document = {"command": command, "machine": machine_info(), "result": result}
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
