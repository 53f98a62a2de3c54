"""A Grid wrapper that asks for replies every ``pull_interval`` seconds instead of every 3.

Why: on the deployment engine Flower's ``Grid.send_and_receive`` sleeps a fixed 3 s between
pulls of the sites' replies, so every message exchange (a training round, the marginal release,
an audit) waits up to 3 s after the last site answered; a DP round on a small site trains in
about a second. The simulation engine's grid pulls every 0.1 s. Everything else is the wrapped
grid's, unchanged (the same composition Flower uses for its strategies).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.supercore.run import Run

PULL_INTERVAL = 0.2  # one small request to the SuperLink per interval while replies are due
OBJECT_PULL_BACKOFF = 0.05  # Flower's: 1 s, doubling up to 10 s
# How long the coordinator waits for a reply's objects (the weights) to reach the SuperLink
# (Flower's: 2 hours). A site killed mid-upload leaves its reply's objects missing, and the
# pull that meets it blocks the round's other replies until it gives up; weights of a few MB
# take seconds, so a minute bounds that stall without failing a slow but live upload.
REPLY_OBJECTS_MAX_TIME = 60.0


def prompt_object_pulls(initial_backoff: float = OBJECT_PULL_BACKOFF, max_time: float | None = None) -> None:
    """In this process, retry a pull of a message's objects after ``initial_backoff`` s (doubling).

    Why: a SuperNode hands a message to its ClientApp before it has pulled the message's objects
    (the weights) from the SuperLink, so the ClientApp's first pull finds nothing and Flower waits
    a whole second before asking again; every round paid it. Only the first wait changes: the
    doubling and Flower's cap stay, and its time limit unless ``max_time`` is given.
    """
    from flwr.supercore.inflatable import inflatable_utils

    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        assert function.__kwdefaults__ is not None and "initial_backoff" in function.__kwdefaults__
        function.__kwdefaults__["initial_backoff"] = initial_backoff
        if max_time is not None:
            function.__kwdefaults__["max_time"] = max_time


class GridWrapper(Grid):
    """Everything is the wrapped ``grid``'s; a subclass overrides what it adds to."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=timeout)


class PromptGrid(GridWrapper):
    """``grid`` with ``send_and_receive`` pulling replies every ``pull_interval`` seconds."""

    def __init__(self, grid: Grid, pull_interval: float = PULL_INTERVAL) -> None:
        if pull_interval <= 0:
            raise ValueError(f"pull_interval must be > 0, got {pull_interval}")
        super().__init__(grid)
        self.pull_interval = pull_interval
        prompt_object_pulls(max_time=REPLY_OBJECTS_MAX_TIME)  # a reply's objects can lag its message

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``, then pull until every one has a reply or ``timeout`` seconds pass
        (Flower's contract: the replies that arrived, possibly fewer than the messages).

        The last pull starts at or after the deadline, so every reply that arrived in time is
        collected. Why: one pull can block for minutes (Flower retries the objects of a reply
        whose sender died mid-upload until the SuperLink gives up on them), and a loop that
        stopped when such a pull returned late lost the replies that came in meanwhile: a
        site killed mid-round cost the round every other site's weights.
        """
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            started = time.monotonic()
            arrived = list(self.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not pending or (deadline is not None and started >= deadline):
                break
            time.sleep(
                self.pull_interval
                if deadline is None
                else min(self.pull_interval, max(0.0, deadline - time.monotonic()))
            )
        return replies
