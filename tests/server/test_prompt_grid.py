"""PromptGrid: Flower's send_and_receive contract, with replies pulled every pull_interval seconds."""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import SimpleNamespace

import pytest
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedsynth.server.prompt_grid import OBJECT_PULL_BACKOFF, REPLY_OBJECTS_MAX_TIME, PromptGrid, prompt_object_pulls


class SlowSites(Grid):
    """A grid whose sites answer message ``i`` at the ``i + 1``-th pull (site 2 never, if told)."""

    def __init__(self, silent: set[str] = frozenset()) -> None:
        self.pulls = 0
        self.silent = silent
        self.answered: set[str] = set()

    def set_run(self, run):  # noqa: ANN001, ANN201
        raise NotImplementedError

    @property
    def run(self):  # noqa: ANN201
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        return SimpleNamespace(content=content, dst_node_id=dst_node_id)  # outside a run Flower builds none

    def get_node_ids(self) -> Iterable[int]:
        return [1, 2, 3]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        replies = []
        for mid in sorted(message_ids):
            if mid in self.silent or mid in self.answered or int(mid[1:]) >= self.pulls:
                continue
            self.answered.add(mid)
            replies.append(SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid)))
        return replies

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        raise AssertionError("PromptGrid must not fall back to the wrapped grid's 3-second loop")


def _messages(grid: Grid, n: int) -> list[Message]:
    return [grid.create_message(RecordDict(), "train", node, "1") for node in range(1, n + 1)]


def test_every_reply_is_collected_with_one_pull_per_interval() -> None:
    sites = SlowSites()
    grid = PromptGrid(sites, pull_interval=0.05)
    started = time.monotonic()
    replies = list(grid.send_and_receive(_messages(grid, 3), timeout=10))
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert sites.pulls == 3  # stops at the pull that brought the last reply
    assert time.monotonic() - started < 2.5  # two intervals, not Flower's two times 3 s


def test_a_silent_site_leaves_the_others_replies_at_the_timeout() -> None:
    grid = PromptGrid(SlowSites(silent={"m1"}), pull_interval=0.05)
    started = time.monotonic()
    replies = list(grid.send_and_receive(_messages(grid, 3), timeout=0.5))
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m2"]
    assert 0.5 <= time.monotonic() - started < 4.0


class DyingSite(SlowSites):
    """Site 0's reply is broken: the pull that meets it blocks past the round's deadline (as
    Flower's object retries do for a sender killed mid-upload) and returns it as an error reply;
    site 1 answers while that pull blocks."""

    def __init__(self, block: float) -> None:
        super().__init__()
        self.block = block

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        if self.pulls == 1:
            time.sleep(self.block)
            return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id="m0"), error="unavailable")]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=m)) for m in sorted(message_ids)]


def test_a_pull_that_blocks_past_the_deadline_still_collects_the_replies_that_came_meanwhile() -> None:
    sites = DyingSite(block=0.4)
    grid = PromptGrid(sites, pull_interval=0.05)
    replies = list(grid.send_and_receive(_messages(grid, 2), timeout=0.2))
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1"]
    assert sites.pulls == 2  # one more pull after the deadline, then done


def test_everything_but_the_wait_is_the_wrapped_grids() -> None:
    sites = SlowSites()
    grid = PromptGrid(sites)
    assert list(grid.get_node_ids()) == [1, 2, 3]
    assert [n.node_id for n in grid.get_nodes()] == [1, 2, 3]
    with pytest.raises(NotImplementedError):
        grid.run  # noqa: B018
    with pytest.raises(ValueError, match="pull_interval"):
        PromptGrid(sites, pull_interval=0)


def test_object_pulls_retry_after_a_short_first_wait_and_keep_flowers_cap() -> None:
    from flwr.supercore.constant import PULL_BACKOFF_CAP
    from flwr.supercore.inflatable import inflatable_utils

    prompt_object_pulls()
    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        assert function.__kwdefaults__["initial_backoff"] == OBJECT_PULL_BACKOFF < 1
        assert function.__kwdefaults__["backoff_cap"] == PULL_BACKOFF_CAP


def test_the_coordinators_grid_gives_up_on_a_replys_missing_objects_after_a_minute() -> None:
    # A site killed mid-upload: Flower would retry its reply's objects for 2 hours, holding the
    # round's other replies back (measured: 3 minutes, until the SuperLink dropped the upload).
    from flwr.supercore.constant import PULL_MAX_TIME
    from flwr.supercore.inflatable import inflatable_utils

    PromptGrid(SlowSites())
    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        assert function.__kwdefaults__["max_time"] == REPLY_OBJECTS_MAX_TIME < PULL_MAX_TIME
