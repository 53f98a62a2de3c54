"""The documented minimums: DP training at a site, and `fedsynth fit`."""

from __future__ import annotations

import pytest

from fedsynth.client.config import SiteConfig
from fedsynth.client.site import Site
from fedsynth.data.minimum import (
    MIN_DP_TRAINING_RECORDS,
    TooFewRecordsError,
    check_dp_training_records,
    min_dp_training_records,
    rows_for_training_records,
    training_records,
)


def test_the_dp_minimum_is_100_records_and_more_than_one_batch() -> None:
    assert MIN_DP_TRAINING_RECORDS == 100
    assert min_dp_training_records(64) == 100 and min_dp_training_records(256) == 257
    assert training_records(125, 0.2) == 100 and rows_for_training_records(100, 0.2) == 125
    check_dp_training_records("site 'a'", 125, 0.2, 64)
    with pytest.raises(TooFewRecordsError, match=r"site 'a': 99 training records .* minimum of 100 .* 125 rows"):
        check_dp_training_records("site 'a'", 124, 0.2, 64)


def test_a_site_below_the_minimum_is_refused_before_its_split_or_ledger_is_written(whas500, tmp_path) -> None:
    frame, schema = whas500
    config = SiteConfig.from_dict({"site": {"name": "a"}, "training": {"holdout_fraction": 0.2}})
    with pytest.raises(TooFewRecordsError, match="^a: 2 training records"):
        Site(config, schema, tmp_path / "state", frame=frame.iloc[:3])
    assert list((tmp_path / "state").iterdir()) == []  # no split.json, no ledger: the site may add rows
    # A batch as large as the site's training records samples every record at every step: refused too.
    large_batch = SiteConfig.from_dict({"site": {"name": "a"}, "training": {"batch_size": 200}})
    with pytest.raises(TooFewRecordsError, match="minimum of 201"):
        Site(large_batch, schema, tmp_path / "state", frame=frame.iloc[:250])
    Site(config, schema, tmp_path / "state", frame=frame.iloc[:125]).close()  # 100 training records: enough
