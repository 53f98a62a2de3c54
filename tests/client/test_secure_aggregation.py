"""The site's side of SecAgg+: a site may require it, and refuses an update SecAgg+ would distort."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE

from fedsynth.client.app import _sites, handle_train, open_site
from fedsynth.client.secure_aggregation import (
    SecureAggregationRequiredError,
    UpdateOutOfRangeError,
    check_update_range,
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
        assert open_site(site_dir).ledger.entries() == []  # nothing spent
        # The same instruction under SecAgg+ (its config record present) reaches training.
        masked = train_instruction(schema)
        masked.content[RECORD_KEY_CONFIGS] = ConfigRecord({})
        reply = handle_train(masked, _context(site_dir))
        assert reply.content["metrics"]["steps"] > 0
    finally:
        _sites.clear()


def test_an_update_secagg_would_clip_or_that_is_not_finite_is_refused(tmp_path) -> None:
    context = _context(tmp_path, clipping_range=2.0, max_weight=1000.0)
    check_update_range(np.full(10, 3.0), 500, context)  # 3 x 500/1000 = 1.5: inside the range
    with pytest.raises(UpdateOutOfRangeError, match="reaches 2.5 after SecAgg"):
        check_update_range(np.full(10, 5.0), 500, context)
    with pytest.raises(UpdateOutOfRangeError, match="more than secure_aggregation.max_weight = 1000"):
        check_update_range(np.zeros(10), 1001, context)
    with pytest.raises(UpdateOutOfRangeError, match="not finite"):
        check_update_range(np.array([0.0, np.nan]), 10, context)
