"""The coordinator's federation config: engine, rounds, sites and model, from one TOML file.

[federation]
engine = "simulation"          # or "deployment"
rounds = 3
min_sites = 2                  # sites a round needs: to start it, and returning weights to average it
round_timeout = 600            # seconds; a site that has not replied by then is left out
run_dir = "runs/whas500-dp"

[simulation]                   # virtual sites partitioned from one table (engine = "simulation")
dataset = "whas500"            # a bundled dataset, or data = "x.csv" with schema = "s.toml"
sites = 3
partition = "iid"              # or "column:<name>" for non-IID sites split by a column

[site]                         # defaults for every simulated site (see fedsynth.client.config)
privacy = { target_epsilon = 4.0 }
training = { local_epochs = 5 }

[model]                        # generator = "mcm" (default), "medvae" or "ck4gen"; then its config's fields
hidden = 64

[secure_aggregation]           # Flower's SecAgg+: the coordinator sees only the sum of the updates
enabled = false
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from fedsynth.config_files import read_toml, validate_sections
from fedsynth.errors import UserError
from fedsynth.model.ck4gen.config import CK4GenConfig
from fedsynth.model.config import MCMConfig
from fedsynth.model.generator_configs import GENERATOR_KEY, AnyGeneratorConfig, config_to_dict
from fedsynth.model.medvae.config import MedVAEConfig

# Fewer parameters than the non-DP default (DP noise is added to every one) and the outcome
# drawn by a survival head; the measurements behind each choice: docs/research/2026-12-03-federated-model-defaults.md.
FEDERATED_MODEL_DEFAULTS = MCMConfig(
    hidden=32,
    n_bins=16,
    outcome_last=False,
    survival_head=True,
    survival_form="hazard",
    survival_centre="tables",  # the means in the run's DP tables (0.5 without tables)
    survival_level=True,
    survival_head_averaging=1.0,  # in rounds of >= survival_head_averaging_min_steps steps
    survival_effect_rates="marginals",  # in shorter rounds
    lr_schedule="constant",
    # The plain fit's guards against memorising (MCMConfig) are no part of DP-SGD training.
    weight_decay=0.0,
    validation_fraction=0.0,
    early_stopping_patience=None,
)


# Med-VAE and CK4Gen under DP-SGD: the MCM's 16 output bins per numeric column (a histogram's
# bins are noisy heads), the papers' layers otherwise; CK4Gen's teacher trained with the network.
FEDERATED_MEDVAE_DEFAULTS = MedVAEConfig(n_bins=16)
FEDERATED_CK4GEN_DEFAULTS = CK4GenConfig(n_bins=16, teacher="joint")
FEDERATED_DEFAULTS: dict[str, AnyGeneratorConfig] = {
    "mcm": FEDERATED_MODEL_DEFAULTS,
    "medvae": FEDERATED_MEDVAE_DEFAULTS,
    "ck4gen": FEDERATED_CK4GEN_DEFAULTS,
}


def no_dp_training(config: AnyGeneratorConfig) -> str | None:
    """Why the sites cannot train ``config`` with DP-SGD (None: they can); checked before a run
    (the sites check it again before they spend anything)."""
    fairness = config.fairness_dp_refusal()
    if fairness is not None:
        return fairness
    if isinstance(config, CK4GenConfig) and config.teacher == "cox":
        return (
            "CK4Gen's teacher = \"cox\" is fitted on a site's rows without DP, and its coefficients would "
            'leave the site in the weights; federated runs train teacher = "joint" (the default here)'
        )
    if isinstance(config, CK4GenConfig) and config.outcome == "copy":
        return (
            'CK4Gen\'s outcome = "copy" copies real times and events into its rows, never DP; use it only with '
            "`fedsynth fit --generator ck4gen` at one site"
        )
    return None


class FederationConfigError(UserError, ValueError):
    """The federation config is invalid; the message names the field and the fix."""


class SimulationConfig(BaseModel):
    """Virtual sites for Flower's simulation engine, partitioned from one table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str | None = Field("whas500", description="a bundled dataset name")
    data: Path | None = None
    schema_path: Path | None = Field(None, alias="schema")
    sites: int = Field(3, ge=1, le=1000)
    partition: str = Field("iid", pattern=r"^(iid|column:.+)$")
    seed: int = 0
    cpus_per_site: float = Field(1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _data_replaces_the_bundled_default(cls, values: Any) -> Any:
        """``data`` is the table: no bundled dataset is named then (run.json's provenance)."""
        if isinstance(values, dict) and values.get("data") is not None:
            if values.get("dataset") is not None:
                raise ValueError(
                    f"simulation.dataset = {values['dataset']!r} and simulation.data = {str(values['data'])!r} both "
                    "name the table: keep one (dataset for a bundled one, data + schema for your own file)"
                )
            return {**values, "dataset": None}
        return values

    @model_validator(mode="after")
    def _one_source(self) -> SimulationConfig:
        if self.data is not None and self.schema_path is None:
            raise ValueError("simulation.data needs simulation.schema (the public schema TOML)")
        return self


SECTIONS = ("simulation", "site", "model", "secure_aggregation")


class SecureAggregationConfig(BaseModel):
    """Flower's SecAgg+ over the training rounds: the coordinator sees only the sum of the
    sites' updates (fedsynth.server.secure_aggregation). The fields are SecAgg+'s own.

    ``num_shares`` and ``reconstruction_threshold`` are counts, or fractions of a round's sites
    (of the shares): each site's secrets are split among ``num_shares`` sites, and any
    ``reconstruction_threshold`` of them can rebuild them. A round survives up to
    ``num_shares - reconstruction_threshold`` sites dropping out; fewer than the threshold
    colluding with the coordinator learn no site's update.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    num_shares: int | float = Field(1.0, gt=0, description="every site of the round by default")
    reconstruction_threshold: int | float = Field(0.67, gt=0, description="two thirds of the shares by default")
    # SecAgg+ weighs each site's update by num_examples / max_weight; a site with more
    # training records than this refuses, so it must be at least the largest site's.
    max_weight: float = Field(10_000.0, gt=0)
    # Sites send their round's update (new minus global weights): its entries were below 0.6 in
    # every DP round measured, and scaled by num_examples / max_weight; a site whose update would
    # be clipped refuses. Quantisation error per entry: sites x 2 clipping_range / quantization_range
    # over the sum of the sites' num_examples / max_weight.
    clipping_range: float = Field(2.0, gt=0, description="bound on a weighted update's entries")
    quantization_range: int = Field(2**24, ge=2**8, le=2**24, description="levels per entry, < 2**32 / sites")

    @model_validator(mode="after")
    def _shares_and_threshold(self) -> SecureAggregationConfig:
        """Flower's own checks (``SecAggPlusWorkflow._check_init_params``), here so that a bad
        value is refused when the config is read, not in round 1 after the marginals were spent."""
        for name in ("num_shares", "reconstruction_threshold"):
            value = getattr(self, name)
            if isinstance(value, float) and value > 1:
                raise ValueError(f"{name} = {value} is a fraction above 1: give a fraction <= 1 or a whole count")
        if isinstance(self.num_shares, int) and self.num_shares == 2:
            raise ValueError("num_shares = 2 is too few: give a whole count of at least 3, or a fraction such as 1.0")
        threshold = self.reconstruction_threshold
        if isinstance(threshold, int) and threshold < 2:
            raise ValueError("reconstruction_threshold must be at least 2 shares (or a fraction): one would let "
                             "the coordinator unmask a site's update with that site's share alone")  # fmt: skip
        counts = isinstance(self.num_shares, int) and self.num_shares > 2 and isinstance(threshold, int)
        if counts and threshold >= self.num_shares:
            raise ValueError("reconstruction_threshold must be less than num_shares, or no site may drop out")
        return self


class FederationConfig(BaseModel):
    """Everything the coordinator decides; each site's budget stays in the site's own config."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    engine: Literal["simulation", "deployment"] = "simulation"
    rounds: int = Field(3, ge=1, le=10_000)
    min_sites: int = Field(2, ge=1)
    round_timeout: float = Field(600.0, gt=0)
    # Ask every site once, before round 1, for its DP marginal tables (RUN_DIR/marginals.json);
    # each site spends its own privacy.marginals_share on them, planned with its DP-SGD.
    marginals: bool = True
    # After the last round, ask every site once for the DP release of the survival head's slope
    # score and publish the model with its event effects scaled by one Newton step
    # (fedsynth.server.head_slope); a site spends its privacy.head_slope_noise_multiplier on it,
    # planned with its DP-SGD. Only for a model with a hazard survival head.
    head_slope: bool = True
    run_dir: Path = Path("runs/fedsynth")
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    schema_path: Path | None = Field(None, alias="schema", description="public schema (deployment engine)")
    simulation: SimulationConfig = SimulationConfig()
    site: dict[str, Any] = Field(default_factory=dict, description="[site] defaults for simulated sites")
    model: MCMConfig | MedVAEConfig | CK4GenConfig = FEDERATED_MODEL_DEFAULTS
    secure_aggregation: SecureAggregationConfig = SecureAggregationConfig()

    @model_validator(mode="after")
    def _secure_aggregation_needs_two_sites(self) -> FederationConfig:
        if self.secure_aggregation.enabled and self.min_sites < 2:
            raise ValueError("secure_aggregation.enabled needs min_sites >= 2: one site's sum is its own update")
        return self

    @field_validator("model", mode="before")
    @classmethod
    def _model_over_federated_defaults(cls, value: Any) -> Any:
        """A [model] table names its generator (``generator``, default "mcm") and changes the
        fields it names; the rest keep that generator's federated defaults."""
        if not isinstance(value, dict):
            return value
        fields = dict(value)
        name = fields.pop(GENERATOR_KEY, "mcm")
        if name not in FEDERATED_DEFAULTS:
            raise ValueError(
                f"generator = {name!r} is unknown; choose one of {', '.join(map(repr, FEDERATED_DEFAULTS))}"
            )
        base = FEDERATED_DEFAULTS[name]
        config = type(base).model_validate({**base.model_dump(), **fields})
        refusal = no_dp_training(config)
        if refusal is not None:
            raise ValueError(refusal)
        return config

    @field_serializer("model")
    def _model_with_its_generator(self, model: AnyGeneratorConfig) -> dict[str, Any]:
        return config_to_dict(model)

    @property
    def generator(self) -> str:
        """The name of the generator the run trains ("mcm", "medvae", "ck4gen")."""
        return str(config_to_dict(self.model)[GENERATOR_KEY])

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "federation config") -> FederationConfig:
        return validate_sections(
            cls,
            data,
            main="federation",
            sections=SECTIONS,
            error_type=FederationConfigError,
            source=source,
        )

    def to_document(self) -> dict[str, Any]:
        """The sectioned TOML document that :meth:`from_dict` reads back to this config."""

        def drop_none(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: drop_none(v) for k, v in value.items() if v is not None}
            return value

        flat = drop_none(self.model_dump(mode="json", by_alias=True))
        sections = {name: flat.pop(name) for name in SECTIONS}
        return {"federation": flat, **sections}

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> FederationConfig:
        """Load ``path``; ``overrides`` ({"federation.rounds": 5, ...}) win over the file (CLI flags)."""
        path = Path(path)
        data = read_toml(path, FederationConfigError, "federation config")
        for dotted, value in (overrides or {}).items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        config = cls.from_dict(data, source=str(path))
        updates: dict[str, Any] = {}
        if not config.run_dir.is_absolute():
            updates["run_dir"] = (path.parent / config.run_dir).resolve()
        if config.schema_path is not None and not config.schema_path.is_absolute():
            updates["schema_path"] = (path.parent / config.schema_path).resolve()
        sim_updates = {}
        for field in ("data", "schema_path"):
            value = getattr(config.simulation, field)
            if value is not None and not value.is_absolute():
                sim_updates[field] = (path.parent / value).resolve()
        if sim_updates:
            updates["simulation"] = config.simulation.model_copy(update=sim_updates)
        return config.model_copy(update=updates)
