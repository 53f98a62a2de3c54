"""The run config of a `task = "audit" | "evaluate"` Flower run: checked, each error naming its key."""

from __future__ import annotations

import json

import pytest

from fedsynth.server.app import site_query_settings
from fedsynth.server.app_config import APP_CONFIG
from fedsynth.server.run import BUDGET, RunDirectory


def _run(tmp_path, statuses: dict[str, str]) -> RunDirectory:
    lines = [json.dumps({"round": 1, "site": site, "status": status}) for site, status in statuses.items()]
    (tmp_path / BUDGET).write_text("\n".join(lines) + "\n")
    return RunDirectory(tmp_path)


def test_every_site_that_trained_must_answer_by_default(tmp_path) -> None:
    # min_sites (the fewest a round may run with) would let an audit pass without a site whose
    # rows shaped the model; a site that only ever refused did not shape it.
    run = _run(tmp_path, {"site-0": "ok", "site-1": "ok", "site-2": "ok", "site-3": "error"})
    query = site_query_settings({**APP_CONFIG, "task": "audit"}, run)
    assert (query.task, query.seed, query.expected_sites, query.horizons) == ("audit", 0, 3, None)
    query = site_query_settings({**APP_CONFIG, "task": "evaluate", "seed": 7, "expected-sites": 2,
                                 "horizons": "[365, 730.5]"}, run)  # fmt: skip
    assert (query.seed, query.expected_sites, query.horizons) == (7, 2, [365.0, 730.5])
    assert query.fairness_columns is None
    query = site_query_settings({**APP_CONFIG, "task": "evaluate", "fairness-columns": '["gender", "cvd"]'}, run)
    assert query.fairness_columns == ["gender", "cvd"]


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"seed": "x"}, "'seed' is 'x': give an integer >= 0"),
        ({"seed": True}, "'seed' is True"),
        ({"expected-sites": -1}, "'expected-sites' is -1: give an integer >= 0"),
        ({"horizons": "365"}, "'horizons' is '365': give a JSON list of positive times"),
        ({"horizons": "[365, -1]"}, "'horizons' is '[365, -1]'"),
        ({"horizons": "[365"}, "'horizons' is '[365'"),
        ({"horizons": "[]"}, "'horizons' is '[]'"),
        ({"task": "audit", "horizons": "[365]"}, 'only with task="evaluate"'),
        ({"fairness-columns": "gender"}, "'fairness-columns' is 'gender': give a JSON list of binary or categorical"),
        ({"fairness-columns": "[]"}, "'fairness-columns' is '[]'"),
        ({"fairness-columns": "[1]"}, "'fairness-columns' is '[1]'"),
        ({"task": "audit", "fairness-columns": '["gender"]'}, 'only with task="evaluate"'),
    ],
)
def test_a_bad_setting_is_refused_naming_its_key_and_the_fix(tmp_path, setting, named) -> None:
    run = _run(tmp_path, {"site-0": "ok"})
    with pytest.raises(ValueError) as raised:
        site_query_settings({**APP_CONFIG, "task": "evaluate", **setting}, run)
    assert named in str(raised.value)


def test_a_run_with_no_trained_site_needs_expected_sites(tmp_path) -> None:
    with pytest.raises(ValueError, match="records no site that trained: give run config 'expected-sites'"):
        site_query_settings({**APP_CONFIG, "task": "audit"}, RunDirectory(tmp_path))
    given = site_query_settings({**APP_CONFIG, "task": "audit", "expected-sites": 2}, RunDirectory(tmp_path))
    assert given.expected_sites == 2
