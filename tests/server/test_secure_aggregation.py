"""SecAgg+ rounds: the coordinator holds only the sum, which equals FedAvg within quantisation.

Three WHAS500 sites run the real ClientApp handler with the real SecAgg+ mods; the grid below
only carries messages between the coordinator and them in this process, each site keeping its
own node state as a SuperNode does. A spy inside each site's mods keeps its plain weights, so
the test knows what FedAvg would have produced and what the coordinator must never see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from fedsynth.client.app import REPLY_METRICS, handle_train
from fedsynth.client.packed_weights import WEIGHTS, layout_of
from fedsynth.client.secure_aggregation import SITE_NAME_FIELD, secure_aggregation_mod
from fedsynth.model.config import MCMConfig
from fedsynth.model.generators import new_generator
from fedsynth.server.config import SecureAggregationConfig
from fedsynth.server.secure_aggregation import SecureAggregationGrid
from fedsynth.server.strategy import check_reply, check_spend_only
from tests.client.conftest import train_instruction, write_site
from tests.server.in_process import InProcessSites

pytestmark = pytest.mark.usefixtures("server_identity")

MODEL = MCMConfig(hidden=16, n_bins=16)
NODES = (11, 22, 33)


@pytest.fixture()
def federation(whas500, tmp_path):
    """Three sites of 150, 130 and 180 WHAS500 rows; the spy keeps each site's plain train reply."""
    frame, schema = whas500
    dirs, start = {}, 0
    for node, rows in zip(NODES, (150, 130, 180), strict=True):
        dirs[node] = str(write_site(tmp_path / f"site-{node}", frame.iloc[start : start + rows], schema,
                                    "[privacy]\ntarget_epsilon = 2.0\n[training]\nlocal_epochs = 1\n"))  # fmt: skip
        (tmp_path / f"site-{node}" / "site.toml").write_text(
            (tmp_path / f"site-{node}" / "site.toml").read_text().replace("hospital-a", f"hospital-{node}")
        )
        start += rows
    plain: dict[int, Message] = {}

    def spy(message: Message, context: Context, call_next):  # noqa: ANN001, ANN202
        reply = call_next(message, context)
        plain[context.node_id] = reply
        return reply

    app = ClientApp()
    app.train(mods=[secure_aggregation_mod, spy])(lambda message, context: handle_train(message, context))
    grid = InProcessSites(app, dirs)
    yield grid, plain, schema
    grid.close()


def _instructions(schema, nodes=NODES) -> list[Message]:
    content = train_instruction(schema, config=MODEL).content  # one for all, as FedAvg does
    return [Message(content, dst_node_id=node, message_type=MessageType.TRAIN, group_id="1") for node in nodes]


def _fedavg(plain: dict[int, Message], nodes) -> np.ndarray:
    weights = np.array([plain[n].content["metrics"]["num-examples"] for n in nodes], dtype=np.float64)
    vectors = np.stack([plain[n].content["arrays"][WEIGHTS].numpy().astype(np.float64) for n in nodes])
    return (weights[:, None] * vectors).sum(axis=0) / weights.sum()


def _quantisation_bound(config: SecureAggregationConfig, plain: dict[int, Message], nodes) -> float:
    """SecAgg+'s worst case per entry: one quantisation step per site (stochastic rounding of the
    weighted update), over the sum of the weights, plus float32 rounding of the model."""
    step = 2 * config.clipping_range / config.quantization_range
    ratios = [round(plain[n].content["metrics"]["num-examples"] / config.max_weight * config.quantization_range)
              / config.quantization_range for n in nodes]  # fmt: skip
    return len(nodes) * step / sum(ratios) + 1e-5


def test_the_sum_equals_fedavg_and_the_coordinator_never_holds_a_site_update(federation) -> None:
    sites, plain, schema = federation
    config = SecureAggregationConfig(enabled=True)
    instructions = _instructions(schema)
    layout = layout_of(new_generator(MODEL).build(schema).network_.state_dict())

    replies = list(SecureAggregationGrid(sites, config).send_and_receive(instructions, timeout=60))

    assert sorted(r.metadata.src_node_id for r in replies) == sorted(NODES)
    assert {r.metadata.reply_to_message_id for r in replies} == {m.metadata.message_id for m in instructions}
    for reply in replies:  # the strategy sees the site contract: the sum, and each site's own scalars
        assert check_reply(reply, layout) is None
        node = reply.metadata.src_node_id
        assert dict(reply.content["metrics"]) == dict(plain[node].content["metrics"])
        assert reply.content["site"]["name"] == f"hospital-{node}"
    aggregate = replies[0].content["arrays"][WEIGHTS].numpy()
    assert all(np.array_equal(r.content["arrays"][WEIGHTS].numpy(), aggregate) for r in replies)
    expected = _fedavg(plain, NODES)
    bound = _quantisation_bound(config, plain, NODES)
    assert np.abs(aggregate - expected).max() <= bound
    start = instructions[0].content["arrays"][WEIGHTS].numpy()
    assert np.abs(expected - start).max() > 100 * bound  # the rounds moved the weights: the check can fail

    # What the coordinator received: four stages per site, scalars and key material only.
    assert sorted(stage for stage, _ in sites.received) == sorted(
        [Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK] * 3
    )
    expected_fields = {
        Stage.SETUP: {Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2},
        Stage.SHARE_KEYS: {Key.DESTINATION_LIST, Key.CIPHERTEXT_LIST},
        Stage.COLLECT_MASKED_VECTORS: {Key.MASKED_PARAMETERS},
        Stage.UNMASK: {Key.NODE_ID_LIST, Key.SHARE_LIST},
    }
    for stage, reply in sites.received:
        assert not reply.has_error()
        assert sum(len(record) for record in reply.content.array_records.values()) == 0  # no weights at all
        assert set(reply.content.config_records[RECORD_KEY_CONFIGS].keys()) == expected_fields[stage]
        if stage == Stage.COLLECT_MASKED_VECTORS:
            assert set(reply.content.keys()) == {
                "fitres.parameters", "fitres.num_examples", "fitres.metrics", "fitres.status", RECORD_KEY_CONFIGS
            }  # fmt: skip
            fields = dict(reply.content["fitres.metrics"])
            assert set(fields) == {*REPLY_METRICS, SITE_NAME_FIELD}
            assert all(isinstance(v, int | float) for k, v in fields.items() if k != SITE_NAME_FIELD)
            # The masked vector is uniform noise to the coordinator: unrelated to the site's update.
            from flwr.common import bytes_to_ndarray

            masked = bytes_to_ndarray(reply.content[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS][1]).astype(np.float64)
            node = reply.metadata.src_node_id
            update = plain[node].content["arrays"][WEIGHTS].numpy().astype(np.float64) - start
            assert abs(np.corrcoef(masked, update)[0, 1]) < 0.1
            assert masked.std() > 0.2 * 2**32 / np.sqrt(12)  # spread over the whole modulus


@pytest.mark.parametrize("stage", [Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS])
def test_a_site_that_drops_before_training_leaves_the_sum_of_the_others(federation, stage) -> None:
    sites, plain, schema = federation
    config = SecureAggregationConfig(enabled=True)
    sites.silent_from[33] = stage  # down from this stage on: its masks, if any, are removed

    replies = list(SecureAggregationGrid(sites, config).send_and_receive(_instructions(schema), timeout=60))

    assert sorted(r.metadata.src_node_id for r in replies) == [11, 22]  # silent: no reply, a timeout record
    assert not any(r.has_error() for r in replies)
    aggregate = replies[0].content["arrays"][WEIGHTS].numpy()
    assert 33 not in plain  # it never trained
    assert np.abs(aggregate - _fedavg(plain, [11, 22])).max() <= _quantisation_bound(config, plain, [11, 22])


def test_too_few_sites_to_unmask_loses_the_round_and_says_who_trained(federation) -> None:
    sites, plain, schema = federation
    sites.silent_from[22] = Stage.COLLECT_MASKED_VECTORS
    sites.silent_from[33] = Stage.COLLECT_MASKED_VECTORS  # one site left: below the threshold of two

    replies = list(
        SecureAggregationGrid(sites, SecureAggregationConfig(enabled=True)).send_and_receive(
            _instructions(schema), timeout=60
        )
    )

    # hospital-11 trained and spent; its weights exist only masked: a spend without weights.
    assert [r.metadata.src_node_id for r in replies] == [11]
    (reply,) = replies
    assert check_spend_only(reply) is None and "arrays" not in reply.content
    assert dict(reply.content["metrics"]) == dict(plain[11].content["metrics"])
    assert "not aggregated" in reply.content["site"]["reason"]


def test_an_update_beyond_the_clipping_range_is_clipped_at_the_site_and_the_round_goes_on(federation) -> None:
    sites, plain, schema = federation
    config = SecureAggregationConfig(enabled=True, clipping_range=1e-4)  # far below a round's update
    instructions = _instructions(schema)

    replies = list(SecureAggregationGrid(sites, config).send_and_receive(instructions, timeout=60))

    assert len(replies) == 3 and not any(r.has_error() for r in replies)
    start = instructions[0].content["arrays"][WEIGHTS].numpy().astype(np.float64)
    moved = np.abs(replies[0].content["arrays"][WEIGHTS].numpy() - start)
    # Each site clipped its update to 1e-4 x max_weight / its records; so is their weighted mean.
    largest = max(
        config.clipping_range * config.max_weight / plain[n].content["metrics"]["num-examples"] for n in NODES
    )
    assert moved.max() <= largest * (1 + 1e-3) and moved.max() < np.abs(_fedavg(plain, NODES) - start).max()


def test_a_site_larger_than_max_weight_refuses_before_it_spends(federation) -> None:
    from fedsynth.client.app import open_site

    sites, plain, schema = federation
    replies = list(
        SecureAggregationGrid(sites, SecureAggregationConfig(enabled=True, max_weight=100)).send_and_receive(
            _instructions(schema), timeout=60
        )
    )
    assert all(r.has_error() and "secure_aggregation.max_weight = 100" in r.error.reason for r in replies)
    assert plain == {}  # no site trained
    for context in sites.contexts.values():
        assert open_site(Path(str(context.node_config["site-dir"]))).ledger.entries() == []


def test_other_messages_pass_through_unchanged(federation) -> None:
    sites, _, schema = federation

    class Recorder(InProcessSites):
        def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
            self.passed = list(messages)
            return []

    recorder = Recorder(sites.app, {})
    query = Message(RecordDict(), dst_node_id=11, message_type=MessageType.QUERY)
    SecureAggregationGrid(recorder, SecureAggregationConfig(enabled=True)).send_and_receive([query])
    assert recorder.passed == [query]


def test_a_malformed_reply_loses_the_round_not_the_run(federation) -> None:
    sites, plain, schema = federation

    class Tampered(InProcessSites):
        def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
            replies = list(super().send_and_receive(messages, timeout=timeout))
            for reply in replies:  # site 33 answers the set-up without its public keys
                if reply.metadata.src_node_id == 33 and Key.PUBLIC_KEY_1 in reply.content[RECORD_KEY_CONFIGS]:
                    del reply.content[RECORD_KEY_CONFIGS][Key.PUBLIC_KEY_1]
            return replies

    tampered = Tampered(sites.app, {n: c.node_config["site-dir"] for n, c in sites.contexts.items()})
    grid = SecureAggregationGrid(tampered, SecureAggregationConfig(enabled=True))
    assert list(grid.send_and_receive(_instructions(schema), timeout=60)) == []  # no site trained; nothing raised
    assert plain == {}
