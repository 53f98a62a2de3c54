"""The site's audit bundle: every audit on the site's own rows, and nothing row-level in the result."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fedsynth.client.app import _sites, open_site
from fedsynth.client.audit import check_audit_result, run_site_audit
from fedsynth.client.audit_log import AUDIT_LOG, AuditRefusedError
from fedsynth.data.conditions import ConditionError
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from fedsynth.model.rows_digest import rows_digest
from fedsynth.privacy.anonymeter_audit import AnonymeterSettings
from tests.client.conftest import write_site


@pytest.fixture()
def site(whas500, tmp_path):
    frame, schema = whas500
    write_site(
        tmp_path, frame.iloc[:300], schema, "[privacy]\ntarget_epsilon = 2.0\n[training]\nholdout_fraction = 0.5\n"
    )
    yield open_site(tmp_path)
    _sites.clear()


def test_site_audit_returns_every_audit_as_aggregates_only(site) -> None:
    model = MCM(MCMConfig(hidden=16, n_bins=16, epochs=30, seed=0)).fit(site.train, site.schema)
    result = run_site_audit(site, model, seed=1, anonymeter=AnonymeterSettings(n_attacks=60))
    assert result["site"] == "hospital-a" and result["n_train"] == result["n_holdout"] == 150
    assert [a["attack"] for a in result["attacks"]] == ["distance", "density", "white-box"]
    assert [r["attack"] for r in result["anonymeter"]][-1] == "inference"
    assert 0.0 <= result["nearest_neighbour"]["dcr_share"] <= 1.0
    assert json.loads(json.dumps(result)) is not None  # plain JSON, ready for a message
    # Every attack carries its empirical epsilon at the site's delta, next to the ledger's epsilon
    # (no DP training here, so 0); a non-DP model fitted 30 epochs on 150 rows leaks measurably.
    assert result["accountant_epsilon"] == 0.0 and result["delta"] == site.ledger.target_delta
    for attack in result["attacks"]:
        bound = attack["empirical_epsilon"]
        assert bound["delta"] == result["delta"]
        assert bound["exceeds_accountant"] == (bound["epsilon_lower_bound"] > 0.0)
    assert set(result["seconds"]) == {"distance", "density", "white-box", "nearest-neighbour", "anonymeter"}


def test_the_site_audits_exactly_the_release_sample_and_names_it(site) -> None:
    # The rows `fedsynth sample -n 40 --seed 3 --where chf=1` writes: the site audits those very
    # rows and names them by their digest (a hash of model output, not of site data).
    model = MCM(MCMConfig(hidden=8, n_bins=8, epochs=2, seed=0)).fit(site.train, site.schema)
    result = run_site_audit(site, model, seed=3, anonymeter=AnonymeterSettings(n_attacks=20), n=40,
                            conditions=["chf=1"])  # fmt: skip
    release = model.sample(40, ["chf=1"], seed=3)
    assert result["n_synthetic"] == 40
    assert result["sample"] == {"seed": 3, "n": 40, "conditions": '["chf=1"]', "sha256": rows_digest(release)}
    check_audit_result(result, max_rows=result["n_train"] + result["n_holdout"])  # still aggregates only
    other = rows_digest(model.sample(40, ["chf=1"], seed=4))
    assert other != result["sample"]["sha256"]  # another seed's rows are other rows
    with pytest.raises(ConditionError):  # a condition the schema cannot honour costs no audit
        run_site_audit(site, model, seed=3, n=40, conditions=["nosuch=1"])
    assert len((site.dir / AUDIT_LOG).read_text().splitlines()) == 1


def test_audits_are_counted_before_they_run_and_capped(whas500, tmp_path) -> None:
    frame, schema = whas500
    write_site(tmp_path, frame.iloc[:200], schema, "[privacy]\nmax_audits = 1\n[training]\nholdout_fraction = 0.5\n")
    site = open_site(tmp_path)
    model = MCM(MCMConfig(hidden=8, n_bins=8, epochs=1)).fit(site.train, schema)
    first = run_site_audit(site, model, seed=0, anonymeter=AnonymeterSettings(n_attacks=20))
    assert first["audit_number"] == 1 and len(first["model_sha256"]) == 64
    logged = [json.loads(line) for line in (site.dir / AUDIT_LOG).read_text().splitlines()]
    assert [entry["model_sha256"] for entry in logged] == [first["model_sha256"]]
    with pytest.raises(AuditRefusedError, match=r"hospital-a.*1 audits.*privacy.max_audits = 1"):
        run_site_audit(site, model, seed=1)
    assert len((site.dir / AUDIT_LOG).read_text().splitlines()) == 1  # a refusal is not an audit
    _sites.clear()


def test_row_level_content_is_refused() -> None:
    with pytest.raises(ValueError, match="150 numbers is not an aggregate"):
        check_audit_result({"distances": [0.1] * 150}, max_rows=300)
    with pytest.raises(ValueError, match="DataFrame is not a scalar"):
        check_audit_result({"rows": pd.DataFrame({"a": [1]})}, max_rows=300)
    with pytest.raises(ValueError, match="300 entries is not an aggregate"):
        check_audit_result({"names": ["x"] * 300}, max_rows=300)
    with pytest.raises(ValueError, match="102 entries is not an aggregate"):  # a small site's rows
        check_audit_result({"names": ["x"] * 102}, max_rows=100_000)
    with pytest.raises(ValueError, match="201 characters is not a label"):
        check_audit_result({"name": "x" * 201}, max_rows=300)
    with pytest.raises(ValueError, match="37 numbers is not an aggregate"):  # withheld cells hide nothing
        check_audit_result({"values": [0.5, None] * 18 + [None]}, max_rows=300)
    with pytest.raises(ValueError, match="mapping of 257 entries is not an aggregate"):  # one key per record
        check_audit_result({"by_patient": {f"p{i}": 0.1 for i in range(257)}}, max_rows=100_000)
    check_audit_result({"roc": [0.0] * 101, "histogram": [1] * 40, "ci": (0.1, 0.2), "name": "ok"}, max_rows=300)


def test_concurrent_queries_cannot_both_take_the_last_audit(whas500, tmp_path, monkeypatch) -> None:
    import time
    import types
    from concurrent.futures import ThreadPoolExecutor

    from fedsynth.client import audit_log
    from fedsynth.client.audit_log import record_audit

    def slow_dumps(value: object) -> str:  # widens the gap between counting and appending
        time.sleep(0.02)
        return json.dumps(value)

    monkeypatch.setattr(audit_log, "json", types.SimpleNamespace(dumps=slow_dumps))
    frame, schema = whas500
    write_site(tmp_path, frame.iloc[:200], schema, "[privacy]\nmax_audits = 5\n[training]\nholdout_fraction = 0.5\n")
    site = open_site(tmp_path)

    def attempt(index: int) -> int | None:
        try:
            return record_audit(site, f"digest-{index}", index)
        except AuditRefusedError:
            return None

    with ThreadPoolExecutor(max_workers=16) as pool:
        numbers = list(pool.map(attempt, range(40)))
    # Exactly the cap is answered, each with its own number; the other 35 are refused.
    assert sorted(n for n in numbers if n is not None) == [1, 2, 3, 4, 5]
    assert len((site.dir / AUDIT_LOG).read_text().splitlines()) == 5
    _sites.clear()
