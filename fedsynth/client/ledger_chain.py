"""What makes a site's privacy ledger tamper-evident: a hash chain and its witness.

SQLite triggers keep the ledger append-only through its own connection, but stop no one who
edits the file directly (``DROP TRIGGER``, then ``DELETE``) or deletes or swaps it. So:

* **Chain.** Each spend entry's SHA-256 covers the previous entry's hash and its own fields;
  the first "previous hash" (the genesis) covers the ledger's random id and its budget. An
  edited entry, budget or a row deleted from the middle breaks every hash after it.
* **Witness.** The chain's head (ledger id, entry count, head hash, epsilon) is also kept in a
  second file beside the ledger (``ledger.head.json``), replaced atomically and synced after
  every reservation. A deleted, truncated or swapped ledger no longer matches it.

A ledger may be *ahead* of its witness (a crash between the ledger's commit and the witness
write): more entries only add spend, so that is accepted when the witness's head is a prefix of
the chain. Someone able to rewrite both files can forge a consistent pair (there is no secret
at the site to stop them); the coordinator's floor, the largest epsilon it ever recorded for
the site, is the check kept outside the site (:meth:`PrivacyLedger.require_at_least`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedsynth.data.io import atomic_path
from fedsynth.errors import UserError

SPEND_FIELDS = "created, run_id, round, noise_multiplier, sample_rate, steps, epsilon_after"
WITNESS_SUFFIX = ".head.json"
RESOLVE = (
    "The site will not train until this is resolved: restore the site's own ledger with "
    "`fedsynth ledger restore SITE_DIR BACKUP` (deploy/README.md, 'Back up and restore a site's ledger'). "
    "Never start a fresh ledger for the same records: it would forget the privacy already spent on them."
)


class LedgerError(UserError, ValueError):
    """The ledger file or its parameters are inconsistent; the message says how to fix it."""


class LedgerIntegrityError(LedgerError):
    """The ledger is missing, truncated, edited or not this site's: it may under-count, so no training."""


@dataclass(frozen=True)
class SpendEntry:
    """One reserved block of DP-SGD steps."""

    created: str
    run_id: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_after: float


@dataclass(frozen=True)
class LedgerHead:
    """What the witness keeps of a ledger: which ledger, how many entries, their chain head, epsilon."""

    ledger_id: str
    entries: int
    head_sha256: str
    epsilon: float


def witness_path(ledger_path: str | Path) -> Path:
    """The witness beside a ledger: ``state/ledger.sqlite`` -> ``state/ledger.head.json``."""
    path = Path(ledger_path)
    return path.with_name(path.stem + WITNESS_SUFFIX)


def _sha256(document: object) -> str:
    # Python's JSON writes floats by repr, which round-trips SQLite's 64-bit REALs exactly.
    return hashlib.sha256(json.dumps(document, separators=(",", ":")).encode()).hexdigest()


def genesis(db: sqlite3.Connection, ledger_id: str) -> str:
    """The chain's first 'previous hash': binds the ledger's id and its budget into every entry."""
    budget = db.execute("SELECT target_epsilon, target_delta, accountant FROM budget").fetchone()
    return _sha256(["fedsynth-ledger-v1", ledger_id, *(budget or ())])


def entry_hash(previous: str, entry: SpendEntry) -> str:
    return _sha256([previous, *asdict(entry).values()])


def spend_rows(db: sqlite3.Connection) -> list[tuple[int, SpendEntry]]:
    return [(row[0], SpendEntry(*row[1:])) for row in db.execute(f"SELECT id, {SPEND_FIELDS} FROM spend ORDER BY id")]


def read_witness(path: Path) -> LedgerHead | None:
    """The witness at ``path``, None if there is none; an unreadable one is an integrity error."""
    if not path.exists():
        return None
    try:
        head = LedgerHead(**json.loads(path.read_text(encoding="utf-8")))
        kinds = (str, int, str, (int, float))
        if not all(isinstance(value, kind) for value, kind in zip(asdict(head).values(), kinds, strict=True)):
            raise ValueError("a field has the wrong type")
    except (ValueError, TypeError) as exc:
        raise LedgerIntegrityError(f"the ledger's witness {path} cannot be read ({exc}). {RESOLVE}") from None
    return head


def write_witness(path: Path, head: LedgerHead) -> None:
    """Atomically replace the witness, synced (file and directory) so it survives a power cut."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(head), indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def seal(db: sqlite3.Connection) -> None:
    """Give a ledger its id and chain its entries as they stand (inside the caller's transaction)."""
    ledger_id = uuid.uuid4().hex
    db.execute(
        "INSERT INTO ledger_meta (id, ledger_id, sealed) VALUES (1, ?, ?)", (ledger_id, datetime.now(UTC).isoformat())
    )
    previous = genesis(db, ledger_id)
    for spend_id, entry in spend_rows(db):
        previous = entry_hash(previous, entry)
        db.execute("INSERT INTO spend_chain (spend_id, sha256) VALUES (?, ?)", (spend_id, previous))


def verify_chain(db: sqlite3.Connection, source: Path) -> tuple[str, list[SpendEntry], list[str]]:
    """Recompute a ledger's chain; return its id, entries and the chain [genesis, entry 1's hash, ...].

    Raises LedgerIntegrityError naming the first entry whose stored hash does not match.
    """
    meta = db.execute("SELECT ledger_id FROM ledger_meta").fetchone()
    if meta is None:
        raise LedgerIntegrityError(f"{source} has no ledger id: it is not a sealed fedsynth ledger. {RESOLVE}")
    rows = spend_rows(db)
    stored = dict(db.execute("SELECT spend_id, sha256 FROM spend_chain").fetchall())
    previous = genesis(db, meta[0])
    hashes = [previous]
    for number, (spend_id, entry) in enumerate(rows, start=1):
        previous = entry_hash(previous, entry)
        if stored.pop(spend_id, None) != previous:
            raise LedgerIntegrityError(
                f"{source}: entry {number} (run '{entry.run_id}', round {entry.round}), or the budget or an entry "
                f"before it, does not match its recorded hash: the ledger was edited. {RESOLVE}"
            )
        hashes.append(previous)
    if stored:  # hashes of entries no longer there
        raise LedgerIntegrityError(
            f"{source}: {len(stored)} recorded entries are gone (their hashes remain): rows were deleted. {RESOLVE}"
        )
    return meta[0], [entry for _, entry in rows], hashes


def check_against_witness(head: LedgerHead, chain: list[str], witness: LedgerHead, source: Path) -> None:
    """Refuse a ledger that is not the witnessed one, is behind it, or rewrote what it sealed.

    ``chain`` is :func:`verify_chain`'s [genesis, entry hashes...]: the witness's head must be in it.
    """
    sealed = f"its witness records {witness.entries} entries (epsilon {witness.epsilon:.4f})"
    if head.ledger_id != witness.ledger_id:
        raise LedgerIntegrityError(
            f"{source} is not the ledger this site wrote (ledger id {head.ledger_id[:8]}, {head.entries} entries; "
            f"{sealed} of ledger {witness.ledger_id[:8]}): it was replaced. {RESOLVE}"
        )
    if head.entries < witness.entries:
        raise LedgerIntegrityError(
            f"{source} holds {head.entries} entries (epsilon {head.epsilon:.4f}) but {sealed}: "
            f"entries were deleted. {RESOLVE}"
        )
    if chain[witness.entries] != witness.head_sha256:
        raise LedgerIntegrityError(
            f"{source}: its first {witness.entries} entries are not those its witness sealed: "
            f"the ledger's history was rewritten. {RESOLVE}"
        )
