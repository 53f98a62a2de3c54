"""The coordinator refuses, before writing a file or starting Ray, what it can see would fail."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fedsynth.client.ledger import LedgerError
from fedsynth.data.datasets import bundled_schema, raw_dataset
from fedsynth.data.io import write_table
from fedsynth.data.validation import DataValidationError
from fedsynth.server.config import FederationConfig, FederationConfigError
from fedsynth.server.simulation import prepare_sites


def _listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def _config(root: Path, table: pd.DataFrame | None, **sections) -> FederationConfig:
    simulation: dict = {"sites": 2}
    if table is not None:
        table.to_csv(root / "data.csv", index=False)
        (root / "schema.toml").write_text(bundled_schema("whas500").to_toml())
        simulation.update(data=str(root / "data.csv"), schema=str(root / "schema.toml"))
    document = {
        "federation": {"min_sites": 2, "run_dir": str(root / "run"), **sections.pop("federation", {})},
        "simulation": {**simulation, **sections.pop("simulation", {})},
        **sections,
    }
    return FederationConfig.from_dict(document)


def _refused(config: FederationConfig, root: Path, error: type[Exception], *patterns: str) -> str:
    before = _listing(root)
    with pytest.raises(error) as refused:
        prepare_sites(config, source="fed.toml")
    text = str(refused.value)
    for pattern in patterns:
        assert pattern in text, text
    assert _listing(root) == before, "a refused set-up wrote files"
    return text


def test_min_sites_above_the_sites_is_refused_naming_the_key_and_the_fix(tmp_path) -> None:
    config = _config(tmp_path, None, federation={"min_sites": 5})
    _refused(
        config, tmp_path, FederationConfigError,
        "fed.toml: federation.min_sites = 5 but the run starts 2 site(s)", "set min_sites to at most 2 in [federation]",
    )  # fmt: skip


@pytest.mark.parametrize(("rows", "sites"), [(5, 10), (5, 2), (240, 2)], ids=["5-over-10", "5-over-2", "240-over-2"])
def test_a_partition_below_the_dp_minimum_is_refused(tmp_path, rows: int, sites: int) -> None:
    config = _config(tmp_path, raw_dataset("whas500").iloc[:rows], simulation={"sites": sites})
    text = _refused(config, tmp_path, FederationConfigError, "below the minimum of 100 for DP training")
    assert f"over simulation.sites = {sites}" in text and "each site needs at least 125 rows" in text
    # 240 rows fit one site of 125 or more; 5 rows fit none.
    assert ("at most 1" in text) == (rows == 240)


def test_a_model_field_naming_an_unusable_column_is_refused_before_anything_is_written(tmp_path) -> None:
    fairness = {"fairness_column": "age", "fairness_weight": 1.0, "fairness_shares": [0.5, 0.5]}
    config = _config(tmp_path, None, model=fairness)
    _refused(config, tmp_path, FederationConfigError, "fed.toml: [model] fairness_column = 'age' is integer", "gender")


def test_the_table_is_validated_naming_its_rows_for_the_coordinator_who_owns_it(tmp_path) -> None:
    table = raw_dataset("whas500")
    table["bmi"] = table["bmi"].astype(object)
    table.loc[3, "bmi"] = "heavy"
    _refused(_config(tmp_path, table), tmp_path, DataValidationError, "column 'bmi'", "not numbers", "'heavy'")


def test_a_resumed_runs_site_file_is_validated_before_anything_is_written(tmp_path) -> None:
    config = _config(tmp_path, None)
    prepare_sites(config)
    site_file = config.run_dir / "sites" / "site-1" / "data.parquet"
    broken = pd.read_parquet(site_file)
    broken.loc[0, "age"] = 987
    write_table(broken, site_file)
    _refused(config, tmp_path, DataValidationError, str(site_file), "column 'age'", "outside the declared public")


def test_a_site_delta_at_or_above_one_over_n_is_refused(tmp_path) -> None:
    config = _config(tmp_path, None, site={"privacy": {"target_delta": 0.01}})
    _refused(config, tmp_path, LedgerError, "must be in (0, 1/n)")


def test_a_valid_set_up_writes_every_site(tmp_path) -> None:
    config = _config(tmp_path, None, simulation={"sites": 4})  # 125 rows each: exactly 100 to train on
    _, root = prepare_sites(config)
    assert sorted(p.name for p in root.iterdir()) == ["site-0", "site-1", "site-2", "site-3"]
    assert all((root / f"site-{i}" / "data.parquet").exists() for i in range(4))


def test_a_column_partition_puts_each_value_on_one_site_with_sites_differing_in_it() -> None:
    from fedsynth.server.simulated_sites import partition, partition_summary

    # 11 institutions of very different sizes, listed in no order.
    sizes = {7: 40, 2: 5, 9: 31, 1: 12, 4: 60, 3: 8, 11: 22, 5: 9, 8: 17, 6: 25, 10: 11}
    frame = pd.DataFrame({"inst": [code for code, n in sizes.items() for _ in range(n)]})
    frame["row"] = range(len(frame))
    parts = partition(frame.sample(frac=1, random_state=1), 3, "column:inst", seed=0)
    held = [set(part["inst"]) for part in parts]
    assert set.union(*held) == set(sizes) and sum(map(len, held)) == len(sizes)  # each code on exactly one site
    assert sorted(pd.concat(parts)["row"]) == list(range(len(frame)))  # every row once
    assert max(held[0]) < min(held[1]) and max(held[1]) < min(held[2])  # contiguous runs of sorted codes
    # Cuts at the value boundaries nearest the equal shares (80 rows each of 240).
    assert [len(p) for p in parts] == [85, 74, 81]  # cumulative 85 (codes 1-4) and 159 (codes 5-7)
    assert partition_summary(parts, "column:inst")[0] == "site-0: 85 rows, inst = 1, 2, 3, 4"
    with pytest.raises(FederationConfigError, match="'inst' has 11 distinct value.*at most 11"):
        partition(frame, 12, "column:inst", seed=0)
    with pytest.raises(FederationConfigError, match="'nope' is not in the data"):
        partition(frame, 2, "column:nope", seed=0)
    holes = frame.assign(inst=frame["inst"].where(frame["row"] != 3))
    with pytest.raises(FederationConfigError, match="1 row\\(s\\) have no 'inst'"):
        partition(holes, 2, "column:inst", seed=0)


def test_an_iid_partition_is_a_seeded_shuffle_in_equal_parts() -> None:
    from fedsynth.server.simulated_sites import partition

    frame = pd.DataFrame({"row": range(100)})
    parts = partition(frame, 3, "iid", seed=4)
    assert [len(p) for p in parts] == [34, 33, 33]
    assert sorted(pd.concat(parts)["row"]) == list(range(100))
    again = partition(frame, 3, "iid", seed=4)
    assert all(a.equals(b) for a, b in zip(parts, again, strict=True))
    assert not parts[0].equals(partition(frame, 3, "iid", seed=5)[0])
