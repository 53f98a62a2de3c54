"""The run config keys of fedsynth's Flower app: kept apart from the ServerApp so that writing the
app's pyproject (``fedsynth deploy app``) does not import torch, Opacus and Flower's server."""

from __future__ import annotations

# The run config keys ``flwr run --run-config`` may set (Flower refuses undeclared keys), with
# their defaults; the app's pyproject declares the same. ``expected-sites`` 0 means every site
# that trained in the run; ``horizons`` is a JSON list of calibration times and
# ``fairness-columns`` one of sensitive columns for subgroup fairness figures (evaluate only).
APP_CONFIG: dict[str, str | int] = {
    "federation-config": "",
    "task": "train",
    "seed": 0,
    "expected-sites": 0,
    "horizons": "",
    "fairness-columns": "",
}
TASKS = ("train", "audit", "evaluate")
