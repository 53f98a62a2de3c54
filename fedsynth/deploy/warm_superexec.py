"""A site's SuperExec whose ClientApp runs warm: ``python -m fedsynth.deploy.warm_superexec``.

Why: Flower's SuperExec starts a fresh ``flwr-clientapp`` process for every message, and each
one imports torch, Opacus and fedsynth again: 5-11 s on a 2-core machine, most of a
deployment round (``benchmarks/results/rounds.json``). Even forked warm, a new process pays its
first-use costs (a site opened and a DP round run for the first time: about 1.5 s against 0.1 s
in a process that has done it before). So, as Flower's simulation engine keeps one actor per
CPU, each site keeps one long-lived ClientApp process that answers its messages one after
another with Flower's own ``run_clientapp`` (only its process exit is replaced by a return). A
message that arrives while that process is busy (a second run) gets a process of its own,
forked from a ``multiprocessing`` forkserver that imported the ClientApp's modules once. Both
end with their SuperNode.

It is run beside ``flower-supernode --isolation process`` (Flower's documented pairing of a
SuperNode with a SuperExec it does not start itself), with the same arguments as
``flower-superexec``; every other task type goes to Flower's subprocess executor.
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing
import os
import queue
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _returning_run_clientapp() -> Callable[..., None]:
    """Flower's ``run_clientapp`` that returns when its message is answered instead of exiting.

    It ends a message by calling its exit handlers (reply status pushed, heartbeat stopped, client
    closed) from ``flwr_exit``, then exits the process; here the same handlers run and it returns.
    """
    import flwr.supernode.runtime.run_clientapp as runtime

    handlers: list[Callable[[], None]] = []

    def keep_handlers(**options: Any) -> None:
        handlers[:] = options.get("exit_handlers") or []

    def finish(code: int, *args: Any, **options: Any) -> None:
        for handler in handlers:
            handler()
        handlers.clear()

    runtime.register_signal_handlers = keep_handlers  # type: ignore[assignment]
    runtime.flwr_exit = finish  # type: ignore[assignment]
    return runtime.run_clientapp


def _answer_messages(tasks: Any, answered: Any, watched_pids: tuple[int, ...]) -> None:
    """Body of a site's long-lived ClientApp process: every message it is given, one at a time,
    until given None, or until its SuperNode or SuperExec is gone."""
    from flwr.supercore.app_utils import start_parent_process_monitor

    for pid in watched_pids:
        start_parent_process_monitor(pid)
    run_clientapp = _returning_run_clientapp()
    prompt_object_pulls()
    while (task := tasks.get()) is not None:
        address, token, certificates_path = task
        try:
            run_clientapp(
                runtime_api_address=address,
                token=token,
                insecure=certificates_path is None,
                certificates=Path(certificates_path).read_bytes() if certificates_path else None,
                parent_pid=None,  # watched once, above
                runtime_dependency_install=False,
            )
        finally:
            answered.put(token)


def warm_executor_class() -> type:
    """Flower's subprocess executor, with ClientApp tasks answered by the site's long-lived
    process, or forked warm while it is busy (built lazily: Flower's executor modules are
    imported only in the SuperExec process)."""
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
            self._worker: Any = None
            self._tasks: Any = None
            self._answered: Any = None
            self._busy = False
            atexit.register(self._stop_worker)  # before multiprocessing's own exit joins it

        def launch(self, spec: ExecutionSpec) -> LaunchResult:
            if spec.task_type != TaskType.CLIENT_APP or spec.runtime_dependency_install or spec.parent_pid is None:
                return super().launch(spec)
            certificates = None if spec.insecure else spec.root_certificates_path
            if self._worker_is_free(spec.parent_pid):
                self._busy = True
                self._tasks.put((spec.runtime_api_address, spec.token, certificates))
                return LaunchResult.accepted()
            process = self._context.Process(
                target=_answer_one_message,
                args=(spec.runtime_api_address, spec.token, certificates, spec.parent_pid),
                name="flwr-clientapp",
            )
            process.start()
            return LaunchResult.accepted()

        def _worker_is_free(self, supernode_pid: int) -> bool:
            if self._worker is None or not self._worker.is_alive():
                self._tasks, self._answered = self._context.Queue(), self._context.Queue()
                self._worker = self._context.Process(
                    target=_answer_messages,
                    args=(self._tasks, self._answered, (supernode_pid, os.getpid())),
                    name="flwr-clientapp-site",
                )
                self._worker.start()
                self._busy = False
            while self._busy:
                try:
                    self._answered.get_nowait()
                except queue.Empty:
                    break
                self._busy = False
            return not self._busy

        def _stop_worker(self) -> None:
            """Ask the site's process to stop after its message, if any; end it if it has not in 5 s."""
            if self._worker is not None and self._worker.is_alive():
                self._tasks.put(None)
                self._worker.join(timeout=5)
                if self._worker.is_alive():
                    self._worker.terminate()
                    self._worker.join(timeout=5)

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
