"""FedAvg for the MCM generator, composed as Flower composes strategies: wrappers that hold
``self.strategy`` and add one concern each (as its DP strategies do), around a plain FedAvg.

What FedAvg (``flwr.serverapp.strategy.FedAvg``) lacks and the wrappers add:

* **Round offset** for resuming: Flower's ``start`` counts rounds from 1; a resumed run's
  rounds keep their global numbers (sites key their ledger entries by them).
* **Per-round checkpoints** with SHA-256 manifests, written in ``aggregate_train``.
* **The budget record**: every reply's privacy scalars (or its error, e.g. a site that
  refused an over-budget round) is appended to the run's ``budget.jsonl``.
* **Ledger floors**: each train instruction carries, per site, the largest epsilon that record
  holds for it (``ledger-floors``); a site whose own ledger composes to less refuses to train.
* **Strict reply checking**: a reply with anything beyond the site contract
  (:data:`fedsynth.client.app.REPLY_METRICS`) is rejected, not averaged.
* **A quorum per round**: FedAvg's ``min_train_nodes`` is how many sites a round is *sent* to;
  a round is also *aggregated* only when at least ``min_sites`` sites answered with accepted
  weights. Fewer: the global model stays as it was and no checkpoint is written (the replying
  sites' spend stays in their ledgers and in the budget record).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.supercore import log

from fedsynth.client.app import LEDGER_FLOORS, REPLY_METRICS, WEIGHTS_LAYOUT
from fedsynth.client.packed_weights import WEIGHTS, Layout, layout_size, layout_to_json, unpack
from fedsynth.data.schema import Schema
from fedsynth.model.generator_configs import AnyGeneratorConfig
from fedsynth.server.budget import SPENT_NOT_AGGREGATED, site_epsilon_floors
from fedsynth.server.run import RunDirectory


def _metrics_problem(metrics: MetricRecord) -> str | None:
    if tuple(sorted(metrics.keys())) != tuple(sorted(REPLY_METRICS)):
        return f"unexpected metrics {sorted(metrics.keys())}"
    if any(not isinstance(value, int | float) for value in metrics.values()):
        return "metrics must be scalars"
    if any(not math.isfinite(float(value)) for value in metrics.values()):
        return "non-finite metrics"
    return None


def check_reply(message: Message, layout: Layout) -> str | None:
    """Why a training reply breaks the site contract, or None if it keeps to it."""
    content = message.content
    if set(content.keys()) != {"arrays", "metrics", "site"}:
        return f"unexpected records {sorted(content.keys())}"
    problem = _metrics_problem(content["metrics"])
    if problem is not None:
        return problem
    shapes = {name: tuple(array.shape) for name, array in content["arrays"].items()}
    if shapes != {WEIGHTS: (layout_size(layout),)}:
        return "arrays differ from the global model's packed parameters"
    if set(content["site"].keys()) != {"name"}:
        return f"unexpected site fields {sorted(content['site'].keys())}"
    # One diverged site must not turn the global model (and its checkpoint) into NaN.
    if any(not np.isfinite(array.numpy()).all() for array in content["arrays"].values()):
        return "non-finite weights"
    return None


def check_spend_only(message: Message) -> str | None:
    """Why a reply that reports a round's spend without weights breaks the contract (None: it keeps to it).

    Only the SecAgg+ grid makes one (:mod:`fedsynth.server.secure_aggregation`): its sites trained
    and spent, but the round's sum could not be unmasked, so their weights exist only masked.
    """
    content = message.content
    if set(content.keys()) != {"metrics", "site"} or set(content["site"].keys()) != {"name", "reason"}:
        return "not a spend-only reply"
    return _metrics_problem(content["metrics"])


class StrategyWrapper(Strategy):
    """Adds to ``strategy`` what a subclass overrides; everything else is the wrapped strategy's."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()


class RoundOffset(StrategyWrapper):
    """A resumed run's rounds keep their global numbers: Flower's ``start`` counts from 1."""

    def __init__(self, strategy: Strategy, offset: int) -> None:
        super().__init__(strategy)
        self.offset = offset

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_train(self.offset + server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.strategy.aggregate_train(self.offset + server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(self.offset + server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(self.offset + server_round, replies)


class SiteReplies(StrategyWrapper):
    """The sites' side of a round: ledger floors out, the reply contract, the budget record and
    the quorum in; only accepted replies reach the wrapped strategy."""

    def __init__(self, strategy: Strategy, run: RunDirectory, layout: Layout, min_sites: int) -> None:
        super().__init__(strategy)
        self.run = run
        self.layout = layout
        self.min_sites = min_sites
        self._sent: list[Message] = []
        # Which site each node is, learnt from its replies (earlier rounds of this run included),
        # so that an error the SuperLink writes on a dead node's behalf still names the site.
        self._site_names: dict[int, str] = {
            int(r["node_id"]): str(r["site"]) for r in run.budget_records() if "site" in r and "node_id" in r
        }

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        # Every site is told the largest epsilon this run ever recorded for it (public, aggregate
        # figures): a site whose ledger composes to less was reset, ledger and witness both, and refuses.
        config[LEDGER_FLOORS] = json.dumps(site_epsilon_floors(self.run.budget_records()))
        config[WEIGHTS_LAYOUT] = layout_to_json(self.layout)
        # Kept: the grid gives each message its id when it sends it, and replies (errors the
        # SuperLink makes for an unreachable node included) point back to that id.
        self._sent = list(self.strategy.configure_train(server_round, arrays, config, grid))
        return self._sent

    def _record_base(self, server_round: int, node_id: int, now: str) -> dict[str, Any]:
        """What every budget record says of its round and node (and the site, once known)."""
        base: dict[str, Any] = {"round": server_round, "node_id": node_id, "time": now}
        if node_id in self._site_names:
            base["site"] = self._site_names[node_id]
        return base

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        accepted: list[Message] = []
        records: list[dict[str, Any]] = []
        now = datetime.now(UTC).isoformat()
        destinations = {m.metadata.message_id: m.metadata.dst_node_id for m in self._sent if m.metadata.message_id}
        for message in replies:
            node_id = destinations.get(message.metadata.reply_to_message_id, message.metadata.src_node_id)
            base = self._record_base(server_round, node_id, now)
            if message.has_error():
                records.append({**base, "status": "error", "reason": message.error.reason})
                continue
            if check_spend_only(message) is None:  # trained and spent; its weights were not aggregated
                site = message.content["site"]
                self._site_names[node_id] = str(site["name"])
                reason = str(site["reason"])
                records.append({**base, "status": SPENT_NOT_AGGREGATED, "site": self._site_names[node_id],
                                "reason": reason, **message.content["metrics"]})  # fmt: skip
                continue
            problem = check_reply(message, self.layout)
            if problem is not None:
                log(WARNING, "Rejected reply from node %s: %s", message.metadata.src_node_id, problem)
                records.append({**base, "status": "rejected", "reason": problem})
                continue
            self._site_names[node_id] = str(message.content["site"]["name"])
            records.append({**base, "status": "ok", "site": self._site_names[node_id], **message.content["metrics"]})
            accepted.append(message)
        answered = {m.metadata.reply_to_message_id for m in replies}
        for message_id, node_id in destinations.items():
            if message_id not in answered:  # no reply at all within the round timeout
                base = self._record_base(server_round, node_id, now)
                records.append({**base, "status": "error", "reason": "no reply within the round timeout"})
        self.run.append_budget(records)
        if 0 < len(accepted) < self.min_sites:
            log(
                WARNING,
                "Round %s: %s site(s) returned weights, fewer than min_sites = %s; the global model is unchanged",
                server_round, len(accepted), self.min_sites,
            )  # fmt: skip
            return None, None
        arrays, metrics = self.strategy.aggregate_train(server_round, accepted)
        if arrays is None:
            log(WARNING, "Round %s: no site returned weights; the global model is unchanged", server_round)
        return arrays, metrics


class Checkpoints(StrategyWrapper):
    """A checkpoint with its SHA-256 manifest for every round the wrapped strategy aggregates."""

    def __init__(self, strategy: Strategy, run: RunDirectory, schema: Schema, model_config: AnyGeneratorConfig,
                 layout: Layout) -> None:  # fmt: skip
        super().__init__(strategy)
        self.run, self.schema, self.model_config, self.layout = run, schema, model_config, layout
        self.last_checkpoint = None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            sites = [(str(m.content["site"]["name"]), float(m.content["metrics"]["epsilon"])) for m in replies]
            info = {"round": server_round, "sites": [name for name, _ in sites], "epsilon_per_site": dict(sites)}
            self.last_checkpoint = self.run.save_checkpoint(
                server_round, unpack(arrays, self.layout), self.schema, self.model_config, info
            )
        return arrays, metrics


def mcm_fedavg(
    run: RunDirectory, schema: Schema, model_config: AnyGeneratorConfig, layout: Layout, round_offset: int = 0,
    min_sites: int = 2,
) -> tuple[Strategy, Checkpoints]:  # fmt: skip
    """The run's strategy (FedAvg weighted by each site's training records, wrapped), and its
    checkpoint wrapper, whose ``last_checkpoint`` is the run's latest aggregated model."""
    fedavg = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,  # evaluation with real rows is a separate, audited protocol
        min_train_nodes=min_sites,
        min_available_nodes=min_sites,
        weighted_by_key="num-examples",
    )
    checkpoints = Checkpoints(fedavg, run, schema, model_config, layout)
    return RoundOffset(SiteReplies(checkpoints, run, layout, min_sites), round_offset), checkpoints
