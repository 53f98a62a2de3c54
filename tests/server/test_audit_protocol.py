"""The federated audit on Flower's simulation engine: every site audits, the coordinator combines."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.cli.base import console
from fedsynth.cli.federation_commands import print_site_query_summary
from fedsynth.client.app import make_client_app
from fedsynth.model.mcm import MCM
from fedsynth.model.rows_digest import rows_digest
from fedsynth.server.audit import run_audit
from fedsynth.server.config import FederationConfig
from fedsynth.server.run import RunDirectory
from tests.server.conftest import whas500_config
from tests.server.in_process import InProcessSites

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def config(two_round_run, tmp_path_factory) -> FederationConfig:
    """A copy of the shared DP simulation run (3 sites, epsilon 2, two rounds) that both site queries address."""
    run_dir = Path(shutil.copytree(two_round_run, tmp_path_factory.mktemp("q") / "run"))
    return whas500_config(run_dir, rounds=2)


def test_federated_evaluation_over_three_sites(config) -> None:
    # Horizons are the sites' call: none declared, so one public default, a quarter of lenfol's bound.
    result = CliRunner().invoke(app, ["evaluate", str(config.run_dir), "--seed", "2", "--fairness-column", "gender"])
    assert result.exit_code == 0, result.output
    assert "Survival utility per site" in result.output and "site-2" in result.output
    # About 33 holdout rows per site: said, with what it costs and the fix.
    said = " ".join(result.output.split())
    assert re.search(r"low power: holdout rows at site-0 3\d, site-1 3\d, site-2 3\d, under 100: C-index", said)
    document = json.loads((config.run_dir / "evaluation.json").read_text())
    assert [s["site"] for s in document["sites"]] == ["site-0", "site-1", "site-2"]
    assert document["complete"] is True and document["failures"] == []
    # Each site evaluates its own draw of the release's size (the pooled training rows), not of its own.
    release_size = sum(s["n_train"] for s in document["sites"])
    assert document["sample"] == {"seed": 2, "n": release_size}
    for site in document["sites"]:
        assert site["n_synthetic"] == release_size and site["sample"] == {"seed": 2, "n": release_size}
        assert site["horizons"] == [750.0]
        assert set(site["models"]) == {"trtr", "tstr", "augmented", "conditional"}
    worst = document["worst"]
    # A site whose sample has a constant covariate is reported, not scored, and named as such.
    unscored = [s["site"] for s in document["sites"] if "error" in s["models"]["tstr"]]
    assert worst["sites_not_scored"] == unscored
    shortfalls = [
        s["models"]["trtr"]["discrimination"]["uno_c"] - s["models"]["tstr"]["discrimination"]["uno_c"]
        for s in document["sites"]
        if s["site"] not in unscored
    ]
    assert worst["tstr_uno_c_shortfall"] == (pytest.approx(max(shortfalls)) if shortfalls else None)
    assert 0.0 <= worst["hr_in_ci_fraction"] <= 1.0
    verdicts = [
        c["inside_real_ci"] for s in document["sites"] for c in s["hazard_ratios"].get("covariates", {}).values()
    ]
    assert worst["hr_in_ci_compared"] == len(verdicts) > 0
    # Pooled: every site's comparisons together, withheld when a site was not scored.
    pooled = None if unscored else pytest.approx(sum(verdicts) / len(verdicts))
    assert worst["hr_in_ci_pooled_fraction"] == pooled
    assert unscored or worst["hr_in_ci_fraction"] <= worst["hr_in_ci_pooled_fraction"]
    assert "worst site" in result.output and "evaluation results" in result.output
    # Subgroup fairness across the named column, from every site, pooled into the worst-site summary.
    assert document["fairness_columns"] == ["gender"]
    assert all(list(s["fairness"]) == ["gender"] for s in document["sites"])
    pooled = worst["fairness"]["gender"]
    assert pooled["sites"] == 3 and pooled["sites_without"] == [] and set(pooled["levels"]) == {"0", "1"}
    assert pooled["levels"]["0"]["n_synthetic"] == sum(
        s["fairness"]["gender"]["levels"]["0"]["n_synthetic"] for s in document["sites"]
    )
    assert "subgroup fairness across gender" in " ".join(result.output.split())
    figures = sorted(p.name for p in (config.run_dir / "plots").glob("*.png"))
    assert [f for f in figures if f.startswith("km_")] == ["km_site-0.png", "km_site-1.png", "km_site-2.png"]
    bad = CliRunner().invoke(app, ["evaluate", str(config.run_dir), "--horizon", "-3"])
    assert bad.exit_code == 2 and "--horizon must be positive" in bad.output
    bad = CliRunner().invoke(app, ["evaluate", str(config.run_dir), "--fairness-column", "age"])
    assert bad.exit_code == 2 and "fairness column 'age' is integer" in " ".join(bad.output.split())


def test_federated_audit_over_three_sites(config) -> None:
    result = CliRunner().invoke(app, ["audit", str(config.run_dir), "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "Privacy audit per site" in result.output and "site-2" in result.output
    said = " ".join(result.output.split())
    assert re.search(r"low power: holdout rows at site-0 3\d, .*TPR at 1% FPR is withheld there", said)
    document = json.loads((config.run_dir / "audit.json").read_text())
    assert [s["site"] for s in document["sites"]] == ["site-0", "site-1", "site-2"]
    assert document["failures"] == []
    # Every site audited the one release sample: the pooled training size, the audit's seed.
    records = RunDirectory(config.run_dir).budget_records()
    pooled = sum({r["site"]: r["num-examples"] for r in records if r["status"] == "ok" and r["round"] > 0}.values())
    assert document["sample"] == {"seed": 5, "n": pooled, "conditions": []}
    release = MCM.load(config.run_dir / "model").sample(pooled, seed=5)
    assert {s["sample"]["sha256"] for s in document["sites"]} == {rows_digest(release)}
    assert all(s["n_synthetic"] == pooled for s in document["sites"])
    worst = document["worst"]
    assert worst["exact_matches"] == 0
    assert worst["dcr_share_upper_ci"] == max(s["nearest_neighbour"]["dcr_share_ci"][1] for s in document["sites"])
    # Pooled over the three sites: within the sites' range, and a narrower interval than the worst site's.
    shares = [s["nearest_neighbour"]["dcr_share"] for s in document["sites"]]
    assert min(shares) <= worst["dcr_share_pooled"] <= max(shares)
    assert worst["dcr_share_pooled_upper_ci"] <= worst["dcr_share_upper_ci"]
    attacks = {r["attack"] for s in document["sites"] for r in s["anonymeter"]}
    assert {key.split(":")[0] for key in worst["anonymeter_pooled"]} == attacks
    assert all(p["n_sites"] == 3 for p in worst["anonymeter_pooled"].values())
    # A DP model at epsilon 2: no attack reaches a high TPR at 1% FPR.
    # ~33 holdout rows per site: too few non-members to measure a TPR at 1% FPR, so it is withheld
    # (it read 0.24 on one run, 0.1 on another: noise), and said so in the table.
    assert worst["mia_tpr_at_1pct_fpr"] is None and "withheld" in result.output
    assert "worst site: dcr_share_upper_ci" in result.output
    # DP runs in the suite: no attack proves more leakage than the site's accountant allows.
    assert document["complete"] is True
    assert worst["empirical_minus_accountant_epsilon"] <= 0.0
    for site in document["sites"]:
        assert site["accountant_epsilon"] <= 2.0 + 1e-9
        assert not any(a["empirical_epsilon"]["exceeds_accountant"] for a in site["attacks"])

    # site-2's privacy officer caps audits at the one it answered: the next audit is incomplete,
    # names the refusal, and gives no worst-site figures (a site's worst case is unknown). The
    # same ServerApp query and ClientApps, carried in this process rather than on Ray (launched
    # above already).
    site_file = config.run_dir / "sites" / "site-2" / "site.toml"
    document = tomllib.loads(site_file.read_text())
    answered = len((config.run_dir / "sites" / "site-2" / "state" / "audits.jsonl").read_text().splitlines())
    document["privacy"]["max_audits"] = answered
    site_file.write_text(tomli_w.dumps(document))
    site_dirs = {node: str(config.run_dir / "sites" / f"site-{node}") for node in (0, 1, 2)}
    grid = InProcessSites(make_client_app(), site_dirs)
    try:
        again = run_audit(grid, config.run_dir, seed=6, expected_sites=3)
    finally:
        grid.close()
    assert json.loads((config.run_dir / "audit.json").read_text()) == again
    assert [s["site"] for s in again["sites"]] == ["site-0", "site-1"]
    assert again["complete"] is False and again["worst"] is None
    (failure,) = again["failures"]
    assert f"site 'site-2' has answered {answered} audits" in failure["reason"]
    assert f"privacy.max_audits = {answered}" in failure["reason"]
    with console.capture() as said:
        print_site_query_summary(again)
    assert "incomplete: not every site answered" in said.get() and "site-2" in said.get()
