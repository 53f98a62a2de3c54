"""The released file is the model's output, and the very rows every site audited.

``fedsynth sample`` writes the file's SHA-256 and how it was drawn (model digest, n, seed,
conditions) into its provenance sidecar. Before anything is signed, :func:`check_release_file`
refuses a file that is not provably that output: no sidecar, bytes that differ from the
sidecar's hash (edited after sampling), another model, or rows that differ from the sample the
run's model regenerates for the sidecar's n, seed and conditions (rows from anywhere else, real
patients included, never regenerate). :func:`audit_binding_problems` then ties the file to the
audit: the sites audited exactly that n, seed and conditions, and each names the rows it audited
by the same digest the regenerated sample has.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.data.io import sha256_file
from fedsynth.errors import UserError
from fedsynth.model.generators import AnyGenerator, load_generator
from fedsynth.model.persistence import ModelFileError, model_digest
from fedsynth.model.provenance import sidecar_path
from fedsynth.model.rows_digest import RowsDigest

SYNTHETIC_NAMES = ("synthetic.csv", "synthetic.parquet")
READ_ROWS = 65_536  # rows of the file held at a time while comparing
RTOL, ATOL = 1e-9, 1e-12  # CSV text round-trips a float to within this


class ReleaseFileError(UserError, ValueError):
    """The file offered for release is not provably the audited model's output: refused."""


@dataclass(frozen=True)
class ReleaseFile:
    """A synthetic file checked against its sidecar and regenerated from RUN_DIR/model."""

    path: Path
    record: dict[str, Any]  # its provenance sidecar
    sha256: str  # of the file's bytes, equal to the sidecar's
    rows_sha256: str  # RowsDigest of the regenerated sample, whose rows the file holds

    @property
    def sample(self) -> dict[str, Any]:
        """How it was drawn, in audit.json's ``sample`` form."""
        return {"seed": self.record["seed"], "n": self.record["n"], "conditions": self.record["conditions"]}


def synthetic_file(run_dir: Path) -> Path | None:
    return next((run_dir / n for n in SYNTHETIC_NAMES if (run_dir / n).exists()), None)


def how_to_sample(run_dir: Path, output: Path | None = None) -> str:
    """The command that makes a releasable file: the run's model, with the audited n, seed and conditions."""
    target = output or run_dir / SYNTHETIC_NAMES[0]
    try:
        sample = json.loads((run_dir / "audit.json").read_text(encoding="utf-8"))["sample"]
        where = "".join(f" --where '{c}'" for c in sample["conditions"])
        spec, note = f"-n {sample['n']} --seed {sample['seed']}{where}", "the n, seed and conditions the sites audited"
    except (OSError, ValueError, KeyError, TypeError):
        spec, note = "-n N --seed SEED", "then audit it: `fedsynth audit RUN_DIR --seed SEED`; N: audit.json's sample"
    return f"make the release with `fedsynth sample {run_dir / 'model'} {spec} -o {target} --force` ({note})"


class _FileRows:
    """A table file's rows as text (CSV) or values (Parquet), ``take(k)`` rows at a time."""

    def __init__(self, path: Path) -> None:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS)
            self._source: Iterator[pd.DataFrame] = (batch.to_pandas() for batch in batches)
        else:  # text as written: no NA guessing, no type inference
            self._source = iter(pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=READ_ROWS))
        self._buffer = pd.DataFrame()

    def take(self, k: int) -> pd.DataFrame:
        parts, have = [], 0
        while have < k:
            if self._buffer.empty:
                chunk = next(self._source, None)
                if chunk is None:
                    break
                self._buffer = chunk.reset_index(drop=True)
                if self._buffer.empty:
                    parts.append(self._buffer)  # keeps the header of a file without rows
                    continue
            part = self._buffer.iloc[: k - have]
            self._buffer = self._buffer.iloc[k - have :]
            parts.append(part)
            have += len(part)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _as_text(values: pd.Series) -> np.ndarray:
    return values.astype(object).where(values.notna(), "").astype(str).to_numpy()


def _first_difference(expected: pd.DataFrame, found: pd.DataFrame) -> tuple[int, str] | None:
    """(row, column) of the first cell where the file differs from the model's rows (values unshown)."""
    for column in expected.columns:
        want = expected[column]
        if pd.api.types.is_numeric_dtype(want) and not pd.api.types.is_bool_dtype(want):
            got = pd.to_numeric(found[column].replace("", np.nan), errors="coerce").to_numpy(dtype=float)
            same = np.isclose(want.to_numpy(dtype=float), got, rtol=RTOL, atol=ATOL, equal_nan=True)
        else:
            same = _as_text(want) == _as_text(found[column])
        if not same.all():
            return int(np.argmin(same)), str(column)
    return None


def compare_rows(path: Path, model: AnyGenerator, n: int, conditions: list[str], seed: int) -> str:
    """Check that ``path`` holds exactly ``model.sample(n, conditions, seed)``; return its RowsDigest.

    Both sides are read a chunk at a time (``MCM.sample_chunks`` concatenates to exactly
    ``MCM.sample``'s rows), so a large release is checked in bounded memory. Raises
    :class:`ReleaseFileError` naming the first row and column that differ, never their values.
    """
    digest, rows, start = RowsDigest(), _FileRows(path), 0
    try:
        for expected in model.sample_chunks(n, conditions, seed=seed):
            digest.update(expected)
            found = rows.take(len(expected))
            if list(found.columns) != list(expected.columns):
                raise ReleaseFileError(
                    f"{path.name}'s columns {list(found.columns)} are not the model's {list(expected.columns)}"
                )
            if len(found) < len(expected):
                raise ReleaseFileError(f"{path.name} holds {start + len(found)} rows; the sample it names has {n}")
            difference = _first_difference(expected, found)
            if difference is not None:
                row, column = difference
                raise ReleaseFileError(
                    f"{path.name} row {start + row + 1}, column '{column}' differs from the model's sample for "
                    f"n={n}, seed={seed}: the file is not that sample (rows from elsewhere, or edited)"
                )
            start += len(expected)
        if len(rows.take(1)):
            raise ReleaseFileError(f"{path.name} holds more rows than the {n} of the sample it names")
    except (ValueError, OSError) as exc:
        if isinstance(exc, ReleaseFileError):
            raise
        raise ReleaseFileError(f"{path.name} cannot be read as the model's sample ({exc})") from None
    return digest.hexdigest()


def check_release_file(run_dir: Path) -> ReleaseFile:
    """The run's synthetic file, refused (:class:`ReleaseFileError`) unless it is provably what
    ``fedsynth sample`` drew from RUN_DIR/model with the n, seed and conditions of its sidecar."""
    run_dir = Path(run_dir)
    data = synthetic_file(run_dir)
    if data is None:
        names = " or ".join(SYNTHETIC_NAMES)
        raise ReleaseFileError(f"no synthetic data in {run_dir} ({names}); {how_to_sample(run_dir)}")
    fix = how_to_sample(run_dir, data)
    sidecar = sidecar_path(data)
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReleaseFileError(
            f"{data} has no provenance sidecar ({sidecar.name}): its origin is unknown; {fix}"
        ) from (None)
    except (OSError, ValueError) as exc:
        raise ReleaseFileError(f"{sidecar} is unreadable ({exc}): the data's origin is unknown; {fix}") from None
    if not isinstance(record, dict) or not record.get("sha256"):
        raise ReleaseFileError(f"{sidecar} records no SHA-256 of {data.name}, so nothing binds it to the file; {fix}")
    actual = sha256_file(data)
    if actual != record["sha256"]:
        raise ReleaseFileError(
            f"{data} does not match the SHA-256 in {sidecar.name}: it was changed after `fedsynth sample` wrote "
            f"it; {fix}"
        )
    if record.get("mode") != "model-sample":
        notice = record.get("notice", "no notice")
        raise ReleaseFileError(f"{data.name} is not a DP model sample ({notice}); {fix}")
    try:
        model_sha256 = model_digest(run_dir / "model")
        model = load_generator(run_dir / "model")
    except (FileNotFoundError, ModelFileError) as exc:
        raise ReleaseFileError(f"RUN_DIR/model cannot regenerate {data.name}: {exc}") from None
    if record.get("model_sha256") != model_sha256:
        raise ReleaseFileError(f"{data.name} was sampled from another model than RUN_DIR/model; {fix}")
    try:
        n, seed, conditions = int(record["n"]), int(record["seed"]), [str(c) for c in record.get("conditions") or []]
    except (KeyError, TypeError, ValueError):
        raise ReleaseFileError(f"{sidecar} does not say how {data.name} was sampled (n, seed); {fix}") from None
    try:
        rows_sha256 = compare_rows(data, model, n, conditions, seed)
    except ReleaseFileError as exc:
        raise ReleaseFileError(f"{exc}; {fix}") from None
    return ReleaseFile(data, {**record, "n": n, "seed": seed, "conditions": conditions}, actual, rows_sha256)


def audit_binding_problems(audit: dict[str, Any], release: ReleaseFile) -> list[str]:
    """Why audit.json's evidence does not cover the released rows (empty: it does)."""
    name = release.path.name
    fix = how_to_sample(release.path.parent, release.path)
    audited = audit.get("sample")
    if not isinstance(audited, dict):
        return [
            "audit.json does not say which rows the sites audited (made by an older fedsynth): re-run "
            f"`fedsynth audit RUN_DIR --seed {release.record['seed']}`, then {fix}"
        ]
    if {k: audited.get(k) for k in ("seed", "n", "conditions")} != release.sample:
        return [f"{name} is the sample {release.sample}, but the sites audited {audited} (audit.json's sample); {fix}"]
    sites = audit.get("sites", [])
    others = [s.get("site", "?") for s in sites if (s.get("sample") or {}).get("sha256") != release.rows_sha256]
    if others:
        return [
            f"{', '.join(others)} audited other rows than {name} holds (their sample digest differs from the "
            f"regenerated sample's): re-run `fedsynth audit RUN_DIR --seed {audited['seed']}` with this fedsynth"
        ]
    return []


def evaluation_size_problems(evaluation: dict[str, Any], release: ReleaseFile) -> list[str]:
    """Why evaluation.json's figures do not describe data of the released file's size (empty: they do).

    Hazard ratios, C-indices and marginal distances read on a sample smaller than the release carry
    more sampling noise than the release has; on a larger one, less: either way the verdict would be
    about other data than what researchers get."""
    evaluated = (evaluation.get("sample") or {}).get("n")
    size = int(release.record["n"])
    fix = f"re-run `fedsynth evaluate RUN_DIR` (it evaluates samples of the audited release's size, {size})"
    if evaluated is None:
        return [f"evaluation.json does not say how many synthetic rows the sites evaluated (an older fedsynth): {fix}"]
    if int(evaluated) != size:
        return [f"the sites evaluated samples of {evaluated} rows, but {release.path.name} holds {size}: {fix}"]
    others = [s.get("site", "?") for s in evaluation.get("sites", []) if (s.get("sample") or {}).get("n") != size]
    if others:
        return [f"{', '.join(others)} evaluated samples of another size than {release.path.name} holds ({size}): {fix}"]
    return []


def write_audited_sample(run_dir: Path) -> Path:
    """Write RUN_DIR/synthetic.csv as ``fedsynth sample`` would, with audit.json's n, seed and
    conditions: the releasable file (the demo's release step)."""
    from fedsynth.model.provenance import model_sample_record, write_synthetic
    from fedsynth.server.evidence import check_dp_claim

    run_dir = Path(run_dir)
    try:
        sample = json.loads((run_dir / "audit.json").read_text(encoding="utf-8"))["sample"]
        n, seed, conditions = int(sample["n"]), int(sample["seed"]), list(sample["conditions"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseFileError(
            f"{run_dir / 'audit.json'} names no audited sample ({exc}): run `fedsynth audit`"
        ) from None
    model_dir = run_dir / "model"
    model = load_generator(model_dir)
    dp = check_dp_claim(model_dir, model)
    record = model_sample_record(model_dir, dp.differentially_private, n, seed, conditions, dp.reason)
    return write_synthetic(model.sample_chunks(n, conditions, seed=seed), run_dir / SYNTHETIC_NAMES[0], record)
