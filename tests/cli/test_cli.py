"""The CLI: happy paths, and every bad input gives a clear error, exit 2 and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.data.datasets import bundled_schema, raw_dataset
from fedsynth.model.mcm import MCM

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = root / "whas.csv"
    raw_dataset("whas500").to_csv(data, index=False)
    schema = root / "whas.toml"
    schema.write_text(bundled_schema("whas500").to_toml())
    return {"root": root, "data": data, "schema": schema}


@pytest.fixture(scope="module")
def model_dir(files, small_model: MCM) -> Path:
    return small_model.save(files["root"] / "model")


def _listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def assert_fails_cleanly(result, files: dict[str, Path], before: set[str], *patterns: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error:") or "error:" in result.output
    for pattern in patterns:
        assert pattern in result.output, result.output
    assert _listing(files["root"]) == before, "a failed command wrote files"


def test_schema_infer_then_check(files, tmp_path) -> None:
    out = tmp_path / "draft.toml"
    result = invoke("schema", "infer", files["data"], "--time", "lenfol", "--event", "fstat", "-o", out)
    assert result.exit_code == 0, result.output
    assert "Read 500 rows" in result.output
    assert out.read_text().startswith("# DRAFT schema")
    result = invoke("schema", "check", files["data"], "--schema", out)
    assert result.exit_code == 0 and "OK" in result.output
    result = invoke("schema", "infer", files["data"], "--time", "lenfol", "--event", "fstat", "-o", out)
    assert result.exit_code == 2 and "--force" in result.output


@pytest.mark.parametrize(
    ("mutate", "patterns"),
    [
        (lambda f: f.drop(columns=["bmi"]), ["'bmi'", "missing from the data"]),
        (lambda f: f.assign(hr=f["hr"].astype(object).where(f.index != 2, "fast")), ["'hr'", "not numbers", "fast"]),
        (lambda f: f.assign(age=f["age"].where(f.index != 0, 150)), ["'age'", "bounds [20, 110]", "row 1"]),
        (lambda f: f.assign(gender=f["gender"].astype(object).where(f.index != 1, "x")), ["'gender'", "not binary"]),
    ],
    ids=["missing-column", "text-in-numeric", "out-of-bounds", "unknown-category"],
)
def test_bad_data_fails_everywhere_and_writes_nothing(files, model_dir, tmp_path, mutate, patterns) -> None:
    bad = files["root"] / "bad.csv"
    mutate(pd.read_csv(files["data"])).to_csv(bad, index=False)
    before = _listing(files["root"])
    assert_fails_cleanly(invoke("schema", "check", bad, "--schema", files["schema"]), files, before, *patterns)
    result = invoke("fit", bad, "--schema", files["schema"], "-o", files["root"] / "m2", "--epochs", "1")
    assert_fails_cleanly(result, files, before, *patterns)
    result = invoke("augment", bad, "--model", model_dir, "-o", files["root"] / "aug.csv")
    assert_fails_cleanly(result, files, before, *patterns)
    bad.unlink()


def test_unknown_category_in_labelled_column(tmp_path) -> None:
    data = raw_dataset("gbsg2")
    data.loc[4, "tgrade"] = "IV"
    path = tmp_path / "g.csv"
    data.to_csv(path, index=False)
    schema = tmp_path / "g.toml"
    schema.write_text(bundled_schema("gbsg2").to_toml())
    result = invoke("schema", "check", path, "--schema", schema)
    assert result.exit_code == 2
    assert "unknown categories" in result.output and "'IV'" in result.output and "row 5" in result.output


def test_schema_check_says_how_many_values_a_model_policy_keeps_missing(tmp_path) -> None:
    from tests.missing import modelled_schema

    data = raw_dataset("gbsg2")
    data.loc[[3, 7, 11], "pnodes"] = None
    path, schema = tmp_path / "g.csv", tmp_path / "g.toml"
    data.to_csv(path, index=False)
    schema.write_text(modelled_schema(bundled_schema("gbsg2"), ["pnodes"]).to_toml())
    result = invoke("schema", "check", path, "--schema", schema)
    assert result.exit_code == 0, result.output
    assert "kept 3 missing value(s) of 'pnodes' as missing (schema policy model)" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("condition", "pattern"),
    [
        ("diabetes=1", "unknown column 'diabetes'"),
        ("age>=200", "outside the schema's bounds"),
        ("chf=3", "not a declared value"),
        ("age >> 2", "cannot parse"),
    ],
)
def test_bad_conditions(files, model_dir, condition: str, pattern: str) -> None:
    before = _listing(files["root"])
    result = invoke("sample", model_dir, "-n", "10", "--where", condition, "-o", files["root"] / "s.csv")
    assert_fails_cleanly(result, files, before, pattern)


def test_corrupted_model(files, small_model: MCM) -> None:
    broken = small_model.save(files["root"] / "broken")
    weights = broken / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    before = _listing(files["root"])
    result = invoke("sample", broken, "-n", "5", "-o", files["root"] / "s.csv")
    assert_fails_cleanly(result, files, before, "weights.pt does not match its SHA-256")


def test_bad_output_suffix(files, model_dir) -> None:
    before = _listing(files["root"])
    result = invoke("sample", model_dir, "-n", "5", "-o", files["root"] / "s.xlsx")
    assert_fails_cleanly(result, files, before, "use .csv or .parquet")


def test_fit_sample_and_provenance(files, tmp_path) -> None:
    model = tmp_path / "model"
    result = invoke("fit", files["data"], "--schema", files["schema"], "-o", model, "--epochs", "2", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "Not differentially private" in result.output
    out = tmp_path / "cohort.parquet"
    result = invoke("sample", model, "-n", "50", "--where", "chf=1", "--where", "60<=age<=80", "-o", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) == 50 and (frame["chf"] == 1).all() and frame["age"].between(60, 80).all()
    record = json.loads((tmp_path / "cohort.parquet.provenance.json").read_text())
    assert record["differentially_private"] is False and record["conditions"] == ["chf=1", "60<=age<=80"]
    import pyarrow.parquet as pq

    assert b"fedsynth.provenance" in pq.read_schema(out).metadata


def test_augment_is_labelled_not_dp(files, model_dir, tmp_path) -> None:
    out = tmp_path / "aug.csv"
    result = invoke("augment", files["data"], "--model", model_dir, "-o", out, "--where", "chf=1", "-n", "40")
    assert result.exit_code == 0, result.output
    assert "NOT DIFFERENTIALLY PRIVATE" in result.output
    record = json.loads((tmp_path / "aug.csv.provenance.json").read_text())
    assert record["differentially_private"] is False
    assert "NOT DIFFERENTIALLY PRIVATE" in record["notice"]
    assert (pd.read_csv(out)["chf"] == 1).all()


def test_console_script_exit_code(files) -> None:
    """The installed entry point (not just the in-process runner) returns non-zero on errors."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsynth.cli",
            "schema",
            "check",
            str(files["root"] / "nope.csv"),
            "--schema",
            str(files["schema"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "data file not found" in result.stderr


def _whas_with(change) -> pd.DataFrame:
    frame = raw_dataset("whas500").astype(object)
    change(frame)
    return frame


def _set(column: str, row: int, value):
    def change(frame: pd.DataFrame) -> None:
        frame.loc[row, column] = value

    return change


BAD_INPUTS = {
    # name: (writer of the bad file, commands to try, patterns the message must hold)
    "inf": (lambda p: _whas_with(_set("bmi", 3, "inf")).to_csv(p, index=False), ["infer"], ["'bmi'", "infinite"]),
    "empty-parquet": (lambda p: raw_dataset("whas500").iloc[:0].to_parquet(p), ["infer", "check"], ["no rows"]),
    "latin1": (
        lambda p: _whas_with(lambda f: f.__setitem__("ward", "Hôpital")).to_csv(p, index=False, encoding="latin-1"),
        ["infer", "check"],
        ["not UTF-8", "line 2", "iconv"],
    ),
    "duplicate-column": (
        lambda p: raw_dataset("whas500").rename(columns={"bmi": "age"}).to_csv(p, index=False),
        ["infer", "check"],
        ["names a column more than once", "'age' at columns 2, 4"],
    ),
    "semicolons": (
        lambda p: raw_dataset("whas500").to_csv(p, index=False, sep=";"),
        ["infer", "check"],
        ["looks semicolon-delimited", "re-save it with commas"],
    ),
    "event-2": (lambda p: _whas_with(_set("fstat", 0, 2)).to_csv(p, index=False), ["infer"], ["'fstat'", "0/1"]),
    "event-yes": (lambda p: _whas_with(_set("fstat", 0, "yes")).to_csv(p, index=False), ["infer"], ["'fstat'", "0/1"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_schema_input_exits_2_naming_file_and_writes_nothing(case: str, tmp_path: Path) -> None:
    write, commands, patterns = BAD_INPUTS[case]
    bad = tmp_path / ("bad.parquet" if case.endswith("parquet") else "bad.csv")
    write(bad)
    schema = tmp_path / "whas.toml"
    schema.write_text(bundled_schema("whas500").to_toml())
    before = _listing(tmp_path)
    for command in commands:
        if command == "infer":
            result = invoke("schema", "infer", bad, "--time", "lenfol", "--event", "fstat", "-o", tmp_path / "d.toml")
        else:
            result = invoke("schema", "check", bad, "--schema", schema)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error:") and "Traceback" not in result.output
        assert str(bad) in result.output, result.output
        for pattern in patterns:
            assert pattern in result.output, result.output
        assert _listing(tmp_path) == before, "a failed command wrote files"


def test_schema_with_negative_time_bound_is_refused(files, tmp_path) -> None:
    import tomli_w

    declared = bundled_schema("whas500").to_dict()
    next(c for c in declared["columns"] if c["name"] == "lenfol")["lower"] = -10.0
    schema = tmp_path / "neg.toml"
    schema.write_text(tomli_w.dumps(declared))
    result = invoke("schema", "check", files["data"], "--schema", schema)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(schema) in result.output and "columns[lenfol]" in result.output
    assert "survival times cannot be negative" in result.output


def test_version_prints_the_package_version() -> None:
    from fedsynth import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"fedsynth {__version__}"


HEAVY = ("torch", "opacus", "flwr", "lifelines", "ray")
_IMPORTS_AFTER = """
import sys
from typer.testing import CliRunner
from fedsynth.cli import app
done = CliRunner().invoke(app, sys.argv[1:])
assert done.exit_code == 0, done.output
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""


LIGHT = [
    ["--help"],
    ["--version"],
    ["serve-token", "add", "{tmp}/tokens.json", "--name", "a"],
    ["deploy", "app", "{tmp}/app"],  # the runbook writes the Flower app's pyproject on the coordinator
]


@pytest.mark.parametrize("args", LIGHT)
def test_light_commands_do_not_import_the_heavy_libraries(tmp_path: Path, args: list[str]) -> None:
    # Each of torch, opacus, Flower, lifelines and Ray costs a light command seconds of start-up.
    code = _IMPORTS_AFTER.format(heavy=HEAVY)
    argv = [a.format(tmp=tmp_path) for a in args]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"`fedsynth {' '.join(args)}` imported {done.stdout.split()}"
