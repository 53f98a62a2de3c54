from __future__ import annotations

import json

import numpy as np
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.marginals.tables import MarginalSpec, count_tables, tables_to_json
from fedsynth.marginals.target import MarginalTarget, MarginalTargetError


def _target() -> tuple[MarginalTarget, object]:
    frame, schema = load_dataset("whas500")
    spec = MarginalSpec.from_schema(schema)
    return MarginalTarget(spec, count_tables(frame, spec), {"run_id": "r"}), schema


def test_json_round_trip_keeps_the_digest() -> None:
    target, schema = _target()
    again = MarginalTarget.from_json(target.to_json(), schema)
    assert again.digest() == target.digest()
    assert all(np.array_equal(again.tables[k], v) for k, v in target.tables.items())


def test_bad_targets_are_refused_naming_the_source() -> None:
    target, schema = _target()
    _, other = load_dataset("gbsg2")
    with pytest.raises(MarginalTargetError, match="another schema"):
        MarginalTarget.from_json(target.to_json(), other, "query")
    data = json.loads(target.to_json())
    data["tables"]["sho"][0] = -5.0
    with pytest.raises(MarginalTargetError, match="negative"):
        MarginalTarget.from_json(json.dumps(data), schema)
    with pytest.raises(MarginalTargetError, match="query: unreadable"):
        MarginalTarget.from_json("{not json", schema, "query")
    data = json.loads(target.to_json())
    del data["tables"]["age"]
    with pytest.raises(MarginalTargetError, match="age"):
        MarginalTarget.from_json(json.dumps(data), schema)


def test_only_a_complete_run_release_becomes_a_target() -> None:
    target, _ = _target()
    document = {
        "complete": True,
        "spec": target.spec.to_dict(),
        "consistent_tables": json.loads(tables_to_json(target.tables)),
        "run_id": "r1",
        "sites": [{"site": "site-0", "epsilon": 1.0, "noise_multiplier": 2.0, "node_id": 7}],
    }
    made = MarginalTarget.from_run_document(document)
    assert made is not None and made.source["sites"] == [{"site": "site-0", "epsilon": 1.0, "noise_multiplier": 2.0}]
    assert MarginalTarget.from_run_document({**document, "complete": False}) is None
