"""Small-cell suppression: how many real rows an aggregate a site sends must rest on.

One place for the minimums every site aggregate and figure applies (evaluation and privacy), as
statistical offices suppress small cells: a number describing a handful of patients describes
those patients. (Training's own minimums are :mod:`fedsynth.data.minimum`'s.)

* ``MIN_GROUP_ROWS``: a group or curve (a Kaplan-Meier curve, its subgroups, a correlation
  matrix, a calibration curve) needs this many real rows; a Kaplan-Meier curve is cut where
  fewer remain at risk.
* ``MIN_CELL_ROWS``: a cell (a histogram bin or level, a calibration-curve point's neighbourhood,
  a level of a 0/1 column) needs this many real rows before its value is released.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MIN_GROUP_ROWS = 20
MIN_CELL_ROWS = 5


def is_small_indicator(values: Iterable[float]) -> bool:
    """A 0/1 column (missing values aside) with fewer than ``MIN_CELL_ROWS`` real rows in one of
    its levels: a figure read from it (a correlation, a log-HR) describes those few rows."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]  # a modelled missing value is in neither level
    if not np.isin(array, (0.0, 1.0)).all():
        return False
    ones = int(array.sum())
    return min(ones, len(array) - ones) < MIN_CELL_ROWS
