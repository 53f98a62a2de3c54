"""A site's own configuration: its data, its privacy budget and how it trains.

The site, not the coordinator, owns these numbers: a hospital's privacy officer sets the
budget in the site's TOML file, and the site enforces it whatever the server asks.

    [site]
    name = "st-elsewhere"
    data = "/secure/cohort.csv"
    schema = "/shared/schema.toml"      # the federation's public schema

    [privacy]
    target_epsilon = 4.0
    # target_delta = 1e-4               # default 1/n^1.1 of the site's training rows
    max_grad_norm = 10.0
    max_audits = 10                     # audits answered, ever (their results are not DP)
    marginals_share = 0.5               # epsilon share of the once-per-run DP marginal tables; 0: none
    head_slope_noise_multiplier = 3.0   # noise of the end-of-run release of the head's slope score; 0: none
    # evaluation_horizons = [365, 730]  # the only calibration horizons this site answers at
    # require_secure_aggregation = true # train only in rounds the coordinator runs under SecAgg+

    [training]
    local_epochs = 5
    batch_size = 64
    holdout_fraction = 0.2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fedsynth.config_files import read_toml, validate_sections
from fedsynth.errors import UserError

# A site directory: this config, the federation's public schema (unless site.schema names
# another) and the data; the site's durable state lies under ``state/`` (fedsynth.client.ledger_backup.STATE).
SITE_FILE = "site.toml"
SCHEMA_FILE = "schema.toml"


class SiteConfigError(UserError, ValueError):
    """The site configuration is invalid; the message names the field and the fix."""


class PrivacyConfig(BaseModel):
    """The site's (epsilon, delta) budget and its DP-SGD clipping."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_epsilon: float = Field(4.0, gt=0, le=100, description="total epsilon this site will ever spend on its data")
    target_delta: float | None = Field(None, gt=0, lt=1, description="None: 1/n^1.1 for n training rows")
    # DP-SGD clips each record's gradient to this norm; the noise multiplier, and so epsilon, does not
    # depend on it. Small norms clip every record and bias the fit (records with large gradients,
    # such as deaths, count for less); large norms add noise in proportion. Federated FLChain at
    # epsilon 4 (benchmarks/federated_sweep.py): HR-in-CI 28-38% at 1, 45% at 4, 57.5% at 10 (10
    # seeds), 42.5% at 30; ACTG320's C-index gap the same from 1 to 10 (-0.053, -0.056; 10 seeds).
    max_grad_norm: float = Field(10.0, gt=0, description="per-sample gradient clipping norm")
    # Audit results are exact functions of the site's rows, not DP: each audit the coordinator
    # asks for is one more non-private answer (a crafted "model" could even probe for a record).
    # The site caps how many it will ever run; the count is on disk before each audit runs.
    max_audits: int = Field(10, ge=0, le=1000, description="audits and evaluations this site will ever answer")
    # Calibration figures at a horizon include counts and Kaplan-Meier risks before it; horizons
    # chosen freely by the coordinator, query after query, could bracket single patients' event
    # times. The site answers only at horizons its privacy officer declares here (time unit of
    # the schema); none declared: one public default, a quarter of the time column's bound.
    evaluation_horizons: list[float] | None = Field(None, min_length=1, max_length=10)
    # The once-per-run Gaussian release of the site's marginal tables gets the noise at which that
    # one step alone would cost this share of the epsilon left; DP-SGD gets the rest, composed in RDP.
    # 0.5: closer marginals on every bundled dataset than 0.4 and survival utility as good, with the
    # head's effect rates making up the DP-SGD noise (docs/research/2026-12-03-marginals-share.md).
    # 0: nothing released.
    marginals_share: float = Field(0.5, ge=0, lt=1, description="epsilon share of the DP marginal tables")
    # At the end of a run whose model has a hazard head, the site releases once the sum of its
    # records' scores for the head's calibration slope (fedsynth.model.head_slope), each clipped to
    # the bound the coordinator sends (chosen from the model alone), with Gaussian noise of this
    # multiplier times that bound: one step at sample rate 1, planned with DP-SGD and the
    # marginals, whose epsilon does not depend on the bound. 3.0 raises DP-SGD's noise by about 6%
    # (ACTG320 and FLChain sites at epsilon 4) (docs/research/2026-12-05-head-slope.md).
    # 0: no release, the slope stays 1.
    head_slope_noise_multiplier: float = Field(3.0, ge=0, le=1000, description="noise of the slope release; 0: none")
    # The site's DP holds whatever the coordinator does; SecAgg+ also keeps the coordinator from
    # seeing this site's own update. True: a training round without it is refused, before any spend.
    require_secure_aggregation: bool = False


class TrainingConfig(BaseModel):
    """Local DP-SGD settings and the site's persistent train/holdout split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    local_epochs: int = Field(5, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, description="expected Poisson batch size")
    # DP-SGD takes few, noisy steps: at 2e-3 (the non-DP default) the DP global model's
    # marginals stayed far from the data (ACTG320, epsilon 4: mean KS 0.31); 1e-2 gave 0.13.
    learning_rate: float = Field(1e-2, gt=0)
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="rows kept out of training for audits")
    split_seed: int = 0


class SiteConfig(BaseModel):
    """Everything a site needs; loaded from the site's TOML, fields overridable per call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    data: Path | None = Field(None, description="the site's table (CSV or Parquet); never leaves the site")
    schema_path: Path | None = Field(None, alias="schema", description="the federation's public schema TOML")
    privacy: PrivacyConfig = PrivacyConfig()
    training: TrainingConfig = TrainingConfig()

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "site config") -> SiteConfig:
        """Validate, reporting every bad field as ``section.field: problem``."""
        return validate_sections(
            cls, data, main="site", sections=("privacy", "training"), error_type=SiteConfigError, source=source
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> SiteConfig:
        path = Path(path)
        data = read_toml(path, SiteConfigError, "site config")
        config = cls.from_dict(data, source=str(path))
        # Relative paths are relative to the config file, as a custodian would expect.
        updates = {}
        for field in ("data", "schema_path"):
            value = getattr(config, field)
            if value is not None and not value.is_absolute():
                updates[field] = (path.parent / value).resolve()
        return config.model_copy(update=updates)
