"""Reading and writing tables (CSV or Parquet by suffix), never leaving half-written files.

Reading refuses, with the file and the fix named, what pandas would otherwise misread
quietly: text that is not UTF-8, a CSV separated by something other than commas, and a
header that names a column twice (pandas renames the copy 'age.1', which is then ignored).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from fedsynth.errors import UserError

TABLE_SUFFIXES = (".csv", ".parquet")


class OutputNotWritableError(UserError, OSError):
    """An output file cannot be written where it was asked for (the message names the path)."""


class TableFormatError(UserError, ValueError):
    """A table file cannot be read or written as given (suffix, encoding, separator, header)."""


# Separators that spreadsheet exports use instead of commas (semicolons in locales with decimal commas).
_OTHER_SEPARATORS = {";": "semicolon", "\t": "tab", "|": "pipe"}


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
        try:
            _refuse_duplicates(path, _csv_header(path))
            return pd.read_csv(path, keep_default_na=False, na_values=[""])
        except UnicodeDecodeError:
            raise TableFormatError(_not_utf8(path)) from None
        except pd.errors.ParserError as exc:
            raise TableFormatError(
                f"{path} is not a well-formed CSV file ({exc}); check that line's commas and quotes"
            ) from None
    return _read_parquet(path)


def _csv_header(path: Path) -> list[str]:
    """The header's column names as written, refusing an empty file and non-comma separators."""
    # utf-8-sig, as pandas does: a byte-order mark (Excel's "CSV UTF-8") is not part of the first name.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first_line = handle.readline()
        handle.seek(0)
        header = next(csv.reader(handle), None)
    if header is None:
        raise TableFormatError(f"{path} is empty; it needs a header line naming the columns, then one line per record")
    # Only a one-column header is suspect: no schema has fewer than three columns, so this
    # never refuses a file that could have been valid.
    for separator, label in _OTHER_SEPARATORS.items() if len(header) == 1 else ():
        fields = next(csv.reader([first_line], delimiter=separator), [])
        if len(fields) > 1:
            raise TableFormatError(
                f"{path} looks {label}-delimited (its header splits into {len(fields)} columns at "
                f"{separator!r} and none at commas); fedsynth reads comma-separated CSV only: "
                "re-save it with commas as separators (and points, not commas, as decimal marks)"
            )
    return header


def _not_utf8(path: Path) -> str:
    """Say which line is not UTF-8, and how to convert the file.

    Refusing beats guessing another encoding: Latin-1 decodes any bytes, so a wrong guess
    silently turns labels into categories other than the shared schema's.
    """
    where = ""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = f"line {number} has the byte 0x{line[exc.start : exc.start + 1].hex()}; "
                break
    return (
        f"{path} is not UTF-8 text ({where}it was probably saved as Latin-1 or Windows-1252); re-save it as "
        f"UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}-utf8.csv` or Excel's 'CSV UTF-8', "
        "and use the new file"
    )


def _refuse_duplicates(path: Path, names: list[str]) -> None:
    seen: dict[str, list[int]] = {}
    for position, name in enumerate(names, start=1):
        seen.setdefault(name, []).append(position)
    repeated = {name: positions for name, positions in seen.items() if len(positions) > 1}
    if repeated:
        listed = "; ".join(
            f"'{name}' at columns {', '.join(map(str, positions))}" for name, positions in repeated.items()
        )
        raise TableFormatError(
            f"{path} names a column more than once ({listed}); rename or remove the copies "
            "so that every column name is unique"
        )


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        _refuse_duplicates(path, list(pq.read_schema(path).names))
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError) as exc:
        raise TableFormatError(
            f"{path} is not a readable Parquet file ({exc}); re-export it, or save the data as .csv"
        ) from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    The temporary file is named ``.<name>.<pid>.<random>.tmp``: a writer killed outright
    (SIGKILL runs no cleanup) leaves one, and the next write to ``path`` removes it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a parent that is a file, no permission, a read-only file system
        raise OutputNotWritableError(
            f"{path}: cannot write there ({exc.strerror or exc}); choose a directory you can write to, "
            "or give this user write access to it"
        ) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files of writers of ``path`` whose process is gone; return them.

    A temporary file of a live process (another writer of the same path) is left alone.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]+\.tmp")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(candidate.name)
        if match and not _process_alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive, and not ours to judge
    return True


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` as Ctrl-C raises KeyboardInterrupt,
    so cleanup (removing a half-written file) runs for both; the old handler is restored after.

    Only the main thread may set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _HashingFile:
    """A binary file that also hashes every byte written to it (pyarrow writes through it too)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def tell(self) -> int:
        return self.handle.tell()

    def close(self) -> None:
        self.closed = True  # the owner closes the real file


def write_table_chunks(
    frames: Iterable[pd.DataFrame], path: str | Path, suffix: str, metadata: dict[str, str] | None = None
) -> str:
    """Write ``frames`` in order as one table at ``path``; return the SHA-256 of its bytes.

    Only one frame is held at a time, so memory does not grow with the table: CSV gets one
    header, Parquet a row group per frame and ``metadata`` in its footer. ``suffix`` names the
    format ('.csv' or '.parquet'); ``path`` is written in place, so give it a temporary path
    (see :func:`atomic_path`). At least one frame is needed (it fixes the columns).
    """
    with open(path, "wb") as handle:
        sink = _HashingFile(handle)
        if suffix == ".csv":
            written = 0
            for written, frame in enumerate(frames, start=1):
                sink.write(frame.to_csv(index=False, header=written == 1).encode("utf-8"))
            if not written:
                raise ValueError(f"{path}: no rows to write, not even a header")
        else:
            _write_parquet_chunks(frames, sink, metadata)
        handle.flush()
        os.fsync(handle.fileno())
    return sink.sha256.hexdigest()


def _write_parquet_chunks(frames: Iterable[pd.DataFrame], sink: _HashingFile, metadata: dict[str, str] | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for frame in frames:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                merged = dict(table.schema.metadata or {})
                merged.update({f"fedsynth.{k}".encode(): v.encode() for k, v in (metadata or {}).items()})
                writer = pq.ParquetWriter(sink, table.schema.with_metadata(merged))
            writer.write_table(table)  # schemas are compared without their metadata
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("no rows to write, not even a schema")


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


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
