"""Shared fixtures: bundled data and one quickly trained model reused across tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.data.schema import Schema
from fedsynth.data.split import train_holdout_split
from fedsynth.model.mcm import MCM


@pytest.fixture(scope="session")
def whas500() -> tuple[pd.DataFrame, Schema]:
    return load_dataset("whas500")


@pytest.fixture(scope="session")
def whas_split(whas500: tuple[pd.DataFrame, Schema]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return train_holdout_split(whas500[0], 0.5, seed=0)


@pytest.fixture(scope="session")
def small_model(whas_split: tuple[pd.DataFrame, pd.DataFrame], whas500: tuple[pd.DataFrame, Schema]) -> MCM:
    """A briefly trained WHAS500 model: enough to test mechanics, not quality."""
    return MCM(epochs=40, seed=0).fit(whas_split[0], whas500[1])


@pytest.fixture(scope="session")
def gbsg2_model() -> MCM:
    """A briefly trained GBSG2 model: covers labelled binaries and a categorical column."""
    frame, schema = load_dataset("gbsg2")
    return MCM(epochs=30, seed=0).fit(frame, schema)


MODULE_SECONDS = Path(__file__).with_name("module_seconds.json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (``make test``: two workers, work stealing), start the slow modules first and
    split them evenly between the workers.

    Why: xdist hands each worker one contiguous half of the collection and then lets an idle worker
    steal from the end of the other's queue. In file order the slowest modules (the README flow,
    the runbook rehearsal) came last, so one worker ran a two-minute test alone at the end. Here
    the slow modules are dealt longest first to the half with less time (whole modules, and the
    modules sharing a session fixture together, so each fixture is made once), each half starts
    with its share, and the fast tests fill in and are what gets stolen. Only the order changes;
    every worker computes the same one.
    """
    if not hasattr(config, "workerinput"):
        return
    measured = json.loads(MODULE_SECONDS.read_text(encoding="utf-8"))
    known = {k: v for k, v in measured.items() if not k.startswith("_")}
    unit = {module: group[0] for group in measured.get("_together", []) for module in group}
    root = Path(str(config.rootpath))
    modules: dict[str, list[pytest.Item]] = {}  # by module, or by the first module of its group
    for item in items:
        module = Path(str(item.path)).relative_to(root).as_posix()
        modules.setdefault(unit.get(module, module), []).append(item)
    for group in measured.get("_together", []):
        known[group[0]] = sum(known.get(module, 0) for module in group)
    slow = sorted((m for m in modules if m in known), key=lambda m: -known[m])
    halves: tuple[list[pytest.Item], list[pytest.Item]] = ([], [])
    seconds = [0.0, 0.0]
    for module in slow:
        side = 0 if seconds[0] <= seconds[1] else 1
        halves[side].extend(modules[module])
        seconds[side] += known[module]
    fast = [item for module, group in modules.items() if module not in known for item in group]
    cut = max(0, len(items) // 2 - len(halves[0]))  # the first worker's half is the first len // 2 items
    items[:] = halves[0] + fast[:cut] + halves[1] + fast[cut:]


@pytest.fixture()
def server_identity():
    """The identity Flower's runtime gives a ServerApp before it builds messages."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
