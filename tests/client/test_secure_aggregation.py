"""The site's side of SecAgg+: a site may require it, and refuses an update SecAgg+ would distort."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage

from fedsynth.client.app import _sites, handle_train, open_site
from fedsynth.client.secure_aggregation import (
    SecureAggregationRefusedError,
    SecureAggregationRequiredError,
    secure_aggregation_mod,
    within_range,
)
from tests.client.conftest import train_instruction, write_site

pytestmark = pytest.mark.usefixtures("server_identity")


def _context(site_dir, **state) -> Context:  # noqa: ANN001
    context = Context(run_id=1, node_id=1, node_config={"site-dir": str(site_dir)}, state=RecordDict(), run_config={})
    if state:
        context.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state)
    return context


def test_a_site_that_requires_secure_aggregation_refuses_a_plain_round_before_any_spend(whas500, tmp_path) -> None:
    frame, schema = whas500
    site_dir = write_site(
        tmp_path, frame.iloc[:250], schema,
        "[privacy]\ntarget_epsilon = 2.0\nrequire_secure_aggregation = true\n[training]\nlocal_epochs = 1\n",
    )  # fmt: skip
    try:
        with pytest.raises(SecureAggregationRequiredError) as refused:
            handle_train(train_instruction(schema), _context(site_dir))
        assert "hospital-a refuses plain training rounds" in str(refused.value)
        assert "[secure_aggregation] enabled = true" in str(refused.value)  # the coordinator's fix
        # A SecAgg+ record out of the protocol's order (no set-up, no key shares) is no way round it.
        masked = train_instruction(schema)
        masked.content[RECORD_KEY_CONFIGS] = ConfigRecord({})
        with pytest.raises(SecureAggregationRefusedError, match="out of the protocol's order"):
            handle_train(masked, _context(site_dir))
        assert open_site(site_dir).ledger.entries() == []  # nothing spent
    finally:
        _sites.clear()


def _setup(threshold: int, shares: int) -> Message:
    configs = {
        Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: shares, Key.SHARE_NUMBER: shares, Key.THRESHOLD: threshold,
        Key.CLIPPING_RANGE: 2.0, Key.TARGET_RANGE: 2**24, Key.MOD_RANGE: 2**32, Key.MAX_WEIGHT: 1000.0,
    }  # fmt: skip
    return Message(
        RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(configs)}), dst_node_id=7, message_type=MessageType.TRAIN
    )


def test_a_set_up_that_would_let_the_coordinator_unmask_one_site_alone_is_refused(tmp_path) -> None:
    def never(message, context):  # noqa: ANN001, ANN202
        raise AssertionError("the set-up stage never trains")

    for threshold, shares in ((1, 1), (1, 3), (4, 3)):
        with pytest.raises(SecureAggregationRefusedError, match=f"threshold {threshold} of {shares} shares"):
            secure_aggregation_mod(_setup(threshold, shares), _context(tmp_path), never)
    reply = secure_aggregation_mod(_setup(2, 3), _context(tmp_path), never)  # a protocol it takes part in
    assert set(reply.content[RECORD_KEY_CONFIGS].keys()) == {Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2}


def test_an_update_beyond_secaggs_range_is_clipped_at_the_site_and_a_non_finite_one_is_not_sent(tmp_path) -> None:
    context = _context(tmp_path, clipping_range=2.0, max_weight=1000.0)
    inside = np.array([3.0, -3.9, 0.5])  # x 500/1000: within 2.0
    assert np.array_equal(within_range(inside, 500, context, "hospital-a"), inside)
    clipped = within_range(np.array([5.0, -6.0, 0.5]), 500, context, "hospital-a")
    assert np.array_equal(clipped, [4.0, -4.0, 0.5])  # the largest update SecAgg+ quantises unclipped: 2 x 1000/500
    with pytest.raises(SecureAggregationRefusedError, match="not finite"):
        within_range(np.array([0.0, np.nan]), 10, context, "hospital-a")
