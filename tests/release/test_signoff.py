"""The verdict: a real DP demo run with near-uniform marginals FAILS the default policy and
PASSES one at its level; its training rows released as "synthetic" data FAIL it, audited by the
sites' own audit code; missing evidence FAILS; evidence without power is INCONCLUSIVE."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.client.app import _sites, open_site
from fedsynth.client.audit import run_site_audit
from fedsynth.data.io import write_text
from fedsynth.model.generators import load_generator
from fedsynth.model.mcm import MCM
from fedsynth.release.policy import load_policy
from fedsynth.release.signoff import evaluate_policy
from fedsynth.server.audit import worst_over_sites
from fedsynth.server.config import FederationConfig
from fedsynth.server.simulation import prepare_sites
from fedsynth.server.site_queries import site_query_document


def _rules(verdict) -> dict:
    return {rule.name: rule for rule in verdict.rules}


FIDELITY = ("fidelity_mean_ks", "fidelity_mean_tvd", "fidelity_column_ks", "fidelity_column_tvd")


def test_the_default_policy_fails_the_dp_demo_run_on_fidelity_and_utility(demo_run: Path) -> None:
    verdict = evaluate_policy(demo_run, load_policy())
    rules = _rules(verdict)
    assert verdict.outcome == "FAIL" and not verdict.passed
    # Near-uniform marginals, far beyond what noise gives at 134 rows per site: FAIL, not INCONCLUSIVE.
    for name in FIDELITY:
        assert rules[name].outcome == "FAIL" and "beyond what noise at these sizes gives" in rules[name].reason
    assert "sho" in rules["fidelity_column_tvd"].reason  # shock: 4% real, about half in the samples
    assert rules["tstr_c_index_gap"].outcome == "FAIL" and rules["hr_in_ci_fraction"].outcome == "FAIL"
    # 33 holdout rows per site: the TPR at 1% FPR is withheld, INCONCLUSIVE by default, saying what would measure it.
    withheld = rules["mia_tpr_at_1pct_fpr"]
    assert withheld.outcome == "INCONCLUSIVE" and not withheld.passed
    assert (
        withheld.value == "withheld" and "site-0, site-1, site-2" in withheld.reason and "e^epsilon" in withheld.reason
    )
    assert withheld.power == "at least 100 holdout rows at site-0, site-1, site-2"
    assert withheld in verdict.inconclusive_rules and withheld in verdict.failed_rules


def test_the_dp_demo_run_passes_a_policy_at_its_level_and_every_rule_names_its_value(
    demo_run: Path, demo_policy
) -> None:
    verdict = evaluate_policy(demo_run, demo_policy)
    rules = _rules(verdict)
    assert verdict.passed and verdict.outcome == "PASS", [r for r in verdict.rules if not r.passed]
    assert all(rule.outcome == "PASS" for rule in verdict.rules)
    audit = json.loads((demo_run / "audit.json").read_text())["worst"]
    evaluation = json.loads((demo_run / "evaluation.json").read_text())["worst"]
    budget = json.loads((demo_run / "budget.json").read_text())["sites"]
    assert rules["max_epsilon"].value == max(s["epsilon_spent"] for s in budget)
    assert rules["delta_below_1_over_n"].value == max(s["delta"] * s["records"] for s in budget)
    # The default policy pools the DCR share, Anonymeter and the hazard ratios over sites.
    for name, key in [
        ("dcr_share_upper_ci", "dcr_share_pooled_upper_ci"),
        ("exact_matches", "exact_matches"),
        ("mia_auc_upper_ci", "mia_auc_upper_ci"),
        ("empirical_epsilon", "empirical_minus_accountant_epsilon"),
        ("anonymeter_risk_upper_ci", "anonymeter_risk_pooled_upper_ci"),
    ]:
        assert rules[name].value == audit[key]
    assert "pooled over sites" in rules["dcr_share_upper_ci"].reason
    assert rules["hr_in_ci_fraction"].value == evaluation["hr_in_ci_pooled_fraction"]
    assert rules["tstr_c_index_gap"].value == evaluation["tstr_uno_c_shortfall"]
    assert rules["tstr_calibration_ici"].value == evaluation["tstr_ici"]
    fidelity = evaluation["fidelity"]
    assert rules["fidelity_mean_ks"].value == fidelity["mean_ks"]["value"]
    assert rules["fidelity_mean_tvd"].value == fidelity["mean_tvd"]["value"]
    assert rules["fidelity_column_ks"].value == fidelity["worst_ks"]["value"]
    assert fidelity["worst_ks"]["column"] in rules["fidelity_column_ks"].reason
    assert rules["fidelity_column_tvd"].value == fidelity["worst_tvd"]["value"]
    # A withheld TPR: "pass" accepts the DP bound, "fail" fails, "inconclusive" (the default) neither.
    withheld = rules["mia_tpr_at_1pct_fpr"]
    assert withheld.value == "withheld" and "mia_tpr_withheld = 'pass'" in withheld.reason
    for setting, outcome in (("fail", "FAIL"), ("inconclusive", "INCONCLUSIVE")):
        policy = demo_policy.model_copy(
            update={"audit": demo_policy.audit.model_copy(update={"mia_tpr_withheld": setting})}
        )
        judged = evaluate_policy(demo_run, policy)
        assert _rules(judged)["mia_tpr_at_1pct_fpr"].outcome == outcome and judged.outcome == outcome


def test_a_dcr_upper_limit_over_the_threshold_from_too_wide_a_ci_is_inconclusive(demo_run: Path) -> None:
    document = json.loads((demo_run / "audit.json").read_text())
    threshold, limit = load_policy().audit.max_dcr_share_upper_ci, load_policy().audit.max_dcr_share_ci_half_width

    def judged(estimate: float, upper: float):
        document["worst"].update(
            dcr_share_pooled=estimate, dcr_share_pooled_upper_ci=upper, dcr_share_site_max=estimate
        )
        (demo_run / "audit.json").write_text(json.dumps(document))
        return _rules(evaluate_policy(demo_run, load_policy()))["dcr_share_upper_ci"]

    wide = judged(0.50, threshold + 0.02)  # half-width 0.12: cannot tell 0.5 from 0.55 and over
    assert wide.outcome == "INCONCLUSIVE" and "max_dcr_share_ci_half_width" in wide.reason
    assert wide.power and "holdout rows" in wide.power
    narrow = judged(threshold - limit / 2, threshold + limit / 4)  # the CI has power: it is over
    assert narrow.outcome == "FAIL" and narrow.power is None
    over = judged(threshold + 0.01, threshold + 0.2)  # the estimate itself is over: FAIL however wide
    assert over.outcome == "FAIL"
    assert judged(0.45, threshold - 0.01).outcome == "PASS"  # within at any width: the CI carries the size


def test_worst_site_policy_reads_the_worst_site(demo_run: Path) -> None:
    policy = load_policy()
    worst = policy.model_copy(
        update={
            "audit": policy.audit.model_copy(update={"combine_sites": "worst"}),
            "utility": policy.utility.model_copy(update={"combine_sites": "worst"}),
        }
    )
    rules = _rules(evaluate_policy(demo_run, worst))
    audit = json.loads((demo_run / "audit.json").read_text())["worst"]
    evaluation = json.loads((demo_run / "evaluation.json").read_text())["worst"]
    assert rules["dcr_share_upper_ci"].value == audit["dcr_share_upper_ci"]
    assert rules["anonymeter_risk_upper_ci"].value == audit["anonymeter_risk_upper_ci"]
    assert rules["hr_in_ci_fraction"].value == evaluation["hr_in_ci_fraction"]
    assert "(worst site)" in rules["dcr_share_upper_ci"].reason
    # The worst site's upper limit is never below the pooled one's point estimate.
    assert audit["dcr_share_upper_ci"] >= audit["dcr_share_pooled"]


def test_a_site_whose_own_data_show_a_leak_fails_a_pooled_rule(demo_run: Path) -> None:
    document = json.loads((demo_run / "audit.json").read_text())
    assert _rules(evaluate_policy(demo_run, load_policy()))["dcr_share_upper_ci"].passed
    threshold = load_policy().audit.max_dcr_share_upper_ci
    document["worst"]["dcr_share_site_max"] = threshold + 0.01  # one site's own share over the bound
    (demo_run / "audit.json").write_text(json.dumps(document))
    rule = _rules(evaluate_policy(demo_run, load_policy()))["dcr_share_upper_ci"]
    assert not rule.passed and rule.value == document["worst"]["dcr_share_pooled_upper_ci"]
    assert f"one site's own estimate {threshold + 0.01:.4g} is above {threshold:g}" in rule.reason
    # A reply without what pooling needs (an older fedsynth) fails the pooled rules, saying so.
    document["worst"].update(dcr_share_pooled_upper_ci=None, pooling_problem="cannot pool DCR shares without ...")
    (demo_run / "audit.json").write_text(json.dumps(document))
    rule = _rules(evaluate_policy(demo_run, load_policy()))["dcr_share_upper_ci"]
    assert not rule.passed and "not pooled: cannot pool DCR shares" in rule.reason


class CopyOfTraining(MCM):
    """A "generator" that releases its site's training rows: what the policy must stop."""

    rows: pd.DataFrame

    def sample(self, n: int, conditions=None, seed: int = 0) -> pd.DataFrame:
        return self.rows.iloc[:n].reset_index(drop=True)


def test_a_copy_of_the_training_data_fails(demo_run: Path, tmp_path: Path) -> None:
    # The demo's own sites (same dataset, partition and seed), each audited by the real site audit
    # of a model whose "samples" are that site's training rows.
    config = FederationConfig.from_dict(
        {
            "federation": {"rounds": 3, "min_sites": 3, "run_dir": str(tmp_path / "sites-run")},
            "simulation": {"dataset": "whas500", "sites": 3, "seed": 0},
            "site": {"privacy": {"target_epsilon": 4.0}, "training": {"local_epochs": 5}},
        }
    )
    _, sites_root = prepare_sites(config)
    dp_model = load_generator(demo_run / "model")
    results, copies = [], []
    try:
        for site_dir in sorted(sites_root.glob("site-*")):
            site = open_site(site_dir)
            copying = CopyOfTraining(dp_model.config)
            copying.__dict__.update(dp_model.__dict__)
            copying.rows = site.train
            results.append(run_site_audit(site, copying, seed=0))
            copies.append(site.train)
    finally:
        _sites.clear()
    document = site_query_document(results, [], 0, worst_over_sites)
    write_text(demo_run / "audit.json", json.dumps(document))
    pd.concat(copies).to_csv(demo_run / "synthetic.csv", index=False)

    verdict = evaluate_policy(demo_run, load_policy())
    rules = _rules(verdict)
    assert not verdict.passed
    n_rows = sum(len(c) for c in copies)
    assert rules["exact_matches"].value == 1.0 and not rules["exact_matches"].passed  # every row, against chance
    assert f"{n_rows} of {n_rows} synthetic rows (100.000%) equal a training row" in rules["exact_matches"].reason
    assert rules["anonymeter_risk_upper_ci"].value > 0.95 and not rules["anonymeter_risk_upper_ci"].passed
    assert rules["mia_auc_upper_ci"].value > 0.95 and not rules["mia_auc_upper_ci"].passed
    # No DP training happened at the copying sites: measured leakage beats their accountant (0).
    assert rules["empirical_epsilon"].value > 0 and not rules["empirical_epsilon"].passed
    failed = {rule.name for rule in verdict.rules if rule.outcome == "FAIL"}
    assert {"exact_matches", "anonymeter_risk_upper_ci", "mia_auc_upper_ci", "empirical_epsilon"} <= failed
    for rule in verdict.rules:
        if rule.name in failed - {"evidence"}:
            assert rule.value is not None and "outside" in rule.reason
    # And the file is not the model's sample the sidecar names: the release binding fails it too.
    assert "synthetic.csv does not match the SHA-256" in rules["evidence"].reason


def test_missing_or_incomplete_evidence_fails_naming_it(demo_run: Path) -> None:
    (demo_run / "audit.json").unlink()
    rules = _rules(evaluate_policy(demo_run, load_policy()))
    audit_rules = ["dcr_share_upper_ci", "exact_matches", "mia_auc_upper_ci", "mia_tpr_at_1pct_fpr",
                   "empirical_epsilon", "anonymeter_risk_upper_ci", "evidence"]  # fmt: skip
    for name in audit_rules:
        assert not rules[name].passed and "audit.json is missing: run `fedsynth audit RUN_DIR`" in rules[name].reason
    assert rules["max_epsilon"].passed and rules["tstr_calibration_ici"].passed  # the rest still read their evidence

    evaluation = json.loads((demo_run / "evaluation.json").read_text())
    evaluation.update(complete=False, worst=None, failures=[{"node_id": 7, "reason": "no reply within the timeout"}])
    (demo_run / "evaluation.json").write_text(json.dumps(evaluation))
    rules = _rules(evaluate_policy(demo_run, load_policy()))
    for name in ("hr_in_ci_fraction", *FIDELITY):
        assert rules[name].outcome == "FAIL" and "evaluation.json is incomplete" in rules[name].reason
    assert "node 7: no reply within the timeout" in rules["hr_in_ci_fraction"].reason

    (demo_run / "budget.json").unlink()
    rules = _rules(evaluate_policy(demo_run, load_policy()))
    assert not rules["max_epsilon"].passed and "budget.json is missing" in rules["max_epsilon"].reason


def test_evidence_of_another_model_or_a_non_dp_sample_fails(demo_run: Path) -> None:
    audit = json.loads((demo_run / "audit.json").read_text())
    audit["model_sha256"] = "0" * 64
    (demo_run / "audit.json").write_text(json.dumps(audit))
    provenance = json.loads((demo_run / "synthetic.csv.provenance.json").read_text())
    provenance.update(mode="paper-copy-and-mask", differentially_private=False, notice="NOT DIFFERENTIALLY PRIVATE")
    (demo_run / "synthetic.csv.provenance.json").write_text(json.dumps(provenance))
    rule = _rules(evaluate_policy(demo_run, load_policy()))["evidence"]
    assert not rule.passed
    assert "audit.json is of another model than RUN_DIR/model" in rule.reason
    assert "synthetic.csv is not a DP model sample (NOT DIFFERENTIALLY PRIVATE)" in rule.reason


def test_signoff_cli_pass_writes_the_bundle_and_fail_writes_none(
    demo_run: Path, board_keys, demo_policy_path, tmp_path
) -> None:
    private, _ = board_keys
    policy = ["--policy", str(demo_policy_path)]
    result = CliRunner().invoke(app, ["signoff", str(demo_run), "--key", str(private), *policy], terminal_width=200)
    assert result.exit_code == 0, result.output
    gap = json.loads((demo_run / "evaluation.json").read_text())["worst"]["tstr_uno_c_shortfall"]
    assert "PASS" in result.output and "tstr_c_index_gap" in result.output and f"{gap:.4g}" in result.output
    assert (demo_run / "release" / "manifest.json").exists()
    record = json.loads((demo_run / "signoff.json").read_text())
    assert record["verdict"]["passed"] is True and record["bundle"] == str(demo_run / "release")

    (demo_run / "audit.json").unlink()
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["signoff", str(demo_run), "--key", str(private), "-o", str(out), *policy])
    assert result.exit_code == 1 and "FAIL" in result.output and "no release bundle" in result.output
    assert not out.exists() and not list(tmp_path.glob(".bundle.*"))
    assert json.loads((demo_run / "signoff.json").read_text())["verdict"]["passed"] is False

    result = CliRunner().invoke(app, ["signoff", str(demo_run), "--key", str(private), "-o", str(out), "--force"])
    assert result.exit_code == 2 and "--force needs --reason" in result.output and not out.exists()

    reason = "board minutes 2026-11-22: audit re-run scheduled"
    args = ["signoff", str(demo_run), "--key", str(private), "-o", str(out), "--force", "--reason", reason, *policy]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verdict"]["passed"] is False
    assert manifest["forced"]["reason"] == reason and "exact_matches" in manifest["forced"]["failed_rules"]


def test_signoff_cli_inconclusive_exits_3_naming_what_would_give_power(demo_run: Path, board_keys, tmp_path) -> None:
    from tests.release.conftest import DEMO_POLICY_EDITS, edited_policy_text

    # The demo policy, except that a withheld MIA TPR is INCONCLUSIVE (as in the default policy).
    edits = [edit for edit in DEMO_POLICY_EDITS if "mia_tpr_withheld" not in edit[0]]
    policy = tmp_path / "policy.toml"
    policy.write_text(edited_policy_text(*edits))
    out = tmp_path / "bundle"
    args = ["signoff", str(demo_run), "--key", str(board_keys[0]), "--policy", str(policy), "-o", str(out)]
    result = CliRunner().invoke(app, args, terminal_width=300)
    assert result.exit_code == 3, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("INCONCLUSIVE:"))
    assert "mia_tpr_at_1pct_fpr (at least 100 holdout rows at site-0, site-1, site-2)" in line
    assert "no release bundle written (the verdict is INCONCLUSIVE" in result.output and not out.exists()
    record = json.loads((demo_run / "signoff.json").read_text())["verdict"]
    assert record["outcome"] == "INCONCLUSIVE" and record["passed"] is False

    reason = "board minutes: the sites' holdouts are too small for the TPR; DP bound accepted"
    result = CliRunner().invoke(app, [*args, "--force", "--reason", reason])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verdict"]["outcome"] == "INCONCLUSIVE" and manifest["forced"]["reason"] == reason
    assert manifest["forced"]["failed_rules"] == ["mia_tpr_at_1pct_fpr"]


def test_a_failure_while_bundling_leaves_nothing(demo_run: Path, board_keys, demo_policy_path, tmp_path) -> None:
    (demo_run / "schema.toml").unlink()  # not a rule's evidence, but the bundle needs it
    out = tmp_path / "bundle"
    args = ["signoff", str(demo_run), "--key", str(board_keys[0]), "-o", str(out), "--policy", str(demo_policy_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "schema.toml is missing" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [demo_run]


def test_signoff_refuses_a_public_key_before_any_work(demo_run: Path, board_keys) -> None:
    result = CliRunner().invoke(app, ["signoff", str(demo_run), "--key", str(board_keys[1])])
    assert result.exit_code == 2 and "is a public key; signing needs the private key" in result.output
    assert not (demo_run / "signoff.json").exists()


@pytest.mark.parametrize("include", [False, True])
def test_the_bundle_carries_site_results_only_if_the_policy_asks(
    demo_run: Path, board_keys, demo_policy, include
) -> None:
    from fedsynth.release.bundle import sign_off
    from fedsynth.release.keys import load_private_key

    policy = demo_policy
    policy = policy.model_copy(update={"release": policy.release.model_copy(update={"include_site_results": include})})
    _, bundle = sign_off(demo_run, policy, "policy text", load_private_key(board_keys[0]))
    assert bundle is not None
    manifest = json.loads((bundle / "manifest.json").read_text())
    rules = {rule["name"]: rule for rule in manifest["verdict"]["rules"]}
    budget = json.loads((demo_run / "budget.json").read_text())
    spent = max(site["epsilon_spent"] for site in budget["sites"])
    assert rules["max_epsilon"]["value"] == pytest.approx(spent) and 3.9 < spent <= 4.0  # DP accounting: public
    assert (rules["dcr_share_upper_ci"]["value"] is None) is not include
    assert ((bundle / "audit.json").exists(), (bundle / "evaluation.json").exists()) == (include, include)
    assert (
        manifest["model"]["manifest_sha256"]
        == json.loads((demo_run / "synthetic.csv.provenance.json").read_text())["model_sha256"]
    )
    assert manifest["policy"]["release"]["include_site_results"] is include
    assert (bundle / "policy.toml").read_text() == "policy text"
