"""The run report: verdict banner, budget, audits, utility and the DP statement, from real run files.

What the HTML looks like in a browser is tests/release/test_report_browser.py; here the content,
the escaping, self-containment and the notes for missing or older inputs.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.client.config import PrivacyConfig
from fedsynth.release.bundle import sign_off
from fedsynth.release.keys import load_private_key
from fedsynth.release.policy import Policy, default_policy_path, load_policy
from fedsynth.release.report import RULE_GLOSSES, write_report

IMAGE = re.compile(r'<img src="([^"]*)"')


def _images(text: str) -> list[bytes]:
    sources = IMAGE.findall(text)
    assert all(s.startswith("data:image/png;base64,") for s in sources), "every figure is embedded"
    return [base64.b64decode(s.split(",", 1)[1]) for s in sources]


def _policy(directory: Path, *replacements: tuple[str, str]) -> tuple[Policy, str]:
    """The default policy with lines replaced, as the board would edit a copy of it."""
    text = default_policy_path().read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path = directory / "policy.toml"
    path.write_text(text)
    return load_policy(path), text


def _without_figure_data(run: Path) -> None:
    """Strip what an older fedsynth's evaluation.json lacked (histograms, correlations, curves)."""
    evaluation = json.loads((run / "evaluation.json").read_text())
    for site in evaluation["sites"]:
        site["fidelity"].pop("histograms", None)
        site["fidelity"].pop("correlation_matrices", None)
        for model in site["models"].values():
            for entry in model.get("calibration", []):
                (entry.get("overall") or {}).pop("curve", None)
    (run / "evaluation.json").write_text(json.dumps(evaluation))


def test_recorded_run_without_signoff_reports_every_section_and_what_is_missing(demo_run: Path) -> None:
    _without_figure_data(demo_run)
    text = write_report(demo_run, demo_run / "report.html", None).read_text()
    assert "Not signed off" in text and "fedsynth signoff RUN_DIR" in text
    for heading in ("Privacy budget", "Privacy audits", "Survival utility", "What was and was not"):
        assert f"<h2>{heading}" in text
    # The budget table carries every site's spent epsilon as recorded.
    budget = json.loads((demo_run / "budget.json").read_text())
    for site in budget["sites"]:
        assert f"<td>{site['site']}</td>" in text and f"{site['epsilon_spent']:.4g}" in text
    # Withheld TPRs are shown as withheld, with the reason, never as a number.
    assert "withheld (17 non-members &lt; 100 needed)" in text
    # The size the sites evaluated: the release's.
    size = json.loads((demo_run / "audit.json").read_text())["sample"]["n"]
    assert f"its own model-only sample of {size} rows, the release&#x27;s size" in text
    # An evaluation without histograms, correlations and calibration curves: notes, not figures.
    for missing in ("fidelity.histograms", "fidelity.correlation_matrices", "models.*.calibration[].overall.curve"):
        assert text.count(f"evaluation.json has no {missing}") == 3
    # budget + 3 audit figures + KM and forest plot per site, every one a decodable PNG.
    images = _images(text)
    assert len(images) == 1 + 3 + 2 * 3
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 5000 for image in images)
    # Self-contained: nothing to fetch, no script.
    assert not re.search(r"(https?:)?//[a-z]", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text))
    assert "<script" not in text.lower() and '<link rel="stylesheet"' not in text


def test_current_evaluation_draws_marginals_correlations_and_calibration(current_evaluation_run: Path) -> None:
    text = write_report(current_evaluation_run, current_evaluation_run / "report.html", None).read_text()
    for caption in ("Marginal histograms", "Correlation heatmaps", "Calibration curves", "Kaplan-Meier"):
        assert f"site-0: {caption}" in text
    assert "evaluation.json has no" not in text
    assert len(_images(text)) == 1 + 3 + 5


def test_pass_verdict_names_each_rules_value_threshold_and_reason(demo_run: Path, board_keys, demo_policy_path) -> None:
    policy = load_policy(demo_policy_path)
    verdict, bundle = sign_off(demo_run, policy, demo_policy_path.read_text(), load_private_key(board_keys[0]))
    assert verdict.passed and bundle is not None
    text = write_report(demo_run, demo_run / "report.html", None).read_text()  # read back from signoff.json
    assert 'class="banner pass"' in text and "PASS: every rule of policy" in text
    for rule in verdict.rules:
        assert f"<code>{rule.name}</code>" in text
        assert html.escape(rule.reason) in text and html.escape(rule.threshold) in text
        assert html.escape(RULE_GLOSSES[rule.name]) in text  # every rule has its plain-language line


def test_fail_and_forced_banners_name_the_failed_rules_and_the_reason(
    demo_run: Path, board_keys, tmp_path: Path
) -> None:
    strict = ("max_epsilon = 4.0", "max_epsilon = 1.0")
    policy, text = _policy(tmp_path, strict)
    key = load_private_key(board_keys[0])
    verdict, bundle = sign_off(demo_run, policy, text, key)
    assert not verdict.passed and bundle is None
    report = write_report(demo_run, demo_run / "report.html", None).read_text()
    assert 'class="banner fail"' in report and "max_epsilon" in report.split("</div>")[0].split("banner fail")[1]

    forced = Path(shutil.copytree(demo_run, demo_run.parent / "forced"))
    (forced / "signoff.json").unlink()
    policy, text = _policy(tmp_path, strict, ("include_site_results = false", "include_site_results = true"))
    reason = "board accepts epsilon 4 <for> this cohort"
    verdict, bundle = sign_off(forced, policy, text, key, force_reason=reason)
    assert bundle is not None
    for path in (write_report(forced, forced / "report.html", None), bundle / "report.html"):
        report = path.read_text()
        assert 'class="banner forced"' in report
        assert "Reason: board accepts epsilon 4 &lt;for&gt; this cohort" in report
        assert path.stat().st_mode & 0o777 == 0o600  # it carries audit and evaluation results: not DP


def test_missing_inputs_give_notes_with_the_command_that_makes_them(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    text = write_report(run, tmp_path / "report.html", None).read_text()
    for expected in (
        "run `fedsynth audit RUN_DIR`",
        "run `fedsynth evaluate RUN_DIR`",
        "run `fedsynth budget RUN_DIR`",
    ):
        assert expected in text
    assert "<h2>Missing inputs" in text and "Not signed off" in text and "no synthetic data" in text
    assert _images(text) == []
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644  # no site result in it: nothing but DP


def test_incomplete_audit_and_unreadable_signoff_are_reported_not_fatal(demo_run: Path) -> None:
    audit = json.loads((demo_run / "audit.json").read_text())
    audit["sites"] = audit["sites"][:2]
    audit |= {"complete": False, "worst": None, "failures": [{"node_id": 7, "reason": "timed out"}]}
    (demo_run / "audit.json").write_text(json.dumps(audit))
    (demo_run / "signoff.json").write_text("{not json")
    text = write_report(demo_run, demo_run / "report.html", None).read_text()
    assert "node 7: timed out" in text and "audit.json is incomplete" in text
    assert "signoff.json is unreadable" in text and "Not signed off" in text


def test_a_document_of_an_unexpected_shape_costs_its_section_only(demo_run: Path) -> None:
    audit = json.loads((demo_run / "audit.json").read_text())
    del audit["sites"][1]["nearest_neighbour"]
    (demo_run / "audit.json").write_text(json.dumps(audit))
    text = write_report(demo_run, demo_run / "report.html", None).read_text()
    assert "audit.json does not have the expected structure (KeyError: &#x27;nearest_neighbour&#x27;)" in text
    # budget; per site: KM, forest, marginals, correlations, calibration
    assert "<h2>Survival utility" in text and len(_images(text)) == 1 + 5 * 3


def test_every_string_from_the_run_is_escaped(demo_run: Path) -> None:
    hostile = '<script>alert("x")</script><img src="https://example.org/t.png">'
    for name in ("budget.json", "audit.json", "evaluation.json"):
        document = json.loads((demo_run / name).read_text())
        document["sites"][0]["site"] = hostile
        (demo_run / name).write_text(json.dumps(document))
    text = write_report(demo_run, demo_run / "report.html", None).read_text()
    assert "<script" not in text and 'src="https://' not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


def test_report_command_writes_the_report(demo_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(demo_run)])
    assert result.exit_code == 0, result.output
    assert (demo_run / "report.html").read_text().startswith(
        "<!DOCTYPE html>"
    ) and "report.html" in result.output.replace("\n", "")
    empty, target = tmp_path / "empty", tmp_path / "elsewhere.html"
    empty.mkdir()
    assert CliRunner().invoke(app, ["report", str(empty), "-o", str(target)]).exit_code == 0
    assert "Not signed off" in target.read_text()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "run directory not found" in missing.output


def test_an_inconclusive_verdict_has_its_own_banner_and_says_what_would_decide(demo_run: Path, board_keys) -> None:
    from tests.release.conftest import DEMO_POLICY_EDITS

    edits = [edit for edit in DEMO_POLICY_EDITS if "mia_tpr_withheld" not in edit[0]]  # withheld: INCONCLUSIVE
    policy, text = _policy(demo_run.parent, *edits)
    verdict, bundle = sign_off(demo_run, policy, text, load_private_key(board_keys[0]))
    assert verdict.outcome == "INCONCLUSIVE" and bundle is None
    report = write_report(demo_run, demo_run / "report.html", None).read_text()
    assert 'class="banner inconclusive"' in report and "mia_tpr_at_1pct_fpr" in report.split("banner inconclusive")[1]
    assert '<span class="unsure">INCONCLUSIVE</span>' in report
    assert "Would decide with: at least 100 holdout rows at site-0, site-1, site-2." in report


def _text(markup: str) -> str:
    """The report's words as a reader sees them: tags dropped, entities decoded, cells separated by |."""
    plain = re.sub(r"<[^>]+>", "|", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", markup))
    return html.unescape(re.sub(r"\|+", "|", plain))


def test_fidelity_section_marks_every_column_against_the_policy(demo_run: Path, board_keys, tmp_path: Path) -> None:
    policy, text = _policy(tmp_path)  # the default policy: this run's near-uniform marginals fail it
    verdict, _ = sign_off(demo_run, policy, text, load_private_key(board_keys[0]))
    assert verdict.outcome == "FAIL"
    path = write_report(demo_run, demo_run / "report.html", None)
    assert path.stat().st_mode & 0o777 == 0o600  # audits and evaluations are not DP
    report = _text(path.read_text())
    section = report.split("|Fidelity|")[1].split("|Survival utility|")[0]
    pooled = json.loads((demo_run / "evaluation.json").read_text())["worst"]["fidelity"]
    assert len(pooled["columns"]) == 16  # every WHAS500 column, time and event included
    for name, column in pooled["columns"].items():
        over = column["value"] > (0.15 if column["statistic"] == "ks" else 0.10)
        mark = "over: beyond the noise floor" if over and column["value"] > column["noise_critical"] else "within"
        assert f"|{name}|" in section and f"|{column['value']:.3g}|{column['noise_expected']:.3g}|" in section
        assert f"|{column['noise_critical']:.3g}|" in section and mark in section.split(f"|{name}|")[1][:200]
    assert "|lenfol|integer (time)|KS|" in section and "|fstat|binary (event)|TVD|" in section
    assert f"mean KS over 7 columns|{pooled['mean_ks']['value']:.3g}|" in section
    assert f"worst column by KS: {pooled['worst_ks']['column']}|" in section
    assert f"worst column by TVD: {pooled['worst_tvd']['column']}|" in section
    assert "|<= 0.15|" in section and "|<= 0.1|" in section and "noise floor" in section
    for site in ("site-0", "site-1", "site-2"):  # a histogram of every column per site
        assert f"{site}: Marginal histograms on the public bins, real vs synthetic, every column" in section
    assert "drawn hatched: unknown, not zero" in section


def _with_marginal_release(run: Path, noise: float) -> None:
    """The run as if each site had released DP marginal tables first (round 0), budget.json rebuilt."""
    from fedsynth.client.rdp import rdp_epsilon
    from fedsynth.server.budget import budget_report

    records = [json.loads(line) for line in (run / "budget.jsonl").read_text().splitlines()]
    released = []
    for record in (r for r in records if r["round"] == 1):
        epsilon = rdp_epsilon([(noise, 1.0, 1)], record["delta"])
        kept = {k: record[k] for k in ("node_id", "time", "site", "delta", "target-epsilon")}
        step = {"noise-multiplier": noise, "sample-rate": 1.0, "steps": 1, "epsilon": epsilon, "epsilon-step": epsilon}
        released.append({**kept, **step, "round": 0, "mechanism": "marginals", "status": "ok"})
    (run / "budget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in released + records))
    (run / "budget.json").write_text(json.dumps(budget_report(run)))


def test_budget_section_states_the_split_between_marginal_tables_and_dp_sgd(demo_run: Path) -> None:
    from fedsynth.client.rdp import rdp_epsilon

    before = _text(write_report(demo_run, demo_run / "report.html", None).read_text())
    assert "ε marginal tables alone" in before and "|none released|" in before
    assert "carries no DP marginal tables" in before and "What ε and δ mean" in before

    _with_marginal_release(demo_run, noise=8.0)
    (demo_run / "model" / "marginals.json").write_text("{}")
    report = _text(write_report(demo_run, demo_run / "report.html", None).read_text())
    budget = json.loads((demo_run / "budget.json").read_text())
    for site in budget["sites"]:
        alone = rdp_epsilon([(8.0, 1.0, 1)], site["delta"])
        training = rdp_epsilon([(site["noise_multiplier"], site["sample_rate"], site["steps"])], site["delta"])
        composed = site["epsilon_spent"]
        assert max(alone, training) < composed < alone + training  # RDP composes below the sum
        default = f"{PrivacyConfig().marginals_share:g} by default"
        slope = "none released"  # this run predates the slope release
        row = f"|{site['site']}|{alone:.4g}|{training:.4g}|{slope}|{composed:.4g}|{alone + training:.4g}|8|{default}"
        assert row in report
    assert "less than the sum" in report and "samples are calibrated to them" in report


def test_fidelity_section_shows_each_modelled_columns_missing_share(demo_run: Path) -> None:
    evaluation = json.loads((demo_run / "evaluation.json").read_text())
    columns = evaluation["worst"]["fidelity"]["columns"]
    columns["bmi"]["missing"] = {"real": 0.3, "synthetic": 0.28}
    columns["chf"]["missing"] = {"real": None, "synthetic": 0.01}  # a site withheld its small count
    for site in evaluation["sites"]:  # the histograms carry the shares too; the figures still draw
        site["fidelity"]["histograms"]["bmi"]["missing"] = {"real": 0.3, "synthetic": 0.28}
    (demo_run / "evaluation.json").write_text(json.dumps(evaluation))
    report = _text(write_report(demo_run, demo_run / "report.html", None).read_text())
    section = report.split("|Fidelity|")[1].split("|Survival utility|")[0]
    assert "|Missing values|" in section
    assert "|bmi|0.3|0.28|-0.02|" in section and "|chf|withheld|0.01|n/a|" in section
    assert "site-0: Marginal histograms on the public bins" in section and "not drawn" not in section


def test_fidelity_section_names_the_pair_whose_correlation_the_synthetic_rows_miss_most(demo_run: Path) -> None:
    evaluation = json.loads((demo_run / "evaluation.json").read_text())
    matrices = evaluation["sites"][0]["fidelity"]["correlation_matrices"]
    first, second = matrices["columns"][:2]
    for side, value in (("real", 0.95), ("synthetic", -0.05)):  # a gap of 1.0: no recorded pair misses more
        matrices[side][0][1] = matrices[side][1][0] = value
    (demo_run / "evaluation.json").write_text(json.dumps(evaluation))
    report = _text(write_report(demo_run, demo_run / "report.html", None).read_text())
    section = report.split("|Fidelity|")[1].split("|Survival utility|")[0]
    assert "|Dependence between columns|" in section
    assert f"|site-0|{first} / {second}|0.95|-0.05|1|" in section
    assert all(f"|site-{i}|" in section for i in (1, 2))  # every site that sent its matrices has a row
