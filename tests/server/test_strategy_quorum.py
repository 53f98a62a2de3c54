"""A round is aggregated only when at least ``min_sites`` sites returned accepted weights."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from fedsynth.client.app import REPLY_METRICS
from fedsynth.client.packed_weights import WEIGHTS, layout_of, layout_size, pack
from fedsynth.data.datasets import bundled_schema
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from fedsynth.server.outcome import TrainingFailedError, check_training_outcome
from fedsynth.server.run import RunDirectory
from fedsynth.server.strategy import mcm_fedavg

pytestmark = pytest.mark.usefixtures("server_identity")

CONFIG = MCMConfig(hidden=16, n_bins=16)
STATE = MCM(CONFIG).build(bundled_schema("whas500")).network_.state_dict()
LAYOUT = layout_of(STATE)
SIZE = layout_size(LAYOUT)


class _ThreeNodes:
    def get_node_ids(self) -> list[int]:
        return [11, 12, 13]


def _reply(instruction: Message, site: str, value: float) -> Message:
    metrics = {name: 1.0 for name in REPLY_METRICS} | {"num-examples": 100, "epsilon": 0.5}
    content = RecordDict(
        {
            "arrays": ArrayRecord({WEIGHTS: torch.full((SIZE,), value)}),
            "metrics": MetricRecord(metrics),
            "site": ConfigRecord({"name": site}),
        }
    )
    return Message(content=content, reply_to=instruction)


def _error(instruction: Message, reason: str) -> Message:
    from flwr.app import Error

    return Message(Error(code=0, reason=reason), reply_to=instruction)


def _strategy(tmp_path, min_sites: int) -> tuple[Strategy, list[Message], RunDirectory]:
    schema = bundled_schema("whas500")
    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", schema, {})
    strategy, _ = mcm_fedavg(run, schema, CONFIG, LAYOUT, min_sites=min_sites)
    arrays = pack(STATE)
    sent = list(strategy.configure_train(1, arrays, ConfigRecord({"run-id": "r1"}), _ThreeNodes()))
    return strategy, sent, run


def test_a_round_with_fewer_replies_than_min_sites_leaves_the_model_and_writes_no_checkpoint(tmp_path) -> None:
    strategy, sent, run = _strategy(tmp_path, min_sites=2)
    replies = [_reply(sent[0], "site-a", 1.0), _error(sent[1], "refused"), _error(sent[2], "refused")]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is None
    assert run.latest_checkpoint() is None
    # the one site's spend is still in the budget record
    assert [r["status"] for r in run.budget_records()] == ["ok", "error", "error"]
    with pytest.raises(TrainingFailedError) as failed:
        check_training_outcome(tmp_path / "run", 1, 1, tmp_path / "train.log")
    assert "fewer sites than federation.min_sites returned weights" in str(failed.value)
    assert "refused" in str(failed.value)


def test_a_round_with_min_sites_replies_is_averaged_and_checkpointed(tmp_path) -> None:
    strategy, sent, run = _strategy(tmp_path, min_sites=2)
    replies = [_reply(sent[0], "site-a", 1.0), _reply(sent[1], "site-b", 3.0), _error(sent[2], "refused")]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert torch.allclose(torch.as_tensor(arrays[WEIGHTS].numpy()), torch.full((SIZE,), 2.0))
    checkpoint = run.latest_checkpoint()
    assert checkpoint is not None and checkpoint.round == 1
    check_training_outcome(tmp_path / "run", 1, 1, tmp_path / "train.log")  # the run has its model
    assert json.dumps(sorted(r["site"] for r in run.budget_records() if r["status"] == "ok")) == '["site-a", "site-b"]'
    # The checkpoint names the sites whose weights it averaged, not the one that refused.
    assert [r["sites"] for r in run.checkpoint_records()] == [["site-a", "site-b"]]


def _spend_only(instruction: Message, site: str, reason: str, **more: str) -> Message:
    site_record = ConfigRecord({"name": site, "reason": reason, **more})
    content = RecordDict({"metrics": _reply(instruction, site, 0.0).content["metrics"], "site": site_record})
    return Message(content=content, reply_to=instruction)


def test_a_spend_without_weights_is_recorded_as_spent_and_counted_never_aggregated(tmp_path) -> None:
    """A SecAgg+ round whose sum could not be unmasked: its sites trained and spent, so the
    budget record and the budget report count the spend; no model or checkpoint comes of it."""
    from fedsynth.server.budget import budget_report

    strategy, sent, run = _strategy(tmp_path, min_sites=1)
    reason = "trained, but too few sites answered SecAgg+'s last stage to unmask the sum: not aggregated"
    spent = [_spend_only(sent[0], "site-a", reason), _spend_only(sent[1], "site-b", reason)]
    arrays, _ = strategy.aggregate_train(1, [*spent, _error(sent[2], "refused")])
    assert arrays is None and run.latest_checkpoint() is None
    records = run.budget_records()
    assert [(r["status"], r.get("site")) for r in records] == [
        ("spent", "site-a"),
        ("spent", "site-b"),
        ("error", None),
    ]
    assert all(r["epsilon"] == 0.5 and r["reason"] == reason for r in records[:2])
    report = budget_report(tmp_path / "run")
    assert sorted(s["site"] for s in report["sites"]) == ["site-a", "site-b"]
    assert all(s["epsilon_spent"] >= 0.5 for s in report["sites"])  # the spend is counted, never dropped
    # A spend-only reply carrying anything more is rejected, not recorded as a spend.
    strategy, sent, run = _strategy(tmp_path / "again", min_sites=1)
    strategy.aggregate_train(1, [_spend_only(sent[0], "site-a", reason, rows="1,2")])
    assert [r["status"] for r in run.budget_records()] == ["rejected"]
