"""Only weights, counts, scalar metrics, aggregates and DP-noised tables leave a site: every message type a site sends.

A site sends these kinds of message: the reply to a train instruction, the replies to the
audit, evaluation, marginals and head-slope queries, and an error reply (built by Flower from the
exception, e.g. an over-budget refusal). Under SecAgg+ a training round's four stage replies
(keys, encrypted shares, masked update, unmasking shares) are checked in
tests/server/test_secure_aggregation.py. Each is checked field by field against its contract
(the train reply against the global model's parameters and the scalar whitelist), and the
server's own checks reject anything more.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from fedsynth.client.app import REPLY_METRICS, WEIGHTS_LAYOUT, _sites, handle_train
from fedsynth.client.ledger import BudgetExceededError
from fedsynth.client.packed_weights import layout_from_json, layout_size, pack, unpack
from fedsynth.data.io import write_table
from fedsynth.model.ck4gen import CK4GenConfig
from fedsynth.model.config import MCMConfig
from fedsynth.model.generators import config_to_dict, new_generator
from fedsynth.model.medvae import MedVAEConfig
from fedsynth.server.strategy import check_reply
from tests.client.conftest import train_instruction

pytestmark = pytest.mark.usefixtures("server_identity")

GENERATOR_CONFIGS = [
    MCMConfig(hidden=16, n_bins=16),
    MedVAEConfig(hidden=(16, 8), latent=4, n_bins=16),
    CK4GenConfig(hidden=(16, 8), latent=4, n_bins=16, teacher="joint"),
]
GENERATOR_IDS = ["mcm", "medvae", "ck4gen"]


def _instruction(schema, server_round: int, planned_rounds: int = 2, config=None) -> tuple[Message, list]:
    message = train_instruction(schema, server_round, planned_rounds, config=config)
    return message, layout_from_json(str(message.content["config"][WEIGHTS_LAYOUT]))


def _context(site_dir) -> Context:
    return Context(run_id=1, node_id=1, node_config={"site-dir": str(site_dir)}, state=RecordDict(), run_config={})


@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=GENERATOR_IDS)
def test_train_reply_holds_only_weights_a_count_and_scalars(whas500, site_dir, config) -> None:
    message, layout = _instruction(whas500[1], server_round=1, config=config)
    reply = handle_train(message, _context(site_dir))
    content = reply.content
    assert set(content.keys()) == {"arrays", "metrics", "site"}
    arrays = content["arrays"]
    # exactly the model's parameters, packed into one vector
    assert {name: tuple(a.shape) for name, a in arrays.items()} == {"weights": (layout_size(layout),)}
    state = unpack(arrays, layout)
    assert [(name, tuple(t.shape)) for name, t in state.items()] == layout
    assert isinstance(content["metrics"], MetricRecord)
    assert tuple(content["metrics"].keys()) == REPLY_METRICS
    assert all(isinstance(v, int | float) for v in content["metrics"].values())
    assert dict(content["site"]) == {"name": "hospital-a"}  # the custodian's label, not data
    assert content["metrics"]["num-examples"] == 200  # a count: 250 rows minus the 20% holdout
    # no parameter tensor has a dimension that grows with the site's records
    assert all(200 not in shape and 250 not in shape for _, shape in layout)
    assert check_reply(reply, layout) is None


def test_the_server_rejects_a_reply_carrying_anything_more(whas500, site_dir) -> None:
    message, shapes = _instruction(whas500[1], server_round=1)
    reply = handle_train(message, _context(site_dir))
    leaky = RecordDict(dict(reply.content.items()))
    leaky["rows"] = ArrayRecord({"x": torch.zeros(5, 3)})
    assert "unexpected records" in check_reply(Message(content=leaky, reply_to=message), shapes)
    extra_metric = RecordDict(dict(reply.content.items()))
    extra_metric["metrics"] = MetricRecord({**dict(reply.content["metrics"]), "age-of-patient-1": 71.0})
    assert "unexpected metrics" in check_reply(Message(content=extra_metric, reply_to=message), shapes)
    for arrays in (
        ArrayRecord({"weights": torch.zeros(layout_size(shapes) + 5)}),  # more numbers than the model has
        ArrayRecord(unpack(reply.content["arrays"], shapes)),  # unpacked: arrays the contract does not name
    ):
        other = RecordDict(dict(reply.content.items()))
        other["arrays"] = arrays
        assert "arrays differ" in check_reply(Message(content=other, reply_to=message), shapes)


def test_an_over_budget_round_raises_so_only_an_error_leaves(whas500, site_dir) -> None:
    rounds = []
    with pytest.raises(BudgetExceededError) as refused:
        for server_round in range(1, 10):  # planned for 2 rounds: the third must be refused
            message, _ = _instruction(whas500[1], server_round=server_round, planned_rounds=2)
            rounds.append(handle_train(message, _context(site_dir)))
    assert len(rounds) == 2
    # the error text carries only budget figures: no record, no data value
    assert "refused: round 3" in str(refused.value)


def _query(schema, generator_config=None, **config) -> Message:  # type: ignore[no-untyped-def]
    model = new_generator(generator_config or GENERATOR_CONFIGS[0]).build(schema)
    settings = {"model-config": json.dumps(config_to_dict(model.config)), "seed": 3, **config}
    content = RecordDict({"arrays": ArrayRecord(model.network_.state_dict()), "config": ConfigRecord(settings)})
    return Message(content=content, dst_node_id=1, message_type=MessageType.QUERY)


@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=GENERATOR_IDS)
def test_audit_reply_holds_only_the_site_name_and_aggregates(whas500, site_dir, config) -> None:
    from fedsynth.client.app import AUDIT_RECORD, handle_query
    from fedsynth.client.audit import check_audit_result

    reply = handle_query(_query(whas500[1], config, task="audit"), _context(site_dir))
    assert set(reply.content.keys()) == {AUDIT_RECORD}
    record = reply.content[AUDIT_RECORD]
    assert isinstance(record, ConfigRecord) and set(record.keys()) == {"site", "result"}
    result = json.loads(str(record["result"]))
    check_audit_result(result, max_rows=250)  # nothing row-level
    assert result["n_train"] == 200 and result["n_holdout"] == 50 and result["n_synthetic"] == 200
    assert len(reply.content.array_records) == 0 and len(reply.content.metric_records) == 0


@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=GENERATOR_IDS)
def test_evaluation_reply_holds_only_the_site_name_and_aggregates(whas500, site_dir, config) -> None:
    from fedsynth.client.app import EVALUATION_RECORD, SiteError, handle_query
    from fedsynth.client.audit_log import AuditRefusedError
    from fedsynth.client.evaluation import check_evaluation_result

    with pytest.raises(AuditRefusedError, match=r"answers only at the evaluation horizons it declares"):
        handle_query(_query(whas500[1], config, task="evaluate", horizons="[365.0, 730.0]"), _context(site_dir))
    _sites.clear()
    toml = (site_dir / "site.toml").read_text()
    (site_dir / "site.toml").write_text(
        toml.replace("[privacy]\n", "[privacy]\nevaluation_horizons = [365.0, 730.0]\n")
    )
    reply = handle_query(_query(whas500[1], config, task="evaluate", horizons="[365.0, 730.0]"), _context(site_dir))
    assert set(reply.content.keys()) == {EVALUATION_RECORD}
    record = reply.content[EVALUATION_RECORD]
    assert isinstance(record, ConfigRecord) and set(record.keys()) == {"site", "result"}
    result = json.loads(str(record["result"]))
    check_evaluation_result(result, whas500[1])  # nothing row-level: fixed grids, per-covariate figures
    assert result["horizons"] == [365.0, 730.0]
    assert set(result["models"]) == {"trtr", "tstr", "augmented", "conditional"}
    assert len(reply.content.array_records) == 0 and len(reply.content.metric_records) == 0
    # The only number lists: 50-point survival grids/curves, 39-point calibration curves, 20-bin and
    # 2-level histograms (binary columns), 16-wide correlation-matrix rows, the 2 horizons.
    lengths = set()

    def collect(value) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            if all(isinstance(v, int | float) or v is None for v in value):
                lengths.add(len(value))
            for item in value:
                collect(item)

    collect(result)
    assert lengths == {50, 39, 20, 16, 2}
    with pytest.raises(SiteError, match="ValueError at the site"):
        handle_query(_query(whas500[1], task="rows please"), _context(site_dir))


def test_evaluation_reply_with_subgroup_fairness_holds_only_aggregates(whas500, site_dir) -> None:
    from fedsynth.client.app import EVALUATION_RECORD, FAIRNESS_COLUMNS, handle_query
    from fedsynth.client.audit_log import AuditRefusedError
    from fedsynth.client.evaluation import check_evaluation_result

    config = MCMConfig(hidden=16, n_bins=16, fairness_column="gender")  # the model's own sensitive column
    with pytest.raises(AuditRefusedError, match="fairness column 'age' is integer"):
        handle_query(_query(whas500[1], config, task="evaluate", **{FAIRNESS_COLUMNS: '["age"]'}), _context(site_dir))
    reply = handle_query(
        _query(whas500[1], config, task="evaluate", **{FAIRNESS_COLUMNS: '["cvd"]'}), _context(site_dir)
    )
    assert set(reply.content.keys()) == {EVALUATION_RECORD}
    result = json.loads(str(reply.content[EVALUATION_RECORD]["result"]))
    check_evaluation_result(result, whas500[1])
    assert result["query_number"] == 1  # the refused column cost no query
    assert list(result["fairness"]) == ["gender", "cvd"]  # the model's column first, unasked
    for entry in result["fairness"].values():
        assert set(entry) == {"horizon", "overall", "levels", "not_estimable", "gaps"}
        # Scalars under the schema's levels and the figures' names: no list at all.
        assert not [v for level in entry["levels"].values() for v in level.values() if isinstance(v, list)]
        for level in entry["levels"].values():
            assert all(level[key] is None or level[key] >= 5 for key in ("n_train", "n_holdout"))


def test_a_data_error_leaves_the_site_without_its_rows_or_values(whas500, site_dir) -> None:
    from fedsynth.client.app import SiteError

    frame, _ = whas500
    broken = frame.iloc[:250].copy()
    broken.loc[7, "age"] = 987  # out of the public bounds: the validation error names row and value
    write_table(broken, site_dir / "data.csv")
    message, _ = _instruction(whas500[1], server_round=1)
    with pytest.raises(SiteError) as refused:
        handle_train(message, _context(site_dir))
    text = str(refused.value)
    # The column, the rule, the count and the fix reach the coordinator; the row and its value do not.
    assert text.startswith("hospital-a: data.csv column 'age': values outside the declared public bounds [20, 110]")
    assert "(1 row)" in text and "fix: correct the values" in text
    assert "987" not in text and "row 8" not in text


def test_the_server_rejects_non_finite_weights(whas500, site_dir) -> None:
    message, layout = _instruction(whas500[1], server_round=1)
    reply = handle_train(message, _context(site_dir))
    content = RecordDict(dict(reply.content.items()))
    state = unpack(content["arrays"], layout)
    first = next(iter(state))
    state[first] = state[first].clone().fill_(float("nan"))
    content["arrays"] = pack(state)
    assert check_reply(Message(content=content, reply_to=message), layout) == "non-finite weights"


def _marginals_query(**config) -> Message:  # type: ignore[no-untyped-def]
    settings = {"task": "marginals", "run-id": "test-run", "planned-rounds": 2, "numeric-bins": 8, "time-bins": 4}
    content = RecordDict({"config": ConfigRecord({**settings, **config})})
    return Message(content=content, dst_node_id=1, message_type=MessageType.QUERY)


def test_marginals_reply_holds_only_noisy_tables_the_spec_fingerprint_and_scalars(whas500, site_dir) -> None:
    from fedsynth.client.app import MARGINALS_RECORD, handle_query
    from fedsynth.client.marginal_release import RESULT_KEYS, MarginalsRefusedError
    from fedsynth.marginals.tables import MarginalSpec
    from fedsynth.server.marginals import _problem

    query = _marginals_query()
    reply = handle_query(query, _context(site_dir))
    assert set(reply.content.keys()) == {MARGINALS_RECORD}
    record = reply.content[MARGINALS_RECORD]
    assert isinstance(record, ConfigRecord) and set(record.keys()) == {"site", "result"}
    result = json.loads(str(record["result"]))
    assert set(result) == RESULT_KEYS == {
        "site", "spec_sha256", "tables", "noise_multiplier", "epsilon_step", "epsilon", "target_epsilon", "delta"
    }  # fmt: skip
    assert len(reply.content.array_records) == 0 and len(reply.content.metric_records) == 0
    spec = MarginalSpec.from_schema(whas500[1], numeric_bins=8, time_bins=4)
    # Only the spec's tables, in its shapes: no list whose length follows the site's records.
    tables = json.loads(result["tables"])
    assert {name: np.shape(values) for name, values in tables.items()} == {t.name: t.shape for t in spec.tables}
    assert _problem(reply, spec) == (None, result)
    leaky = RecordDict({MARGINALS_RECORD: ConfigRecord({**dict(record), "rows": "[]"})})
    assert "unexpected fields" in _problem(Message(content=leaky, reply_to=query), spec)[0]
    extra = RecordDict(
        {MARGINALS_RECORD: ConfigRecord({"site": "hospital-a", "result": json.dumps({**result, "n": 200})})}
    )
    assert "unexpected fields" in _problem(Message(content=extra, reply_to=query), spec)[0]
    with pytest.raises(MarginalsRefusedError, match="other marginal tables than the coordinator's"):
        handle_query(_marginals_query(**{"run-id": "other", "spec-sha256": "0" * 64}), _context(site_dir))
    with pytest.raises(MarginalsRefusedError, match="bins must be 2..64"):
        handle_query(_marginals_query(**{"run-id": "other", "numeric-bins": 100000}), _context(site_dir))
    assert [e.round for e in _sites[site_dir.resolve()].ledger.entries()] == [0]  # refusals spent nothing


def test_head_slope_reply_holds_only_one_noisy_sum_the_weights_digest_and_scalars(whas500, site_dir) -> None:
    from fedsynth.client.app import HEAD_SLOPE, HEAD_SLOPE_RECORD, handle_query
    from fedsynth.client.slope_release import RESULT_KEYS, HeadSlopeRefusedError, head_slope_round
    from fedsynth.model.generators import weights_digest
    from fedsynth.server.head_slope import _problem

    config = MCMConfig(hidden=16, n_bins=16, survival_head=True, survival_form="hazard")
    model = new_generator(config).build(whas500[1])
    settings = {"task": HEAD_SLOPE_RECORD, "run-id": "test-run", "planned-rounds": 2, "score-clip": 1.5,
                "model-config": json.dumps(config_to_dict(config))}  # fmt: skip
    # The run asked for the release when the site planned it (its marginals request says so).
    handle_query(_marginals_query(**{HEAD_SLOPE: True}), _context(site_dir))

    def query(**extra) -> Message:  # type: ignore[no-untyped-def]
        content = RecordDict(
            {"arrays": ArrayRecord(model.network_.state_dict()), "config": ConfigRecord({**settings, **extra})}
        )
        return Message(content=content, dst_node_id=1, message_type=MessageType.QUERY)

    sent = query()
    reply = handle_query(sent, _context(site_dir))
    assert set(reply.content.keys()) == {HEAD_SLOPE_RECORD}
    record = reply.content[HEAD_SLOPE_RECORD]
    assert isinstance(record, ConfigRecord) and set(record.keys()) == {"site", "result"}
    result = json.loads(str(record["result"]))
    assert set(result) == RESULT_KEYS == {
        "site", "weights_sha256", "score", "num_examples", "clip", "noise_multiplier", "epsilon_step",
        "epsilon", "target_epsilon", "delta",
    }  # fmt: skip
    # One number about the rows (the noisy sum), a count and figures: nothing per record.
    assert all(isinstance(v, int | float | str) for v in result.values())
    assert len(reply.content.array_records) == 0 and len(reply.content.metric_records) == 0
    digest = weights_digest(model)
    assert _problem(reply, digest, 1.5) == (None, result)
    for other in (("0" * 64, 1.5), (digest, 1.0)):
        assert "other weights or clip" in _problem(reply, *other)[0]
    extra = RecordDict(
        {HEAD_SLOPE_RECORD: ConfigRecord({"site": "hospital-a", "result": json.dumps({**result, "scores": [1.0]})})}
    )
    assert "unexpected fields" in _problem(Message(content=extra, reply_to=sent), digest, 1.5)[0]
    handle_query(_marginals_query(**{"run-id": "other"}), _context(site_dir))  # planned without the slope
    with pytest.raises(HeadSlopeRefusedError, match="releases no slope score"):
        handle_query(query(**{"run-id": "other"}), _context(site_dir))
    assert [e.round for e in _sites[site_dir.resolve()].ledger.entries()] == [0, head_slope_round(2), 0]
