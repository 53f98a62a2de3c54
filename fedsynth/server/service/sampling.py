"""Answering one sample request: conditions located by index, streamed reproducible draws, encoders.

A request for ``n`` rows is drawn as the model's row groups (:meth:`MCM.sample_chunks`, at
most ``CHUNK_ROWS`` rows each), so a large cohort streams out while later groups are still
being drawn and memory stays bounded. Each group's generator is derived from the request seed
and the group alone, so the same request gives the same rows whatever the server's load,
thread scheduling or other requests: exactly the rows ``fedsynth sample --seed S`` writes
(and ``MCM.sample`` returns) for the same model, n and conditions.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd

from fedsynth.data.conditions import SYNTAX_HELP, Condition, ConditionError, ResolvedCondition, parse_conditions
from fedsynth.model.generators import AnyGenerator
from fedsynth.model.sampler import GROUP_ROWS
from fedsynth.server.service.access_log import RowCounter

CHUNK_ROWS = GROUP_ROWS  # the most rows one streamed chunk holds
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
SUFFIXES = {"csv": "csv", "json": "jsonl", "parquet": "parquet"}


class ConditionProblem(ValueError):
    """A condition the schema cannot honour, with the index of the offending list entry."""

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        super().__init__(message)


def resolve_indexed(model: AnyGenerator, conditions: list[str]) -> list[ResolvedCondition]:
    """Resolve ``conditions`` against the model's schema; a problem names the entry it is in.

    Each entry is parsed alone first (syntax errors belong to one entry); schema errors carry
    the column, located at the first entry that constrains it.
    """
    parsed: list[list[Condition]] = []
    for index, text in enumerate(conditions):
        if not text.strip():
            raise ConditionProblem(index, f"empty condition; {SYNTAX_HELP}")
        try:
            parsed.append(parse_conditions([text]))
        except ConditionError as exc:
            raise ConditionProblem(index, str(exc)) from None
    try:
        return model.resolve([condition for entry in parsed for condition in entry])
    except ConditionError as exc:
        index = next((i for i, entry in enumerate(parsed) if any(c.column == exc.column for c in entry)), 0)
        raise ConditionProblem(index, str(exc)) from None


def sample_chunks(
    model: AnyGenerator,
    resolved: list[ResolvedCondition],
    n: int,
    seed: int,
    limiter: threading.Semaphore,
    counter: RowCounter,
) -> Iterator[pd.DataFrame]:
    """The rows of ``model.sample(n, resolved, seed)``, a row group at a time.

    ``limiter`` bounds the groups drawn at once over all requests (one thread per request
    draws its own groups in turn); ``counter`` counts the rows handed on to be sent.
    """
    frames = model.sample_chunks(n, resolved, seed, workers=1)
    while True:
        with limiter:
            frame = next(frames, None)
        if frame is None:
            return
        counter.rows += len(frame)
        yield frame


def encode_text(chunks: Iterator[pd.DataFrame], fmt: str) -> Iterator[bytes]:
    """CSV (one header) or JSON lines, chunk by chunk, for a streamed response."""
    for index, frame in enumerate(chunks):
        if fmt == "csv":
            yield frame.to_csv(index=False, header=index == 0).encode("utf-8")
        else:
            # 15 significant digits: the most pandas writes, enough to keep every bound exact.
            yield frame.to_json(orient="records", lines=True, double_precision=15).encode("utf-8")


def encode_parquet(chunks: Iterator[pd.DataFrame], record: dict[str, Any]) -> bytes:
    """One Parquet file (a row group per chunk) with the provenance in its metadata, as
    :func:`fedsynth.data.io.write_table` embeds it in files written by `fedsynth sample`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    writer = None
    try:
        for frame in chunks:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                metadata = {**(table.schema.metadata or {}), b"fedsynth.provenance": json.dumps(record).encode()}
                writer = pq.ParquetWriter(buffer, table.schema.with_metadata(metadata))
            writer.write_table(table)  # schemas are compared without their metadata
    finally:
        if writer is not None:
            writer.close()
    return buffer.getvalue()
