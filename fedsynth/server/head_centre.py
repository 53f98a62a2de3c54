"""The coordinator fixes the survival head's covariate centres from the run's DP marginal tables.

A model that asks for them (``survival_centre = "tables"``) has, before its first round, each
covariate input's mean under the consistent tables in ``RUN_DIR/marginals.json`` written into its
weights (:meth:`fedsynth.model.mcm.MCM.centre_on_tables`): every site trains, and the sampler
draws, around the same fixed centres. They are recorded in ``RUN_DIR/head_centre.json`` for
whoever reviews the run. A resumed run keeps the centres its checkpoint holds.
"""

from __future__ import annotations

import json
from logging import INFO, WARNING
from typing import Any

from flwr.supercore import log

from fedsynth.data.io import write_text
from fedsynth.model.effect_rates import input_names
from fedsynth.server.run import MARGINALS_FILE, RunDirectory

HEAD_CENTRE_FILE = "head_centre.json"
HEAD_CENTRE_NOTE = (
    "The survival head centres each covariate input at its mean under the run's consistent DP marginal "
    "tables (a missing value's input is 0). Post-processing of DP releases; carried in the model's weights."
)


def run_head_centre(run: RunDirectory, model: Any) -> list[float] | None:
    """Set the centres ``model`` asks for from the run's complete DP marginal tables and record
    them; None if it asks for none or the run has no complete tables (the centres then stay at
    the encoding's midpoint, 0.5)."""
    asks = getattr(model.config, "survival_centre", None) == "tables"
    target = run.marginal_target() if asks else None
    if target is None:
        if asks:
            log(WARNING, "No complete DP marginal tables in this run: the head centres covariates at 0.5")
        return None
    values = model.centre_on_tables(target)
    if values is not None:
        covariates = model.network_.covariate_input.tolist()
        named = {n: v for n, v, c in zip(input_names(model.network_.layout), values, covariates, strict=True) if c}
        document = {"source": MARGINALS_FILE, "note": HEAD_CENTRE_NOTE, "centres": named}
        write_text(run.path / HEAD_CENTRE_FILE, json.dumps(document, indent=1) + "\n")
        log(INFO, "Survival head centres from the DP marginal tables: %s",
            ", ".join(f"{n} {v:.3f}" for n, v in named.items()))  # fmt: skip
    return values
