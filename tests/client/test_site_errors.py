"""A site's failure reaches the coordinator readable, without a row number or a value."""

from __future__ import annotations

import json

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedsynth.client.app import WEIGHTS_LAYOUT, SiteError, _sites, handle_train
from fedsynth.client.packed_weights import layout_of, layout_to_json, pack
from fedsynth.client.site_errors import site_reason
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from tests.client.conftest import write_site


@pytest.fixture(autouse=True)
def _closed_sites(server_identity):  # noqa: ANN001, ANN202
    yield
    _sites.clear()


def _train(schema, site_dir) -> str:
    config = MCMConfig(hidden=16, n_bins=16)
    state = MCM(config).build(schema).network_.state_dict()
    content = RecordDict(
        {
            "arrays": pack(state),
            "config": ConfigRecord(
                {"run-id": "r", "server-round": 1, "planned-rounds": 1,
                 "model-config": json.dumps(config.model_dump(mode="json")),
                 WEIGHTS_LAYOUT: layout_to_json(layout_of(state))}
            ),
        }
    )  # fmt: skip
    message = Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=1, node_config={"site-dir": str(site_dir)}, state=RecordDict(), run_config={})
    with pytest.raises(SiteError) as refused:
        handle_train(message, context)
    return str(refused.value)


def test_every_validation_problem_is_told_by_column_rule_and_count(whas500, tmp_path) -> None:
    frame, schema = whas500
    broken = frame.iloc[:250].drop(columns=["bmi"])
    broken["hr"] = broken["hr"].astype(object)
    broken.loc[[3, 9], "hr"] = "fast-4711"
    text = _train(schema, write_site(tmp_path, broken, schema, ""))
    assert text.splitlines() == [
        "hospital-a: data.csv column 'bmi': column is missing from the data; "
        "fix: add a column named 'bmi' or remove it from the schema",
        "hospital-a: data.csv column 'hr': values are not numbers (2 rows); "
        "fix: replace the text with numbers (or empty cells, if the missing policy allows)",
    ]
    assert "4711" not in text


def test_too_few_records_is_told_with_the_counts_and_the_minimum(whas500, tmp_path) -> None:
    frame, schema = whas500
    text = _train(schema, write_site(tmp_path, frame.iloc[:30], schema, ""))
    assert text.startswith("hospital-a: data.csv: 24 training records (30 rows less the 0.2 holdout)")
    assert "minimum of 100 for DP training" in text and "at least 125 rows" in text


def test_other_errors_are_their_type_name_with_the_site_name(whas500, tmp_path) -> None:
    frame, schema = whas500
    site_dir = write_site(tmp_path, frame.iloc[:250], schema, "[privacy]\ntarget_delta = 0.5\n")
    assert _train(schema, site_dir) == (
        "hospital-a: LedgerError at the site; details are in the site's own log (not sent)"
    )


# Flower's error reasons as recorded in budget.jsonl (the simulation one shortened from a real run).
SIMULATION_REASON = (
    "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m "
    '(pid=5810, ip=192.0.2.2)\n  File "/work/main/fedsynth/client/app.py", line 123, in wrapper\n'
    "    raise SiteError(shared) from None\nfedsynth.client.app.SiteError: site-0: data.parquet column 'bmi': "
    "values are not numbers (1 row); fix: x\n\nThe above exception was the direct cause of the following "
    "exception:\n\nflwr.clientapp.client_app.ClientAppException: \nException ClientAppException occurred. "
    "Message: site-0: data.parquet column 'bmi': values are not numbers (1 row); fix: x\n"
    "site-0: data.parquet column 'age': values are not numbers (2 rows); fix: y'>"
)
DEPLOYMENT_REASON = "<class 'fedsynth.client.app.SiteError'>:<'site-1: LedgerError at the site; details (not sent)'>"


def test_the_coordinator_reads_the_sites_own_words_out_of_flowers_reasons() -> None:
    assert site_reason(SIMULATION_REASON) == (
        "site-0: data.parquet column 'bmi': values are not numbers (1 row); fix: x\n"
        "site-0: data.parquet column 'age': values are not numbers (2 rows); fix: y"
    )
    assert site_reason(DEPLOYMENT_REASON) == "site-1: LedgerError at the site; details (not sent)"
    assert site_reason("no reply within the round timeout") == "no reply within the round timeout"
