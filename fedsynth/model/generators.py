"""Every generator by the name ``model.json`` and ``[model] generator`` use: build one from its
config, load a saved one whatever it is (configs by name: :mod:`~fedsynth.model.generator_configs`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fedsynth.model.ck4gen.model import CK4Gen
from fedsynth.model.generator_configs import (
    GENERATOR_KEY,
    AnyGeneratorConfig,
    UnknownGeneratorError,
    config_from_dict,
    config_to_dict,
    generator_name,
)
from fedsynth.model.mcm import MCM
from fedsynth.model.medvae.model import MedVAE
from fedsynth.model.persistence import META, state_digest

AnyGenerator = MCM | MedVAE | CK4Gen
GENERATORS: dict[str, type[AnyGenerator]] = {"mcm": MCM, "medvae": MedVAE, "ck4gen": CK4Gen}


def generator_class(name: str) -> type[AnyGenerator]:
    if name not in GENERATORS:
        raise UnknownGeneratorError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    return GENERATORS[name]


def new_generator(config: AnyGeneratorConfig) -> AnyGenerator:
    """An unfitted generator of ``config``'s kind."""
    return generator_class(generator_name(config))(config)  # type: ignore[arg-type]


__all__ = [
    "AnyGenerator", "AnyGeneratorConfig", "GENERATORS", "config_from_dict", "config_to_dict", "generator_class",
    "generator_digest", "generator_name", "load_generator", "new_generator",
    "weights_digest",
]  # fmt: skip


def saved_generator_name(path: str | Path) -> str:
    """The generator a model directory says wrote it ("mcm" when it cannot tell: the MCM's loader
    then explains what is wrong with the directory)."""
    try:
        meta = json.loads((Path(path) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "mcm"
    name = meta.get(GENERATOR_KEY, "mcm") if isinstance(meta, dict) else "mcm"
    return name if name in GENERATORS else "mcm"


def load_generator(path: str | Path) -> AnyGenerator:
    """Load and verify a saved model of any generator (``model.json`` says which)."""
    return generator_class(saved_generator_name(path)).load(path)


def weights_digest(model: AnyGenerator) -> str:
    """SHA-256 of the model's weights, in parameter order: how sites name the model they audited.

    Not :func:`~fedsynth.model.persistence.model_digest` (the hash of a saved model's manifest,
    i.e. of its files): a site holds the weights it was sent, not the coordinator's files, so
    audits and evaluations record this one, and whoever matches their results to a model
    compares this one.
    """
    return state_digest(model._network().state_dict())


def generator_digest(model: AnyGenerator) -> str:
    """SHA-256 of what determines the model's samples: its weights and, for a calibrated model,
    its marginal tables. Sites name the model they audited by it, so a release calibrated to
    other tables is not covered by their audit."""
    if model.calibration_ is None:
        return weights_digest(model)
    return hashlib.sha256(f"{weights_digest(model)}:{model.calibration_.digest()}".encode()).hexdigest()
