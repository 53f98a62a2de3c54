"""One digest of a synthetic sample's rows, whichever process drew them and however chunked.

A site audits rows it samples itself; the release gate regenerates the released sample and
must know the site audited those very rows. Both hash the rows the same way: the header once,
then every row as CSV text with floats at 10 significant digits (so a value that differs in
its last bits on another machine's arithmetic still hashes the same), chunk by chunk. The
digest of synthetic rows is a fixed-length hash of model output, not of any site's data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pandas as pd

FLOAT_FORMAT = "%.10g"


class RowsDigest:
    """SHA-256 over a sample's rows, fed one frame at a time (the same result for any chunking)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._columns: list[str] | None = None

    def update(self, frame: pd.DataFrame) -> None:
        columns = [str(c) for c in frame.columns]
        if self._columns is None:
            self._columns = columns
            self._hash.update(("\t".join(columns) + "\n").encode())
        elif columns != self._columns:
            raise ValueError(f"a chunk's columns {columns} differ from the sample's {self._columns}")
        if len(frame):
            text = frame.to_csv(index=False, header=False, float_format=FLOAT_FORMAT, lineterminator="\n")
            self._hash.update(text.encode())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def rows_digest(frames: pd.DataFrame | Iterable[pd.DataFrame]) -> str:
    """The :class:`RowsDigest` of one frame or of a sample's frames in order."""
    digest = RowsDigest()
    for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
        digest.update(frame)
    return digest.hexdigest()
