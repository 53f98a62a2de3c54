"""Federation and site configs: the shipped example loads; bad fields are named with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsynth.client.config import SiteConfig, SiteConfigError
from fedsynth.server.config import FederationConfig, FederationConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "federation.toml"


def run_config(tmp_path: Path, **model) -> FederationConfig:
    """A federation writing to ``tmp_path/run`` whose [model] table holds ``model``."""
    return FederationConfig.from_dict({"federation": {"run_dir": str(tmp_path / "run")}, "model": model})


def test_the_shipped_example_loads_and_cli_overrides_win() -> None:
    config = FederationConfig.from_toml(EXAMPLE, {"federation.rounds": 7})
    assert config.rounds == 7 and config.simulation.sites == 3
    assert config.run_dir == (EXAMPLE.parent / "../runs/whas500-dp").resolve()
    assert config.site["privacy"]["target_epsilon"] == 4.0


def test_bad_federation_fields_are_named() -> None:
    with pytest.raises(FederationConfigError, match=r"federation\.roundz"):
        FederationConfig.from_dict({"federation": {"roundz": 3}})
    with pytest.raises(FederationConfigError, match=r"federation\.rounds: Input should be greater"):
        FederationConfig.from_dict({"federation": {"rounds": 0}})
    with pytest.raises(FederationConfigError, match=r"simulation\.partition"):
        FederationConfig.from_dict({"simulation": {"partition": "random"}})


def test_bad_site_fields_are_named() -> None:
    with pytest.raises(SiteConfigError, match=r"privacy\.target_epsilon"):
        SiteConfig.from_dict({"site": {"name": "a"}, "privacy": {"target_epsilon": -1}})
    with pytest.raises(SiteConfigError, match=r"site\.name"):
        SiteConfig.from_dict({"site": {}})


def test_resuming_with_a_changed_model_or_schema_is_refused(tmp_path) -> None:
    from fedsynth.data.datasets import bundled_schema
    from fedsynth.server.resume import check_resumable
    from fedsynth.server.run import RunDirectory

    def config(hidden: int) -> FederationConfig:
        return run_config(tmp_path, hidden=hidden, n_bins=16)

    run = RunDirectory(tmp_path / "run")
    original = config(16)
    run.initialise("r1", bundled_schema("whas500"), original.model_dump(mode="json", by_alias=True))
    check_resumable(run, original, bundled_schema("whas500"))  # same model and schema: fine
    with pytest.raises(FederationConfigError, match=r"model.hidden: 16 -> 32.*new federation.run_dir"):
        check_resumable(run, config(32), bundled_schema("whas500"))
    with pytest.raises(FederationConfigError, match="another schema"):
        check_resumable(run, original, bundled_schema("gbsg2"))


def test_a_run_recorded_before_a_model_field_existed_resumes_with_that_fields_base_default(tmp_path) -> None:
    # Runs recorded before survival_centre/survival_level existed trained with the base defaults
    # (midpoint, no level): those values resume them; the new federated defaults are refused by name.
    from fedsynth.data.datasets import bundled_schema
    from fedsynth.server.resume import check_resumable
    from fedsynth.server.run import RunDirectory

    fields = dict(survival_centre="midpoint", survival_level=False)
    old_fields = run_config(tmp_path, **fields)
    recorded = old_fields.model_dump(mode="json", by_alias=True)
    for field in fields:
        del recorded["model"][field]
    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", bundled_schema("whas500"), recorded)
    check_resumable(run, old_fields, bundled_schema("whas500"))
    with pytest.raises(FederationConfigError, match=r"survival_centre: 'midpoint' -> 'tables'.*survival_level"):
        check_resumable(run, run_config(tmp_path), bundled_schema("whas500"))


@pytest.mark.parametrize(
    ("retired", "resumes"),
    [
        ({"survival_effect_steps": 0, "dp_head_clip_fraction": None, "dp_masked_model_gain": 1.0,
          "iterate_averaging": 0.0}, True),  # recorded at their old defaults: trained as today
        ({"survival_effect_steps": 400}, False),  # the federated default for a while
        ({"dp_head_clip_fraction": 0.95, "dp_masked_model_gain": 4.0}, False),  # group-wise clipping
    ],
    ids=["at-defaults", "effects-speed-up", "group-wise-clipping"],
)  # fmt: skip
def test_a_run_recorded_with_a_retired_optimiser_option_resumes_only_at_its_old_default(
    tmp_path, retired, resumes
) -> None:
    # Such a run trained with an optimiser this version no longer has: refused by name, never resumed as if not.
    from fedsynth.data.datasets import bundled_schema
    from fedsynth.server.resume import check_resumable
    from fedsynth.server.run import RunDirectory

    today = run_config(tmp_path)
    recorded = today.model_dump(mode="json", by_alias=True)
    recorded["model"].update(retired)
    run = RunDirectory(tmp_path / "run")
    run.initialise("r1", bundled_schema("whas500"), recorded)
    if resumes:
        check_resumable(run, today, bundled_schema("whas500"))
    else:
        name, value = next(iter(retired.items()))
        with pytest.raises(FederationConfigError, match=rf"model.{name}: {value!r} -> None.*new federation.run_dir"):
            check_resumable(run, today, bundled_schema("whas500"))
    with pytest.raises(FederationConfigError, match="dp_head_clip_fraction was a site-optimiser option"):
        run_config(tmp_path, dp_head_clip_fraction=0.95)  # and no new run can ask for one


def test_a_model_table_changes_only_the_fields_it_names() -> None:
    from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS

    default = FederationConfig.from_dict({}).model
    assert default == FEDERATED_MODEL_DEFAULTS and (default.hidden, default.n_bins) == (32, 16)
    changed = FederationConfig.from_dict({"model": {"seed": 7}}).model
    assert (changed.hidden, changed.n_bins, changed.seed) == (32, 16, 7)


def test_an_own_table_names_no_bundled_dataset_and_both_are_refused(tmp_path) -> None:
    from fedsynth.server.config import FederationConfig, FederationConfigError

    own = {"data": "lung.csv", "schema": "schema.toml"}
    config = FederationConfig.from_dict({"federation": {}, "simulation": own})
    assert config.simulation.dataset is None  # run.json's provenance: the file, not "whas500"
    assert "dataset" not in config.to_document()["simulation"]
    with pytest.raises(FederationConfigError, match="simulation.dataset = 'whas500' and simulation.data = 'lung.csv'"):
        FederationConfig.from_dict({"federation": {}, "simulation": {**own, "dataset": "whas500"}})
    assert FederationConfig.from_dict({"federation": {}}).simulation.dataset == "whas500"


def test_the_model_table_names_its_generator_over_that_generators_federated_defaults(tmp_path) -> None:
    from fedsynth.data.datasets import bundled_schema
    from fedsynth.model.medvae import MedVAEConfig
    from fedsynth.server.config import FEDERATED_MEDVAE_DEFAULTS
    from fedsynth.server.resume import check_resumable
    from fedsynth.server.run import RunDirectory

    medvae = FederationConfig.from_dict({"model": {"generator": "medvae", "latent": 8}})
    assert isinstance(medvae.model, MedVAEConfig) and medvae.generator == "medvae"
    assert medvae.model == FEDERATED_MEDVAE_DEFAULTS.model_copy(update={"latent": 8})
    assert FederationConfig.from_dict(medvae.to_document()) == medvae  # run.json's record reads back
    assert FederationConfig.from_dict({}).generator == "mcm"
    ck4gen = FederationConfig.from_dict({"model": {"generator": "ck4gen"}})
    assert ck4gen.generator == "ck4gen" and ck4gen.model.teacher == "joint"  # the teacher DP-SGD trains
    with pytest.raises(FederationConfigError, match=r'model: .*teacher = "cox" is fitted on a site.s rows without DP'):
        FederationConfig.from_dict({"model": {"generator": "ck4gen", "teacher": "cox"}})
    with pytest.raises(FederationConfigError, match=r'model: .*outcome = "copy" copies real times and events'):
        FederationConfig.from_dict({"model": {"generator": "ck4gen", "outcome": "copy"}})
    with pytest.raises(FederationConfigError, match=r"fairness_weight > 0 needs declared fairness_shares under DP"):
        FederationConfig.from_dict({"model": {"fairness_column": "gender", "fairness_weight": 1}})
    unknown = r"generator = 'gan' is unknown; choose one of 'mcm', 'medvae', 'ck4gen'"
    with pytest.raises(FederationConfigError, match=unknown):
        FederationConfig.from_dict({"model": {"generator": "gan"}})
    with pytest.raises(FederationConfigError, match=r"model.survival_head: Extra inputs"):  # an MCM field
        FederationConfig.from_dict({"model": {"generator": "medvae", "survival_head": True}})
    run = RunDirectory(tmp_path / "run")
    run.initialise(
        "r1", bundled_schema("whas500"), FederationConfig.from_dict({}).model_dump(mode="json", by_alias=True)
    )
    with pytest.raises(FederationConfigError, match=r"model.generator: 'mcm' -> 'medvae'"):
        check_resumable(run, medvae, bundled_schema("whas500"))


def test_secure_aggregation_is_off_by_default_and_bad_settings_are_named() -> None:
    assert FederationConfig().secure_aggregation.enabled is False
    on = FederationConfig.from_dict(
        {"secure_aggregation": {"enabled": True, "num_shares": 3, "reconstruction_threshold": 2}}
    )
    assert (on.secure_aggregation.num_shares, on.secure_aggregation.reconstruction_threshold) == (3, 2)
    assert FederationConfig.from_dict(on.to_document()) == on  # the document round trip keeps the section
    refusals = {
        "reconstruction_threshold must be less than num_shares": {"num_shares": 3, "reconstruction_threshold": 3},
        "num_shares = 2 is too few": {"num_shares": 2},
        "reconstruction_threshold must be at least 2 shares": {"reconstruction_threshold": 1},
        r"num_shares = 1.5 is a fraction above 1": {"num_shares": 1.5},
        r"secure_aggregation\.clipping_range: Input should be greater than 0": {"clipping_range": 0},
        r"secure_aggregation\.quantization_range: Input should be less than or equal": {"quantization_range": 2**30},
        r"secure_aggregation\.enabeld": {"enabeld": True},
    }
    for message, section in refusals.items():
        with pytest.raises(FederationConfigError, match=message):
            FederationConfig.from_dict({"secure_aggregation": section})
    with pytest.raises(FederationConfigError, match="needs min_sites >= 2"):
        FederationConfig.from_dict({"federation": {"min_sites": 1}, "secure_aggregation": {"enabled": True}})


def test_the_site_template_loads_and_names_every_site_setting() -> None:
    from fedsynth.client.config import PrivacyConfig, TrainingConfig

    template = EXAMPLE.parent / "site.toml"
    config = SiteConfig.from_toml(template)
    assert config.name == "st-elsewhere" and config.data == (template.parent / "cohort.csv").resolve()
    text = template.read_text(encoding="utf-8")
    for field in (*PrivacyConfig.model_fields, *TrainingConfig.model_fields):
        assert f"{field} = " in text, f"examples/site.toml does not show {field}"
