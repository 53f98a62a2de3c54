"""What a site's privacy officer reads about the site, from its directory alone (``fedsynth site status``).

Nothing here writes: the ledger is checked as ``fedsynth ledger verify`` checks it (chain and
witness; :func:`fedsynth.client.ledger_backup.read_verified_ledger`), and a site that has never
trained has no ledger, which is reported (nothing spent, the whole budget left) rather than
created. What is read:

* ``site.toml``: the site's name and its budget as its privacy officer set it;
* ``state/ledger.sqlite``: epsilon spent, composed by Opacus' RDP accountant from the recorded
  history as the site's ledger computes it; per run, the training rounds reserved (a round is
  recorded before it runs) and the marginal release, the ledger's round 0;
* the data file and ``state/split.json``: the split records a SHA-256 of the data's validated rows;
  it is recomputed from the file now, so that data edited after the split show before the site
  refuses them at its next round;
* ``state/audits.jsonl``: the audits and evaluations answered, against ``privacy.max_audits``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedsynth.client.config import SCHEMA_FILE, SITE_FILE, SiteConfig
from fedsynth.client.ledger_backup import STATE, ledger_path, read_verified_ledger
from fedsynth.client.ledger_chain import RESOLVE, LedgerIntegrityError, SpendEntry, witness_path
from fedsynth.client.rdp import rdp_epsilon
from fedsynth.client.site_files import (
    AUDIT_LOG,
    MARGINALS_FILE,
    MARGINALS_ROUND,
    RUNS_DIR,
    SPLIT_FILE,
    frame_digest,
    prior_state_files,
)
from fedsynth.data.io import read_table, sha256_file
from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame
from fedsynth.errors import UserError

NEVER_TRAINED, VERIFIED, FAILED = "never trained", "verified", "failed"


def require_site_dir(site_dir: Path) -> Path:
    """``site_dir``'s ``site.toml``; a UserError naming what is missing and the fix if there is none."""
    if not site_dir.is_dir():
        raise UserError(
            f"site directory not found: {site_dir}; give the directory that holds {SITE_FILE} "
            "(the SuperNode's --node-config site-dir)"
        )
    path = site_dir / SITE_FILE
    if not path.is_file():
        raise UserError(
            f"{path} not found: {site_dir} is not a site directory; give the directory that holds the site's "
            f"{SITE_FILE} (its name, data, schema and budget: see deploy/README.md, '3. SuperNode')"
        )
    return path


def load_site_config(site_dir: Path) -> SiteConfig:
    """The site's validated config; a UserError naming the file and the fix if missing or invalid."""
    return SiteConfig.from_toml(require_site_dir(site_dir))


@dataclass(frozen=True)
class RunSpend:
    """One run's lines in the ledger."""

    run_id: str
    rounds: int  # training rounds recorded (each is reserved before it runs)
    last_round: int | None
    last_round_time: str | None
    marginals_time: str | None  # the run's marginal release (ledger round 0), if any
    marginals_noise_multiplier: float | None
    marginals_stored: bool  # its noisy tables are in runs/<run id>/marginals.json


@dataclass(frozen=True)
class LedgerStatus:
    """The ledger as verified: never trained (no ledger, no prior state), verified, or failed (why)."""

    state: str
    problem: str | None = None
    entries: int = 0
    epsilon: float = 0.0  # composed by the RDP accountant from the recorded history
    recorded_epsilon: float = 0.0  # the last entry's epsilon_after, as the ledger wrote it
    target_epsilon: float | None = None  # the budget the ledger was created with
    target_delta: float | None = None
    runs: list[RunSpend] = field(default_factory=list)


@dataclass(frozen=True)
class DataStatus:
    """The data file, its digests and the split's; ``problem`` says why the data could not be read."""

    path: str | None
    file_sha256: str | None = None  # the file's bytes
    rows_sha256: str | None = None  # the validated rows, as split.json digests them
    n_rows: int | None = None
    split_sha256: str | None = None
    split_created: str | None = None
    problem: str | None = None

    @property
    def matches_split(self) -> bool | None:
        """Whether the data are those split; None if there is no split yet or no digest of the data."""
        if self.split_sha256 is None or self.rows_sha256 is None:
            return None
        return self.rows_sha256 == self.split_sha256


@dataclass(frozen=True)
class AuditStatus:
    answered: int
    by_kind: dict[str, int]
    cap: int


@dataclass(frozen=True)
class SiteStatus:
    site_dir: str
    name: str
    target_epsilon: float
    target_delta: float | None  # None: 1/n^1.1 of the training rows (site.toml sets none)
    ledger: LedgerStatus
    data: DataStatus
    audits: AuditStatus

    @property
    def budget_epsilon(self) -> float:
        """The budget that binds: the ledger's, once it exists (a site refuses to reopen it with another)."""
        return self.ledger.target_epsilon if self.ledger.target_epsilon is not None else self.target_epsilon

    @property
    def remaining_epsilon(self) -> float:
        return max(0.0, self.budget_epsilon - self.ledger.epsilon)

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["remaining_epsilon"] = self.remaining_epsilon
        document["data"]["matches_split"] = self.data.matches_split
        return document


def _runs(entries: list[SpendEntry], state_dir: Path) -> list[RunSpend]:
    runs = []
    for run_id in dict.fromkeys(e.run_id for e in entries):  # in the order they first spent
        rounds = [e for e in entries if e.run_id == run_id and e.round != MARGINALS_ROUND]
        marginals = [e for e in entries if e.run_id == run_id and e.round == MARGINALS_ROUND]
        runs.append(
            RunSpend(
                run_id=run_id,
                rounds=len(rounds),
                last_round=rounds[-1].round if rounds else None,
                last_round_time=rounds[-1].created if rounds else None,
                marginals_time=marginals[-1].created if marginals else None,
                marginals_noise_multiplier=marginals[-1].noise_multiplier if marginals else None,
                marginals_stored=(state_dir / RUNS_DIR / run_id / MARGINALS_FILE).is_file(),
            )
        )
    return runs


def ledger_status(site_dir: Path) -> LedgerStatus:
    """The site's ledger, verified as the site verifies it before training; never created here."""
    path = ledger_path(site_dir)
    if not path.exists() and not witness_path(path).exists():
        prior = prior_state_files(site_dir / STATE)
        if not prior:
            return LedgerStatus(NEVER_TRAINED)
        return LedgerStatus(
            FAILED,
            f"the privacy ledger {path} is missing, but this site has trained or been set up before "
            f"({', '.join(map(str, prior))}). {RESOLVE}",
        )
    try:
        ledger = read_verified_ledger(site_dir)
    except (LedgerIntegrityError, FileNotFoundError) as exc:
        return LedgerStatus(FAILED, str(exc))
    history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in ledger.entries]
    return LedgerStatus(
        VERIFIED,
        entries=ledger.head.entries,
        epsilon=rdp_epsilon(history, ledger.target_delta),
        recorded_epsilon=ledger.head.epsilon,
        target_epsilon=ledger.target_epsilon,
        target_delta=ledger.target_delta,
        runs=_runs(ledger.entries, site_dir / STATE),
    )


def data_status(config: SiteConfig, site_dir: Path) -> DataStatus:
    """The data's digests (file and validated rows) and the split's; why not, if the data cannot be read."""
    split, created, problem = None, None, None
    split_path = site_dir / STATE / SPLIT_FILE
    if split_path.exists():
        try:
            saved = json.loads(split_path.read_text(encoding="utf-8"))
            split, created = str(saved["data_sha256"]), str(saved.get("created"))
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"{split_path} cannot be read ({exc!r}); restore it from the site's backup"
    data = config.data
    if data is None:
        return DataStatus(
            None,
            split_sha256=split,
            split_created=created,
            problem=f"{site_dir / SITE_FILE} names no data file; set site.data",
        )
    if not data.is_file():
        return DataStatus(
            str(data),
            split_sha256=split,
            split_created=created,
            problem=f"the data file {data} (site.data in {site_dir / SITE_FILE}) is not there",
        )
    digest = sha256_file(data)
    schema_path = config.schema_path or site_dir / SCHEMA_FILE
    try:
        canonical, _ = validate_frame(read_table(data), Schema.from_toml(schema_path), source=str(data))
    except (UserError, ValueError, OSError) as exc:
        return DataStatus(str(data), digest, split_sha256=split, split_created=created, problem=str(exc))
    return DataStatus(str(data), digest, frame_digest(canonical), len(canonical), split, created, problem)


def audit_status(config: SiteConfig, site_dir: Path) -> AuditStatus:
    """Audits and evaluations answered (one line each, written before each ran) and the cap."""
    path = site_dir / STATE / AUDIT_LOG
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kinds: Counter[str] = Counter()
    for line in lines:
        try:
            kinds[str(json.loads(line).get("kind", "audit"))] += 1
        except (ValueError, AttributeError):
            kinds["unreadable"] += 1
    return AuditStatus(len(lines), dict(kinds), config.privacy.max_audits)


def site_status(site_dir: str | Path) -> SiteStatus:
    """Everything ``fedsynth site status`` reports, read from ``site_dir`` without writing anything."""
    site_dir = Path(site_dir)
    config = load_site_config(site_dir)
    return SiteStatus(
        site_dir=str(site_dir),
        name=config.name,
        target_epsilon=config.privacy.target_epsilon,
        target_delta=config.privacy.target_delta,
        ledger=ledger_status(site_dir),
        data=data_status(config, site_dir),
        audits=audit_status(config, site_dir),
    )
