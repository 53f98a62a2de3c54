"""A Flower grid that carries the coordinator's messages to real ClientApps in this process:
the ServerApp side of a round or a query, tested without a Flower engine's start-up."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedsynth.client.app import _sites


class InProcessSites(Grid):
    """Carries each message to its node's ClientApp in this process and back, as copies (each
    side holds its own objects, as over the wire), each node keeping its own context as a
    SuperNode does. ``silent_from[node]`` is the SecAgg+ stage from which that node no longer
    answers ("" for every message). Every reply the coordinator got is kept, with its stage."""

    def __init__(self, app: ClientApp, site_dirs: dict[int, str]) -> None:
        self.app = app
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config={"site-dir": d}, state=RecordDict(), run_config={})
            for node, d in site_dirs.items()
        }
        self.silent_from: dict[int, str] = {}
        self.received: list[tuple[str, Message]] = []
        self._run = Run.create_empty(1)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        order = ["", Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK]
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            node = message.metadata.dst_node_id
            secagg = message.content.config_records.get(RECORD_KEY_CONFIGS)
            stage = str(secagg[Key.STAGE]) if secagg is not None else ""  # "": not a SecAgg+ message
            silent = self.silent_from.get(node)
            if silent is not None and order.index(stage) >= order.index(silent):
                continue
            delivered = copy.deepcopy(message)
            try:
                reply = self.app(delivered, self.contexts[node])
            except Exception as exc:  # Flower's runtime turns a ClientApp exception into an error reply
                reply = Message(Error(1, str(exc)), reply_to=delivered)
            reply = copy.deepcopy(reply)
            self.received.append((stage, reply))
            replies.append(reply)
        return replies

    def close(self) -> None:
        """Close the sites the ClientApps opened in this process (their ledgers) and forget them,
        as each SuperNode's exit would: a later test in this worker opens its sites afresh."""
        for context in self.contexts.values():
            site = _sites.pop(Path(str(context.node_config["site-dir"])).resolve(), None)
            if site is not None:
                site.close()
