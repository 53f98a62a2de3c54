"""``flower-supernode`` that asks the SuperLink for work every 0.5 s instead of every 3 s.

Run as ``python -m fedsynth.deploy.prompt_supernode`` with ``flower-supernode``'s own arguments.

Why: Flower's SuperNode sleeps a fixed 3 s whenever a pull finds no message, so each message of a
run (the marginal release, every training round, an audit) waits 1.5 s on average, up to 3 s,
before a site starts on it, and a deployment round cost several times a simulation round
(``benchmarks/results/rounds.json``). The sleep is a literal in Flower's loop with no option, so
this entry point runs Flower's own ``flower_supernode`` with that module's sleeps 6 times shorter
(``IDLE_POLL`` instead of 3 s; its 0.5-s waits for a ClientApp's reply become 0.08 s); nothing
else changes. The cost is one small authenticated pull per site every 0.5 s while idle (about 2%
of a core for the SuperNode, measured). A site may run plain ``flower-supernode`` instead: it
works the same, only slower.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

from fedsynth.server.prompt_grid import prompt_object_pulls

IDLE_POLL = 0.5  # seconds between pulls when no message is waiting
FLOWER_IDLE_POLL = 3.0  # Flower's own, a literal in flwr.supernode.start_client_internal


def scaled_time(factor: float) -> SimpleNamespace:
    """The ``time`` module as one module sees it, with every sleep ``factor`` times as long."""
    view = SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("__")})
    view.sleep = lambda seconds: time.sleep(seconds * factor)
    return view


def main() -> int:
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    # Its idle poll (3 s) and its waits for a ClientApp's reply (0.5 s), shortened alike.
    loop.time = scaled_time(IDLE_POLL / FLOWER_IDLE_POLL)  # type: ignore[assignment]
    prompt_object_pulls()  # a message's weights can reach the SuperLink just after the message
    sys.argv[0] = "flower-supernode"
    result = flower_supernode()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
