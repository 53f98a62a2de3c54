"""The policy file: the shipped default loads; every error names section.field and the value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedsynth.release.policy import Policy, PolicyError, default_policy_path, load_policy


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    text = default_policy_path().read_text()
    assert old in text
    path = tmp_path / "policy.toml"
    path.write_text(text.replace(old, new))
    return path


def test_the_default_policy_states_every_rule_with_its_reasoning() -> None:
    policy = load_policy()
    assert policy.name == "fedsynth default" and len(policy.source_sha256 or "") == 64
    text = default_policy_path().read_text()
    for section in ("budget", "audit", "fidelity", "utility", "release"):
        for field in type(getattr(policy, section)).model_fields:
            # each threshold is preceded by a comment giving its reason
            match = re.search(rf"((?:#.*\n)+){field} = ", text)
            assert match, f"{section}.{field} has no comment above it in default_policy.toml"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("max_epsilon = 4.0", "max_epsilon = -1", r"budget\.max_epsilon: Input should be greater than 0 \(got -1\)"),
        ("max_exact_matches = 0", "max_exact_matches = 'none'", r"audit\.max_exact_matches: .*\(got 'none'\)"),
        (
            'mia_tpr_withheld = "inconclusive"',
            'mia_tpr_withheld = "maybe"',
            r"audit\.mia_tpr_withheld: Input should be",
        ),
        ("max_mean_ks = 0.08", "max_mean_ks = 0", r"fidelity\.max_mean_ks: Input should be greater than 0 \(got 0\)"),
        ("max_column_tvd = 0.10", "max_column_tvd = 'ten'", r"fidelity\.max_column_tvd: .*\(got 'ten'\)"),
        (
            "max_mean_tvd = 0.03",
            "",
            r"fidelity\.max_mean_tvd: Field required .*fix: add max_mean_tvd = <value> to \[fidelity\]",
        ),
        (
            "max_column_ks = 0.15",
            "max_column_ks = 1.5",
            r"fidelity\.max_column_ks: Input should be less than or equal to 1",
        ),
        ("[fidelity]", "[fidelty]", r"unknown section\(s\) \['fidelty'\]"),
        (
            "max_dcr_share_ci_half_width = 0.05",
            "max_dcr_share_ci_half_width = 0.9",
            r"audit\.max_dcr_share_ci_half_width: Input should be less than or equal to 0\.5",
        ),
        ("max_tstr_ici = 0.35", "max_tstr_icl = 0.35", r"utility\.max_tstr_icl: Extra inputs are not permitted"),
        ("max_tstr_ici = 0.35", "", r"utility\.max_tstr_ici: Field required"),
        ("[release]", "[releases]", r"unknown section\(s\) \['releases'\]"),
        ("max_epsilon = 4.0", "max_epsilon = ", r"not valid TOML"),
        ('name = "fedsynth default"', 'name = "x"\nsource_sha256 = "0"', r"policy\.source_sha256 is set by fedsynth"),
    ],
)
def test_policy_errors_name_the_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_toml(_edited(tmp_path, old, new))


def test_the_default_policy_holds_the_gate_the_issue_asks_for() -> None:
    policy = load_policy()
    assert policy.fidelity.model_dump() == {
        "max_mean_ks": 0.08,
        "max_mean_tvd": 0.03,
        "max_column_ks": 0.15,
        "max_column_tvd": 0.10,
        "max_missing_share_gap": 0.10,
    }
    assert policy.utility.max_tstr_c_index_gap == 0.05 and policy.utility.min_hr_in_ci_fraction == 0.65
    assert policy.audit.mia_tpr_withheld == "inconclusive" and policy.audit.max_dcr_share_ci_half_width == 0.05


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"policy file not found: .*nope\.toml"):
        load_policy(tmp_path / "nope.toml")
