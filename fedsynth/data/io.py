"""Reading and writing tables (CSV or Parquet by suffix), never leaving half-written files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet")


class TableFormatError(ValueError):
    """A path has a suffix we cannot read or write."""


def table_suffix(path: Path) -> str:
    """The table format of ``path`` ('.csv' or '.parquet'); raise for anything else."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableFormatError(f"{path}: unsupported file type '{suffix or '(none)'}'; use .csv or .parquet")
    return suffix


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as a DataFrame (CSV cells keep their text until validated)."""
    path = Path(path)
    suffix = table_suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    return pd.read_parquet(path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_table(frame: pd.DataFrame, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``frame`` atomically as CSV or Parquet; Parquet files also carry ``metadata``."""
    path = Path(path)
    suffix = table_suffix(path)
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if metadata:
                merged = dict(table.schema.metadata or {})
                merged.update({f"fedsynth.{k}".encode(): v.encode() for k, v in metadata.items()})
                table = table.replace_schema_metadata(merged)
            pq.write_table(table, tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
