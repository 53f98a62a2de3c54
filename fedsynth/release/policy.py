"""The release board's sign-off policy: one threshold per rule, read from TOML.

    [policy]
    name = "our board"

    [budget]
    max_epsilon = 4.0
    max_delta_times_n = 1.0

    [audit]
    max_dcr_share_upper_ci = 0.60
    ...

    [fidelity]
    max_mean_ks = 0.08
    ...

The shipped ``default_policy.toml`` gives every rule's reasoning. Unknown sections or fields
are refused and every threshold is required: a misspelt or forgotten threshold must not fall
back silently to a default (copy the default policy and edit it). Every error names
``section.field`` and the value given.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedsynth.config_files import read_toml, validate_sections
from fedsynth.errors import UserError

SECTIONS = ("budget", "audit", "fidelity", "utility", "release")


class PolicyError(UserError, ValueError):
    """The policy file is missing or invalid; the message names the field and the fix."""


class BudgetRules(BaseModel):
    """Thresholds on each site's DP accounting (budget.json): the formal guarantee."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_epsilon: float = Field(gt=0, description="largest epsilon any site may have spent (pass: <=)")
    max_delta_times_n: float = Field(gt=0, le=1, description="delta x training rows per site (pass: <)")


SiteCombination = Literal["pooled", "worst"]


class AuditRules(BaseModel):
    """Thresholds on the sites' privacy audit (audit.json)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    combine_sites: SiteCombination = Field(
        description="DCR share and Anonymeter: 'pooled' over sites (and no site shown above the bound) or 'worst' site"
    )
    max_dcr_share_upper_ci: float = Field(gt=0, le=1, description="pass: <=")
    max_dcr_share_ci_half_width: float = Field(
        gt=0, le=0.5, description="wider: the DCR rule cannot tell, INCONCLUSIVE unless the estimate itself fails"
    )
    max_exact_matches: int = Field(ge=0, description="synthetic rows equal to a training row, all sites (<=)")
    exact_matches_baseline: Literal["holdout", "none"] = Field(
        "holdout", description="'holdout': the synthetic share within unseen patients' upper 95%; 'none': the count"
    )
    max_mia_tpr_at_1pct_fpr: float = Field(gt=0, le=1, description="pass: <=")
    mia_tpr_withheld: Literal["pass", "fail", "inconclusive"] = Field(
        description="outcome where a site had too few non-members to measure the TPR"
    )
    max_mia_auc_upper_ci: float = Field(gt=0, le=1, description="pass: <=")
    max_empirical_epsilon_excess: float = Field(description="empirical minus accountant epsilon (<=)")
    max_anonymeter_risk_upper_ci: float = Field(gt=0, le=1, description="pass: <=")


class FidelityRules(BaseModel):
    """Thresholds on the marginal fidelity pooled over sites (evaluation.json's worst.fidelity).

    A figure whose noise floor (its 95th percentile for a sample of the real distribution at
    the sites' sizes) is above its threshold cannot tell: INCONCLUSIVE unless the value is
    beyond the floor too (then noise cannot explain it: FAIL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_mean_ks: float = Field(gt=0, le=1, description="mean KS over numeric columns (<=)")
    max_mean_tvd: float = Field(gt=0, le=1, description="mean TVD over binary and categorical columns (<=)")
    max_column_ks: float = Field(gt=0, le=1, description="every numeric column's KS (<=)")
    max_column_tvd: float = Field(gt=0, le=1, description="every binary or categorical column's TVD (<=)")
    max_missing_share_gap: float = Field(
        gt=0, le=1, description='every missing = "model" column\'s |synthetic - real| missing share (<=)'
    )


class UtilityRules(BaseModel):
    """Thresholds on the sites' survival-utility evaluation (evaluation.json)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    combine_sites: SiteCombination = Field(
        description="hazard ratios in the real CI: 'pooled' over every site's covariates or the 'worst' site's share"
    )
    min_hr_in_ci_fraction: float = Field(ge=0, le=1, description="pass: >=")
    max_tstr_c_index_gap: float = Field(gt=0, le=1, description="TRTR minus TSTR Uno C-index (<=)")
    max_tstr_ici: float = Field(gt=0, le=1, description="calibration ICI of the TSTR model (<=)")


class ReleaseRules(BaseModel):
    """What the bundle needs besides a passing verdict, and what it may carry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    require_site_approvals: bool = Field(description="verify fails unless every site signed the manifest")
    include_site_results: bool = Field(
        False, description="bundle audit.json, evaluation.json, the rules' values and the report"
    )


class Policy(BaseModel):
    """A release board's sign-off policy; ``source_sha256`` pins the file it was read from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("unnamed policy", min_length=1, max_length=200)
    description: str = ""
    budget: BudgetRules
    audit: AuditRules
    fidelity: FidelityRules
    utility: UtilityRules
    release: ReleaseRules
    source_sha256: str | None = Field(None, description="SHA-256 of the TOML text (set on load, not in the file)")

    @classmethod
    def from_toml(cls, path: str | Path) -> Policy:
        path = Path(path)
        data = read_toml(path, PolicyError, "policy file")
        if "source_sha256" in data.get("policy", {}):
            raise PolicyError(f"{path}: policy.source_sha256 is set by fedsynth on load; remove it from the file")
        policy = validate_sections(
            cls, data, main="policy", sections=SECTIONS, error_type=PolicyError, source=str(path)
        )
        return policy.model_copy(update={"source_sha256": hashlib.sha256(path.read_bytes()).hexdigest()})


def default_policy_path() -> Path:
    """The shipped default policy (package data)."""
    return Path(str(resources.files("fedsynth.release").joinpath("default_policy.toml")))


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy at ``path``, or the shipped default."""
    return Policy.from_toml(path if path is not None else default_policy_path())
