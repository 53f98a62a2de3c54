"""The coordinator fixes the survival head's covariate centres from the run's DP marginal tables.

A model that asks for them (``survival_centre = "tables"``) has, before its first round, each
covariate input's mean under the consistent tables in ``RUN_DIR/marginals.json`` written into its
weights (:meth:`fedsynth.model.mcm.MCM.centre_on_tables`): every site trains, and the sampler
draws, around the same fixed centres. They are recorded in ``RUN_DIR/head_centre.json`` for
whoever reviews the run. A resumed run keeps the centres its checkpoint holds.
"""

from __future__ import annotations

from typing import Any

from fedsynth.server.run import RunDirectory
from fedsynth.server.table_inputs import record_inputs, tables_if_asked

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
    target = tables_if_asked(run, asks, "the head centres covariates at 0.5")
    values = model.centre_on_tables(target) if target is not None else None
    if values is not None:
        record_inputs(run, model, values, HEAD_CENTRE_FILE, "centres", HEAD_CENTRE_NOTE)
    return values
