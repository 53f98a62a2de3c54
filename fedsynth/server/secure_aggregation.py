"""Secure aggregation of the training rounds: Flower's SecAgg+ workflow under the run's strategy.

With ``[secure_aggregation] enabled = true`` the coordinator's grid is wrapped in
:class:`SecureAggregationGrid`. A training round's instructions (one per site, from the
strategy's ``configure_train``) are then not sent as they are: Flower's ``SecAggPlusWorkflow``
runs its four exchanges with the sites (public keys, encrypted key shares, masked updates,
unmasking shares) and delivers each site's instruction in its third. The coordinator receives
each site's scalars and a masked vector, and learns the weighted sum of the updates only: no
site's weights, before or after the sum is unmasked.

The wrapper then answers the strategy as the plain grid would: one reply per site that trained,
keeping to the site contract (``fedsynth.server.strategy.check_reply``), whose weights are the
securely aggregated model and whose metrics are the site's own. FedAvg's weighted mean of equal
vectors is that vector, so the rest of the strategy (the budget record, the quorum, the
checkpoints) is unchanged. What the coordinator can no longer do is look at one site's
weights: a site refuses an update that is not finite or that SecAgg+'s clipping would distort
(:mod:`fedsynth.client.secure_aggregation`), and an aggregate that is not finite fails the
round's reply check as a whole.

Sites that drop out after sending their keys are tolerated up to ``num_shares -
reconstruction_threshold``; with more, the sum cannot be unmasked and the round is lost (the
sites that trained still spent: each one's spend is recorded as "spent", not aggregated).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import WARNING
from typing import Any
from uuid import uuid4

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common import FitIns, FitRes, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server import ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.client.packed_weights import WEIGHTS
from fedsynth.client.secure_aggregation import SITE_NAME_FIELD
from fedsynth.server.config import SecureAggregationConfig
from fedsynth.server.prompt_grid import GridWrapper

# Flower's error code for a ClientApp exception; the halted-round replies reuse it.
CLIENT_APP_ERROR = 1
MODULUS_RANGE = 2**32  # SecAgg+'s default (and largest) modulus: masks and sums wrap around it


class SecureAggregationGrid(GridWrapper):
    """``grid`` with every training round run under SecAgg+; other messages pass unchanged."""

    def __init__(self, grid: Grid, config: SecureAggregationConfig) -> None:
        super().__init__(grid)
        self.config = config

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if not messages or any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            return self.grid.send_and_receive(messages, timeout=timeout)
        return secure_round(self.grid, messages, self.config, timeout)


def secure_round(
    grid: Grid, instructions: list[Message], config: SecureAggregationConfig, timeout: float | None
) -> list[Message]:
    """Run one training round under SecAgg+; the strategy's replies, one per site that trained."""
    if len(instructions) * config.quantization_range >= MODULUS_RANGE:
        raise ValueError(
            f"secure_aggregation.quantization_range = {config.quantization_range} is too large for "
            f"{len(instructions)} sites: the sum of their quantised updates would wrap around 2**32; give at most "
            f"2**{(MODULUS_RANGE // len(instructions)).bit_length() - 2}"
        )
    for instruction in instructions:  # as Flower's grids do when they push: replies point back to it
        instruction.metadata.__dict__["_message_id"] = str(uuid4())
    by_node = {m.metadata.dst_node_id: m for m in instructions}
    server_round = int(instructions[0].content["config"]["server-round"])
    recorder = StageReplies(grid)
    total = SumOnly(grid, list(by_node))
    workflow = MessageSecAggPlus(
        {node: m.content for node, m in by_node.items()},
        num_shares=config.num_shares,
        reconstruction_threshold=config.reconstruction_threshold,
        max_weight=config.max_weight,
        clipping_range=config.clipping_range,
        quantization_range=config.quantization_range,
        modulus_range=MODULUS_RANGE,
        timeout=timeout,
    )
    context = LegacyContext(
        Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=total,
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    try:
        workflow(recorder, context)
    except Exception as exc:  # a malformed reply breaks Flower's workflow: the round is lost, not the run
        log(WARNING, "Round %s: SecAgg+ failed (%s: %s); the round is not aggregated", server_round,
            type(exc).__name__, exc)  # fmt: skip
        total.update = None
    start = instructions[0].content["arrays"][WEIGHTS].numpy()  # every site trains from the same weights
    aggregate = None if total.update is None else (start.astype(np.float64) + total.update).astype(np.float32)
    if aggregate is None:
        log(WARNING, "Round %s: SecAgg+ could not unmask the sum; the global model is unchanged", server_round)
    return strategy_replies(by_node, recorder, aggregate)


class MessageSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow delivering each site's own message-API train instruction (its
    global weights and config) in the masked-vectors stage, instead of a legacy ``FitIns``."""

    def __init__(self, contents: Mapping[int, RecordDict], **settings: Any) -> None:
        super().__init__(**settings)
        self.contents = contents

    def setup_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        carried_on = super().setup_stage(grid, context, state)
        # A RecordDict of its own per site: Flower's strategies give every site the same content
        # object, and this stage adds each site's own key shares to it.
        state.nid_to_fitins = {node: RecordDict(dict(self.contents[node].items())) for node in state.nid_to_fitins}
        return carried_on

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        """Flower's stage, then the sites that never shared keys are forgotten. Why: the workflow
        keeps them among the sampled sites and neighbours, and at unmasking asks the others for
        shares of their secrets, which they never sent; one site down at the start of a round
        then lost the whole round. Having shared nothing, they are in no other site's masks."""
        carried_on = super().share_keys_stage(grid, context, state)
        joined = set(state.active_node_ids)
        state.sampled_node_ids = joined
        state.nid_to_neighbours = {
            node: neighbours & joined for node, neighbours in state.nid_to_neighbours.items() if node in joined
        }
        return carried_on and self._check_threshold(state)


class SumOnly(LegacyStrategy):
    """The legacy strategy SecAgg+ reports to: it selects the round's sites and keeps the sum
    (SecAgg+ hands ``aggregate_fit`` every result with the same, aggregated, parameters)."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self.grid, self.node_ids = grid, node_ids
        self.update: np.ndarray | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        run_id = self.grid.run.run_id
        return [(GridClientProxy(node, self.grid, run_id), FitIns(Parameters([], ""), {})) for node in self.node_ids]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Any]]:
        if results:
            self.update = parameters_to_ndarrays(results[0][1].parameters)[0].astype(np.float64)
        return None, {}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


class StageReplies(GridWrapper):
    """``grid``, keeping each site's reply to the masked-vectors stage (its scalars: the masked
    vector's arrays are emptied at the site) and the first error each site answered with."""

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.trained: dict[int, Message] = {}
        self.errors: dict[int, Message] = {}

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        stages = {str(m.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]) for m in messages}
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.errors.setdefault(node, reply)
            elif stages == {Stage.COLLECT_MASKED_VECTORS}:
                self.trained[node] = reply
        return replies


def strategy_replies(
    instructions: Mapping[int, Message], recorder: StageReplies, aggregate: np.ndarray | None
) -> list[Message]:
    """One reply per site that answered: the aggregate with its own scalars, or its error."""
    replies = []
    for node, instruction in instructions.items():
        trained = recorder.trained.get(node)
        if trained is None:
            failed = recorder.errors.get(node)
            if failed is not None:  # refused or failed at some stage; a silent site gets no reply
                replies.append(Message(failed.error, reply_to=instruction))
            continue
        fields = dict(trained.content.config_records["fitres.metrics"])
        site = str(fields.pop(SITE_NAME_FIELD, ""))
        try:
            metrics = MetricRecord(fields)
        except (TypeError, ValueError):
            reason = f"{site or 'a site'}'s reply breaks the site contract: its metrics are not all scalars"
            replies.append(Message(Error(CLIENT_APP_ERROR, reason), reply_to=instruction))
            continue
        if aggregate is None:  # its spend is recorded as spent, not aggregated (fedsynth.server.strategy)
            reason = "trained, but SecAgg+ could not unmask the round's sum (too few sites stayed): not aggregated"
            content = RecordDict({"metrics": metrics, "site": ConfigRecord({"name": site, "reason": reason})})
        else:
            arrays = ArrayRecord({WEIGHTS: Array(aggregate)})
            content = RecordDict({"arrays": arrays, "metrics": metrics, "site": ConfigRecord({"name": site})})
        replies.append(Message(content=content, reply_to=instruction))
    return replies
