"""Conditional augmentation: which subgroups are topped up, with what, and how it is scored."""

from __future__ import annotations

import pandas as pd

from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.augmentation import conditional_augmentation, under_represented
from fedsynth.evaluation.site_evaluation import evaluate_synthetic


def test_rare_binary_levels_are_topped_up_with_rows_of_that_level_from_the_model(whas500, small_model) -> None:
    frame, schema = whas500
    groups = under_represented(frame, schema, max_share=0.3)
    counts = {c: frame[c].value_counts() for c in ("afb", "av3", "sho", "chf", "gender")}
    assert groups["afb=1"] == counts["afb"][1] and groups["av3=1"] == counts["av3"][1]
    assert "gender=1" not in groups and "gender=0" not in groups  # 40% / 60%: not rare
    assert "chf=1" not in groups  # 31% >= 30%
    calls: list[tuple[int, list[str], int]] = []

    def sample(n: int, conditions: list[str], seed: int) -> pd.DataFrame:
        calls.append((n, conditions, seed))
        return small_model.sample(n, conditions, seed=seed)

    rows, drawn = conditional_augmentation(frame, schema, sample, max_share=0.3, ratio=0.5, seed=7)
    assert drawn == {name: round(0.5 * count) for name, count in groups.items()}
    assert len(rows) == sum(drawn.values()) and [c[2] for c in calls] == list(range(7, 7 + len(groups)))
    start = 0
    for n, (condition,), _ in calls:
        column, level = condition.split("=")
        assert (rows[column].iloc[start : start + n].astype(str) == level).all()  # every row is of its subgroup
        start += n


def test_the_site_evaluation_scores_the_conditionally_augmented_model(whas500, small_model) -> None:
    frame, schema = whas500
    train, holdout = train_holdout_split(frame, 0.5, 0)
    synthetic = small_model.sample(len(train), seed=1)
    result = evaluate_synthetic(
        train, holdout, synthetic, schema, [365.0], conditional_sampler=lambda n, c, s: small_model.sample(n, c, s)
    )
    augmentation = result["conditional_augmentation"]
    assert augmentation["rows"] == sum(augmentation["rows_per_subgroup"].values()) > 0
    conditional = result["models"]["conditional"]
    assert "harrell_c" in conditional["discrimination"]
    assert "mean_ici" in conditional["calibration"][0]["subgroups"]
    # Without a sampler the fourth model is not there (nothing is faked).
    assert "conditional" not in evaluate_synthetic(train, holdout, synthetic, schema, [365.0])["models"]
