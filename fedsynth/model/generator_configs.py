"""Every generator's config class by the name ``model.json`` and ``[model] generator`` use, and
a config carried across the network (or in a TOML table) with that name. Pydantic only: reading
a federation config does not load torch."""

from __future__ import annotations

from typing import Any, Literal

from fedsynth.model.ck4gen.config import CK4GenConfig
from fedsynth.model.config import MCMConfig
from fedsynth.model.medvae.config import MedVAEConfig

GeneratorName = Literal["mcm", "medvae", "ck4gen"]
AnyGeneratorConfig = MCMConfig | MedVAEConfig | CK4GenConfig
GENERATOR_CONFIGS: dict[str, type[AnyGeneratorConfig]] = {
    "mcm": MCMConfig,
    "medvae": MedVAEConfig,
    "ck4gen": CK4GenConfig,
}
GENERATOR_KEY = "generator"  # the generator's name beside its config fields (wire and TOML)


class UnknownGeneratorError(ValueError):
    """A generator name fedsynth does not know."""


def config_class(name: str) -> type[AnyGeneratorConfig]:
    if name not in GENERATOR_CONFIGS:
        raise UnknownGeneratorError(f"unknown generator {name!r}; choose one of {', '.join(GENERATOR_CONFIGS)}")
    return GENERATOR_CONFIGS[name]


def generator_name(config: AnyGeneratorConfig) -> GeneratorName:
    """The name of the generator ``config`` configures."""
    for name, cls in GENERATOR_CONFIGS.items():
        if type(config) is cls:
            return name  # type: ignore[return-value]
    raise UnknownGeneratorError(f"{type(config).__name__} configures no known generator")


def config_to_dict(config: AnyGeneratorConfig) -> dict[str, Any]:
    """``config``'s fields as JSON values, with ``"generator"`` naming its kind."""
    return {GENERATOR_KEY: generator_name(config), **config.model_dump(mode="json")}


def config_from_dict(data: dict[str, Any]) -> AnyGeneratorConfig:
    """The config :func:`config_to_dict` wrote (no ``"generator"``: an MCM's, as before other
    generators existed)."""
    fields = dict(data)
    name = str(fields.pop(GENERATOR_KEY, "mcm"))
    return config_class(name).model_validate(fields)
