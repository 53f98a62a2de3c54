"""The coordinator's step rates for the survival head's effects, from the run's DP marginal tables.

A model that asks for them (``survival_effect_rates = "marginals"``) gets, before its first
round, each covariate input's multiplier from the consistent tables in ``RUN_DIR/marginals.json``
(:mod:`fedsynth.model.effect_rates`); they go to every site with each round's instruction and
are written to ``RUN_DIR/effect_rates.json`` for whoever reviews the run. A resumed run reads the
same tables and so sends the same rates.
"""

from __future__ import annotations

from typing import Any

from fedsynth.server.run import RunDirectory
from fedsynth.server.table_inputs import record_inputs, tables_if_asked

EFFECT_RATES_FILE = "effect_rates.json"
EFFECT_RATES_NOTE = (
    "Each covariate's multiplier of the survival head's DP-SGD steps in rounds shorter than "
    "survival_head_averaging_min_steps: its inverse variance in the run's consistent DP marginal tables, "
    "normalised by their geometric mean. Post-processing of DP releases; sent to every site with each round."
)


def run_effect_rates(run: RunDirectory, model: Any) -> list[float] | None:
    """The step multipliers ``model`` asks for under the run's complete DP marginal tables (the
    same on a resumed run: they are read from the run's ``marginals.json``); None if it asks for
    none or the run has no complete tables."""
    asks = getattr(model.config, "survival_effect_rates", "uniform") != "uniform"
    target = tables_if_asked(run, asks, "the head's effects train at Adam's own rates")
    rates = model.effect_rates(target) if target is not None else None
    if rates is not None:
        record_inputs(run, model, rates, EFFECT_RATES_FILE, "rates", EFFECT_RATES_NOTE)
    return rates
