"""What the coordinator derives per covariate input from the run's DP tables, before round 1.

Shared by the head's centres (:mod:`fedsynth.server.head_centre`) and its effect rates
(:mod:`fedsynth.server.effect_rates`): the tables if the model asks and the run has them, and a
record of the values per input (``RUN_DIR/<file>``) for whoever reviews the run.
"""

from __future__ import annotations

import json
from logging import INFO, WARNING
from typing import Any

from flwr.supercore import log

from fedsynth.data.io import write_text
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.effect_rates import input_names
from fedsynth.server.run import MARGINALS_FILE, RunDirectory


def tables_if_asked(run: RunDirectory, asks: bool, without: str) -> MarginalTarget | None:
    """The run's complete DP tables when the model ``asks`` for values derived from them; a
    WARNING (``without``: what happens instead) when it asks and the run has none."""
    target = run.marginal_target() if asks else None
    if asks and target is None:
        log(WARNING, "No complete DP marginal tables in this run: %s", without)
    return target


def record_inputs(run: RunDirectory, model: Any, values: list[float], file: str, key: str, note: str) -> None:
    """Write ``values`` (one per encoded input) for the covariate inputs, named, to ``RUN_DIR/file``
    and the log."""
    covariates = model.network_.covariate_input.tolist()
    named = {n: v for n, v, c in zip(input_names(model.network_.layout), values, covariates, strict=True) if c}
    document = {"source": MARGINALS_FILE, "note": note, key: named}
    write_text(run.path / file, json.dumps(document, indent=1) + "\n")
    log(INFO, "%s from the DP marginal tables: %s", key, ", ".join(f"{n} {v:.3f}" for n, v in named.items()))
