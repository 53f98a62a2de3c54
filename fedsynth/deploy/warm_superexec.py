"""A site's SuperExec whose ClientApp processes start warm: ``python -m fedsynth.deploy.warm_superexec``.

Why: Flower's SuperExec starts a fresh ``flwr-clientapp`` process for every message, and each
one imports torch, Opacus and fedsynth again: 5-11 s on a 2-core machine, most of a
deployment round (``benchmarks/results/rounds.json``). Here every message still runs in its own
process (its own memory, gone when the message is answered, killed with its SuperExec), but that
process is forked from a ``multiprocessing`` forkserver that imported the ClientApp's modules
once, and then runs Flower's own ``run_clientapp`` unchanged.

It is run beside ``flower-supernode --isolation process`` (Flower's documented pairing of a
SuperNode with a SuperExec it does not start itself), with the same arguments as
``flower-superexec``; every other task type goes to Flower's subprocess executor.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from pathlib import Path

from fedsynth.server.prompt_grid import prompt_object_pulls

# What every ClientApp process needs before it can answer: imported once, in the forkserver.
# Flower's ClientApp runtime (0.8-1.2 s to import) and torch._dynamo, which the first optimiser a
# process builds imports (1.9 s): each paid once here instead of at every message.
PRELOAD = ("fedsynth.client.app", "flwr.supernode.runtime.run_clientapp", "torch._dynamo")
TASK_POLL = 0.2  # seconds between the SuperExec's requests for new tasks (Flower's default: 1)


def warm_superexec_command(runtime_api_address: str, supernode_pid: int) -> list[str]:
    """The command that runs this SuperExec beside a SuperNode on the same machine.

    Plain HTTP to the Runtime API, as Flower's own SuperExec uses it: it listens on loopback only.
    """
    return [
        sys.executable, "-m", "fedsynth.deploy.warm_superexec",
        "--runtime-api-address", runtime_api_address,
        "--insecure",
        "--parent-pid", str(supernode_pid),
    ]  # fmt: skip


def _answer_one_message(address: str, token: str, certificates_path: str | None, parent_pid: int) -> None:
    """Body of one forked ClientApp process: Flower's ``flwr-clientapp`` without its imports."""
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    prompt_object_pulls()  # the SuperNode may still be pulling this message's weights
    run_clientapp(
        runtime_api_address=address,
        token=token,
        insecure=certificates_path is None,
        certificates=Path(certificates_path).read_bytes() if certificates_path else None,
        parent_pid=parent_pid,
        runtime_dependency_install=False,
    )


def warm_executor_class() -> type:
    """Flower's subprocess executor, with ClientApp tasks forked warm (built lazily: Flower's
    executor modules are imported only in the SuperExec process)."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
    from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult

    class WarmClientAppExecutor(SubprocessExecutor):
        def __init__(self) -> None:
            self._context = multiprocessing.get_context("forkserver")
            self._context.set_forkserver_preload(list(PRELOAD))
            # Import now, while the SuperNode connects and the run is submitted, not at the first message.
            from multiprocessing import forkserver

            forkserver.ensure_running()

        def launch(self, spec: ExecutionSpec) -> LaunchResult:
            if spec.task_type != TaskType.CLIENT_APP or spec.runtime_dependency_install or spec.parent_pid is None:
                return super().launch(spec)
            certificates = None if spec.insecure else spec.root_certificates_path
            process = self._context.Process(
                target=_answer_one_message,
                args=(spec.runtime_api_address, spec.token, certificates, spec.parent_pid),
                name="flwr-clientapp",
            )
            process.start()
            return LaunchResult.accepted()

        def reconcile(self) -> None:
            multiprocessing.active_children()  # reap the finished ClientApp processes

    return WarmClientAppExecutor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A Flower SuperExec whose ClientApp processes start warm.")
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (host:port)")
    parser.add_argument("--insecure", action="store_true", help="the Runtime API serves plain HTTP (loopback)")
    parser.add_argument("--root-certificates", help="CA certificate of the Runtime API's TLS")
    parser.add_argument("--parent-pid", type=int, help="exit when this process (the SuperNode) exits")
    args = parser.parse_args(argv)
    if args.insecure == (args.root_certificates is not None):
        parser.error("give exactly one of --insecure and --root-certificates")

    # Flower's SuperExec asks its SuperNode for new tasks every 1 s; a loopback request every 0.2 s
    # costs nothing next to a second of every message's latency.
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(TASK_POLL))
    import flwr.supercore.superexec.run_superexec as superexec

    executor = warm_executor_class()()
    # run_superexec builds its executor from a type name and has no way to pass one in.
    superexec.get_executor = lambda *args, **kwargs: executor
    superexec.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates_path=args.root_certificates,
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )


if __name__ == "__main__":
    main()
