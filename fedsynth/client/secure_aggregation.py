"""Secure aggregation at the site: Flower's SecAgg+ client mod around the train handler.

When the coordinator runs a round under SecAgg+ (:mod:`fedsynth.server.secure_aggregation`),
its train instructions carry Flower's ``secaggplus_configs`` record and the round takes four
exchanges: public keys, encrypted key shares, the masked update, the shares that unmask the
sum. Only the third trains. :func:`secure_aggregation_mod` hands those messages to Flower's
``secaggplus_mod``, which masks what :func:`masked_update` makes of the site's train reply:

* the update is the new weights minus the global weights the instruction carried, so it fits
  SecAgg+'s quantisation range, and the coordinator adds the global weights back;
* the site's scalars (the reply contract's metrics and its name) travel as the legacy
  ``FitRes`` fields SecAgg+ forwards, and its weights only as the masked vector.

A train instruction without that record is a plain round and goes straight to the handler.
A site refuses an update SecAgg+ would distort (clipped or not finite) instead of sending it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE

from fedsynth.client.packed_weights import WEIGHTS

# The site's name in the legacy metrics SecAgg+ forwards (beside the REPLY_METRICS scalars).
SITE_NAME_FIELD = "site-name"


class SecureAggregationRequiredError(RuntimeError):
    """The site's privacy.require_secure_aggregation refuses a plain training round."""


def check_secure_aggregation(instruction: Message, site_name: str, required: bool) -> None:
    """Refuse a plain training round at a site that requires SecAgg+ (before anything is spent)."""
    if required and RECORD_KEY_CONFIGS not in instruction.content:
        raise SecureAggregationRequiredError(
            f"{site_name} refuses plain training rounds: its site.toml sets privacy.require_secure_aggregation = "
            "true; the coordinator must set [secure_aggregation] enabled = true in its federation config"
        )


class UpdateOutOfRangeError(RuntimeError):
    """SecAgg+ would clip this site's update: it is refused rather than silently distorted."""


def secure_aggregation_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+ for a train instruction that asks for it; any other message passes unchanged."""
    if message.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in message.content:
        return call_next(message, context)

    def train_then_mask(instruction: Message, node_context: Context) -> Message:
        return masked_update(instruction, call_next(instruction, node_context), node_context)

    return secaggplus_mod(message, context, train_then_mask)


def masked_update(instruction: Message, reply: Message, context: Context) -> Message:
    """The site's train reply as the legacy ``FitRes`` record SecAgg+ masks: the weight update
    (new minus global), the record count as its weight, the scalars and the site's name."""
    if reply.has_error():
        return reply
    new = reply.content["arrays"][WEIGHTS].numpy().astype(np.float64)
    start = instruction.content["arrays"][WEIGHTS].numpy().astype(np.float64)
    update = new - start
    metrics = reply.content["metrics"]
    check_update_range(update, int(metrics["num-examples"]), context)
    fields = {**dict(metrics), SITE_NAME_FIELD: str(reply.content["site"]["name"])}
    content = RecordDict(
        {
            "fitres.parameters": ArrayRecord([update]),
            "fitres.num_examples": MetricRecord({"num_examples": int(metrics["num-examples"])}),
            "fitres.metrics": ConfigRecord(fields),
            "fitres.status": ConfigRecord({"code": 0, "message": "Success"}),
        }
    )
    return Message(content=content, reply_to=instruction)


def check_update_range(update: np.ndarray, num_examples: int, context: Context) -> None:
    """Refuse an update SecAgg+ would clip: it scales the update by ``num_examples / max_weight``
    and clips that to its clipping range before quantising (set-up values in the node state)."""
    state = context.state.config_records[RECORD_KEY_STATE]
    clipping_range, max_weight = float(state["clipping_range"]), float(state["max_weight"])
    if not np.isfinite(update).all():
        raise UpdateOutOfRangeError("the round's weight update is not finite; it is not sent")
    if num_examples > max_weight:
        raise UpdateOutOfRangeError(
            f"this site trains on {num_examples} records, more than secure_aggregation.max_weight = {max_weight:g}; "
            "the coordinator must raise it to at least the largest site's training records"
        )
    largest = float(np.abs(update).max(initial=0.0)) * num_examples / max_weight
    if largest > clipping_range:
        raise UpdateOutOfRangeError(
            f"the round's weight update reaches {largest:.3g} after SecAgg+'s weighting, beyond its clipping range "
            f"{clipping_range:g}; the coordinator must raise secure_aggregation.clipping_range"
        )
