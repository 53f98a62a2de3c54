from __future__ import annotations

import pytest

from fedsynth.data.datasets import DATASETS, bundled_schema
from fedsynth.data.schema import ColumnKind, Schema, SchemaError


def _base_columns() -> list[dict]:
    return [
        {"name": "age", "kind": "integer", "lower": 18, "upper": 100},
        {"name": "time", "kind": "continuous", "role": "time", "lower": 0, "upper": 4000},
        {"name": "event", "kind": "binary", "role": "event"},
    ]


def test_minimal_schema_roles() -> None:
    schema = Schema.from_dict({"name": "x", "columns": _base_columns()})
    assert schema.time_column == "time"
    assert schema.event_column == "event"
    assert schema.covariates == ["age"]


@pytest.mark.parametrize("name", DATASETS)
def test_bundled_schemas_round_trip_through_toml(name: str, tmp_path) -> None:
    schema = bundled_schema(name)
    path = tmp_path / "s.toml"
    path.write_text(schema.to_toml())
    assert Schema.from_toml(path) == schema


def test_numeric_column_without_bounds_names_column_and_fix() -> None:
    columns = _base_columns()
    del columns[0]["upper"]
    with pytest.raises(SchemaError, match=r"columns\[age\].*lower.*upper"):
        Schema.from_dict({"columns": columns})


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ({"step": 0.0}, "positive number no larger than upper - lower"),
        ({"step": 500.0}, "positive number no larger than upper - lower"),
        ({"step": 2.5}, "whole number"),
    ],
)
def test_a_step_is_positive_within_the_bounds_and_whole_for_integers(column: dict, message: str) -> None:
    columns = _base_columns()
    columns[0].update(column)
    with pytest.raises(SchemaError, match=rf"columns\[age\].*{message}"):
        Schema.from_dict({"columns": columns})
    columns[0].update(kind="integer", step=5.0)
    assert Schema.from_dict({"columns": columns}).column("age").step == 5.0


def test_boxcox_needs_lambda_and_positive_support() -> None:
    columns = _base_columns()
    columns[0].update(transform="boxcox")
    with pytest.raises(SchemaError, match="boxcox_lambda"):
        Schema.from_dict({"columns": columns})
    columns[0].update(transform="log", lower=0)
    with pytest.raises(SchemaError, match="offset"):
        Schema.from_dict({"columns": columns})


def test_time_column_with_negative_lower_bound_is_refused(tmp_path) -> None:
    columns = _base_columns()
    columns[1]["lower"] = -5
    refused = r"columns\[time\]: column 'time': the time column's lower bound is -5.*set lower = 0"
    with pytest.raises(SchemaError, match=refused):
        Schema.from_dict({"columns": columns})
    columns[0]["lower"] = -5  # a feature may be negative (e.g. a centred score)
    columns[1]["lower"] = 0
    assert Schema.from_dict({"columns": columns}).column("age").lower == -5


def test_schema_needs_exactly_one_time_and_event() -> None:
    columns = _base_columns()
    columns[2]["role"] = "feature"
    with pytest.raises(SchemaError, match="role = 'event'"):
        Schema.from_dict({"columns": columns})


def test_duplicate_columns_and_unknown_fields_rejected() -> None:
    columns = _base_columns() + [{"name": "age", "kind": "binary"}]
    with pytest.raises(SchemaError, match="duplicated"):
        Schema.from_dict({"columns": columns})
    columns = _base_columns()
    columns[0]["bounds"] = [1, 2]
    with pytest.raises(SchemaError, match="bounds"):
        Schema.from_dict({"columns": columns})


def test_invalid_toml_is_a_schema_error(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[columns]\nname = ")
    with pytest.raises(SchemaError, match="not valid TOML"):
        Schema.from_toml(path)


def test_categorical_width_is_one_hot() -> None:
    schema = bundled_schema("gbsg2")
    tgrade = schema.column("tgrade")
    assert tgrade.kind == ColumnKind.CATEGORICAL
    assert tgrade.width == 3


def test_missing_model_is_for_covariates_and_names_the_column() -> None:
    columns = _base_columns()
    columns[0]["missing"] = "model"
    schema = Schema.from_dict({"columns": columns})
    assert [c.name for c in schema.modelled_missing] == ["age"]
    for outcome in (1, 2):
        columns = _base_columns()
        columns[outcome]["missing"] = "model"
        with pytest.raises(SchemaError, match=rf"columns\[{columns[outcome]['name']}\].*covariates only"):
            Schema.from_dict({"columns": columns})
