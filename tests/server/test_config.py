"""Federation and site configs: the shipped example loads; bad fields are named with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsynth.client.config import SiteConfig, SiteConfigError
from fedsynth.server.config import FederationConfig, FederationConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "federation.toml"


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
