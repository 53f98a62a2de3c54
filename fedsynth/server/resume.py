"""Whether a run directory can be resumed with the configuration given now."""

from __future__ import annotations

import contextlib

from pydantic import ValidationError

from fedsynth.data.schema import Schema
from fedsynth.model.generator_configs import config_from_dict, config_to_dict
from fedsynth.server.config import FederationConfig, FederationConfigError
from fedsynth.server.run import RunDirectory


def check_resumable(run: RunDirectory, config: FederationConfig, schema: Schema) -> None:
    """Refuse to resume a run whose model or schema changed: its checkpoints would not fit."""
    # A run recorded before a field existed used that field's base default: fill it in, so that
    # adding a field to a generator's config never makes older runs unresumable. A run recorded
    # before other generators existed names none: it trained the MCM.
    recorded = {"generator": "mcm", **run.info()["config"].get("model", {})}
    with contextlib.suppress(ValidationError, ValueError):  # a field since removed: compared as recorded (changed)
        recorded = config_to_dict(config_from_dict(recorded))
    current = config_to_dict(config.model)
    # Over both sides' fields: a retired option recorded with a non-default value is a change too.
    changed = {k: (recorded.get(k), current.get(k)) for k in current.keys() | recorded.keys()
               if recorded.get(k) != current.get(k)}  # fmt: skip
    if changed:
        listed = ", ".join(f"model.{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
        raise FederationConfigError(
            f"{run.path} was started with a different [model] ({listed}); its checkpoints cannot be resumed "
            "with it. Restore the original [model] values, or give a new federation.run_dir."
        )
    if (run.path / "schema.toml").exists() and Schema.from_toml(run.path / "schema.toml") != schema:
        raise FederationConfigError(
            f"{run.path} was started with another schema than the one given now; a run keeps its public "
            "schema. Use the run's schema.toml, or give a new federation.run_dir."
        )
