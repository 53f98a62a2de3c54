"""How many records training needs: below these minimums it is refused, with the reason, up front.

DP training at a site (``fedsynth train``): at least :data:`MIN_DP_TRAINING_RECORDS` training
records (the rows left after the site's holdout), and more than one Poisson batch of them.
Plain training (``fedsynth fit``): at least :data:`MIN_FIT_ROWS` rows.

Both are checked before anything is written or any privacy is spent: at the site when it opens
(:class:`fedsynth.client.site.Site`), by the coordinator when it can see the data (simulation),
and by ``fedsynth fit`` before it trains.
"""

from __future__ import annotations

from fedsynth.errors import UserError

# DP-SGD at a site: delta = 1/n^1.1 is 0.47 at n = 2 and still 0.0135 at n = 50; at n = 100 it is
# 0.0063 (one record's chance of an unprotected release, at most, across the whole run).
MIN_DP_TRAINING_RECORDS = 100
# Plain MCM: each numeric column is learnt as a distribution over 64 bins (MCMConfig.n_bins);
# with fewer rows than that most bins hold one patient and the samples are near-copies of them.
MIN_FIT_ROWS = 100


class TooFewRecordsError(UserError, ValueError):
    """Too few records to train on as asked; the message gives the counts, the minimum and the fix."""


def training_records(n_rows: int, holdout_fraction: float) -> int:
    """The records a site trains on: what its persistent split leaves after the holdout."""
    return n_rows - int(round(n_rows * holdout_fraction))


def min_dp_training_records(batch_size: int) -> int:
    """The fewest training records a site trains on with DP-SGD at ``batch_size``.

    Also more records than one expected batch: with at most one batch per epoch Opacus samples
    every record at every step (rate 1), and DP-SGD's epsilon loses the amplification by
    subsampling that keeps its noise usable.
    """
    return max(MIN_DP_TRAINING_RECORDS, batch_size + 1)


def check_dp_training_records(who: str, n_rows: int, holdout_fraction: float, batch_size: int) -> None:
    """Refuse DP training on too few records; ``who`` names the site (and its data) in the message."""
    n_train = training_records(n_rows, holdout_fraction)
    minimum = min_dp_training_records(batch_size)
    if n_train < minimum:
        raise TooFewRecordsError(
            f"{who}: {n_train} training records ({n_rows} rows less the {holdout_fraction:g} holdout) are below the "
            f"minimum of {minimum} for DP training (at least {MIN_DP_TRAINING_RECORDS}, and more than one batch of "
            f"training.batch_size = {batch_size}); "
            f"fix: give this site at least {rows_for_training_records(minimum, holdout_fraction)} rows, or "
            "train where more records are"
        )


def rows_for_training_records(n_train: int, holdout_fraction: float) -> int:
    """The fewest rows whose split leaves ``n_train`` training records."""
    n_rows = n_train
    while training_records(n_rows, holdout_fraction) < n_train:
        n_rows += 1
    return n_rows


def check_fit_rows(source: str, n_rows: int) -> None:
    """Refuse plain (non-DP) training on fewer than :data:`MIN_FIT_ROWS` rows."""
    if n_rows < MIN_FIT_ROWS:
        raise TooFewRecordsError(
            f"{source}: {n_rows} row(s) are below the minimum of {MIN_FIT_ROWS} for `fedsynth fit`: on fewer "
            "rows the model learns the patients themselves and its samples are near-copies of them; "
            f"fix: train on at least {MIN_FIT_ROWS} rows"
        )
