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
The site refuses, before it trains, a protocol that would let the coordinator unmask its update
alone (a threshold under 2, fewer key shares than the threshold) and a record count above
SecAgg+'s maximum weight; an update entry beyond SecAgg+'s clipping range is clipped at the
site (post-processing of its DP weights) and logged, rather than refused after the spend.
"""

from __future__ import annotations

from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from flwr.supercore import log

from fedsynth.client.packed_weights import WEIGHTS

# The site's name in the legacy metrics SecAgg+ forwards (beside the REPLY_METRICS scalars).
SITE_NAME_FIELD = "site-name"
MIN_THRESHOLD = 2  # shares needed to rebuild a site's secrets: never the site's own alone


class SecureAggregationRequiredError(RuntimeError):
    """The site's privacy.require_secure_aggregation refuses a plain training round."""


class SecureAggregationRefusedError(RuntimeError):
    """A SecAgg+ round the site will not train in (checked before anything is spent)."""


def check_secure_aggregation(
    instruction: Message, context: Context, site_name: str, required: bool, n_records: int
) -> None:
    """Before training: refuse a plain round at a site that requires SecAgg+, and a SecAgg+
    round whose protocol or weighting this site's update would not survive."""
    if RECORD_KEY_CONFIGS not in instruction.content:
        if required:
            raise SecureAggregationRequiredError(
                f"{site_name} refuses plain training rounds: its site.toml sets privacy.require_secure_aggregation "
                "= true; the coordinator must set [secure_aggregation] enabled = true in its federation config"
            )
        return
    state = context.state.config_records.get(RECORD_KEY_STATE)
    configs = instruction.content.config_records[RECORD_KEY_CONFIGS]
    if state is None or Key.CIPHERTEXT_LIST not in configs:
        raise SecureAggregationRefusedError(f"{site_name}: a SecAgg+ training message out of the protocol's order")
    shares = len(configs[Key.CIPHERTEXT_LIST]) + 1  # the other sites' shares, and its own
    if shares < int(state["threshold"]):
        raise SecureAggregationRefusedError(
            f"{site_name}: SecAgg+ round with {shares} key shares, fewer than its threshold {state['threshold']}"
        )
    if n_records > float(state["max_weight"]):
        raise SecureAggregationRefusedError(
            f"{site_name} trains on {n_records} records, more than secure_aggregation.max_weight = "
            f"{float(state['max_weight']):g}; the coordinator must raise it to at least the largest site's records"
        )


def check_setup(message: Message, site_name: str) -> None:
    """Refuse a SecAgg+ set-up under which the coordinator could unmask this site's update alone."""
    configs = message.content.config_records[RECORD_KEY_CONFIGS]
    if configs.get(Key.STAGE) != Stage.SETUP:
        return
    threshold, shares = int(configs.get(Key.THRESHOLD, 0)), int(configs.get(Key.SHARE_NUMBER, 0))
    if threshold < MIN_THRESHOLD or shares < threshold:
        raise SecureAggregationRefusedError(
            f"{site_name}: SecAgg+ set-up with threshold {threshold} of {shares} shares; this site takes part "
            f"only with a threshold of at least {MIN_THRESHOLD}, and no more than the shares"
        )


def secure_aggregation_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+ for a train instruction that asks for it; any other message passes unchanged."""
    if message.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in message.content:
        return call_next(message, context)
    check_setup(message, f"node {message.metadata.dst_node_id}")

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
    metrics = reply.content["metrics"]
    site = str(reply.content["site"]["name"])
    update = within_range(new - start, int(metrics["num-examples"]), context, site)
    fields = {**dict(metrics), SITE_NAME_FIELD: site}
    content = RecordDict(
        {
            "fitres.parameters": ArrayRecord([update]),
            "fitres.num_examples": MetricRecord({"num_examples": int(metrics["num-examples"])}),
            "fitres.metrics": ConfigRecord(fields),
            "fitres.status": ConfigRecord({"code": 0, "message": "Success"}),
        }
    )
    return Message(content=content, reply_to=instruction)


def within_range(update: np.ndarray, num_examples: int, context: Context, site: str) -> np.ndarray:
    """``update`` with every entry inside what SecAgg+ quantises without clipping (it scales the
    update by ``num_examples / max_weight`` and clips that to its clipping range); clipped here,
    where the site logs it, instead. A non-finite update is not sent."""
    if not np.isfinite(update).all():
        raise SecureAggregationRefusedError(f"{site}: the round's weight update is not finite; it is not sent")
    state = context.state.config_records[RECORD_KEY_STATE]
    bound = float(state["clipping_range"]) * float(state["max_weight"]) / max(num_examples, 1)
    outside = int((np.abs(update) > bound).sum())
    if outside:
        log(
            WARNING,
            "%s: %d weight-update entries beyond SecAgg+'s range (%.3g) were clipped to it; the coordinator can "
            "raise secure_aggregation.clipping_range", site, outside, bound,
        )  # fmt: skip
    return np.clip(update, -bound, bound)
