import numpy as np

from fedsynth.suppression import MIN_CELL_ROWS, is_small_indicator


def test_a_small_level_is_found_whatever_the_missing_values() -> None:
    few_ones = [1.0] * (MIN_CELL_ROWS - 2) + [0.0] * 50
    assert is_small_indicator(few_ones)
    # A missing = "model" column keeps NaN in the design: still a 0/1 column with 3 ones.
    assert is_small_indicator(few_ones + [np.nan] * 129)
    assert not is_small_indicator([1.0] * MIN_CELL_ROWS + [0.0] * 50 + [np.nan] * 10)
    assert not is_small_indicator([0.5, 1.0, 2.0])  # not a 0/1 column
