"""Back up, restore and check a site's privacy ledger: explicit operator commands.

``fedsynth ledger backup|restore|verify SITE_DIR`` (``SITE_DIR`` holds ``site.toml``; the
ledger is ``SITE_DIR/state/ledger.sqlite`` with its witness ``ledger.head.json``).

* **Backup** copies the ledger with SQLite's online backup API (consistent even while the
  site is running), only after its hash chain and witness check out, into a self-contained
  file (rollback journal, no ``-wal`` beside it) written atomically.
* **Restore** verifies the backup's chain and refuses one that would under-count: one behind
  the site's witness (fewer entries or a smaller epsilon, or another ledger), or behind the
  site's current ledger where that one still verifies. Only with the witness missing (lost
  with the disk, or removed by the operator on purpose) may an older backup come back; the
  coordinator's floor (its record of the site's largest epsilon in a run) still applies. The
  restored ledger replaces the old one atomically and the witness is rewritten from it. Stop
  the site's SuperNode first: a running site holding the old file refuses to train with it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fedsynth.client.ledger_chain import (
    RESOLVE,
    LedgerHead,
    LedgerIntegrityError,
    SpendEntry,
    check_against_witness,
    read_witness,
    verify_chain,
    witness_path,
    write_witness,
)
from fedsynth.data.io import atomic_path

STATE = "state"
LEDGER = "ledger.sqlite"


def ledger_path(site_dir: str | Path) -> Path:
    """The site's ledger: ``SITE_DIR/state/ledger.sqlite``."""
    return Path(site_dir) / STATE / LEDGER


def _open(path: Path, what: str) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    # Read-write but only read: a read-only connection cannot open a WAL ledger without its -shm file.
    return sqlite3.connect(path)


@dataclass(frozen=True)
class VerifiedLedger:
    """A ledger that checked out against its chain and witness: its head, entries and budget."""

    head: LedgerHead
    entries: list[SpendEntry]
    target_epsilon: float
    target_delta: float


def _read(db: sqlite3.Connection, source: Path) -> tuple[LedgerHead, list[str], list[SpendEntry]]:
    try:
        ledger_id, entries, chain = verify_chain(db, source)
    except sqlite3.DatabaseError as exc:
        raise LedgerIntegrityError(f"{source} is not a readable fedsynth ledger ({exc})") from None
    epsilon = entries[-1].epsilon_after if entries else 0.0  # as the site records it (hash-covered)
    return LedgerHead(ledger_id, len(entries), chain[-1], epsilon), chain, entries


def read_head(db: sqlite3.Connection, source: Path) -> tuple[LedgerHead, list[str]]:
    """A ledger file's verified head and chain; LedgerIntegrityError if broken or unreadable."""
    head, chain, _ = _read(db, source)
    return head, chain


def verify_ledger(site_dir: str | Path) -> LedgerHead:
    """Check a site's ledger against its chain and witness, as the site does before training."""
    return read_verified_ledger(site_dir).head


def read_verified_ledger(site_dir: str | Path) -> VerifiedLedger:
    """:func:`verify_ledger`'s checks, returning the ledger's entries and budget as well (reads only)."""
    path = ledger_path(site_dir)
    witness = read_witness(witness_path(path))
    if witness is not None and not path.exists():
        raise LedgerIntegrityError(
            f"the privacy ledger {path} is missing; its witness records {witness.entries} entries "
            f"(epsilon {witness.epsilon:.4f}). {RESOLVE}"
        )
    with contextlib.closing(_open(path, "privacy ledger")) as db:
        head, chain, entries = _read(db, path)
        budget = db.execute("SELECT target_epsilon, target_delta FROM budget").fetchone()
    if budget is None:  # the chain's genesis covers the budget: only a ledger never written lacks one
        raise LedgerIntegrityError(f"{path} records no budget: it is not a fedsynth ledger. {RESOLVE}")
    if witness is None:
        raise LedgerIntegrityError(
            f"the ledger's witness {witness_path(path)} is missing: {path} ({head.entries} entries, "
            f"epsilon {head.epsilon:.4f}) verifies on its own but cannot be checked against it. If this ledger "
            "is the site's own, re-seal it: `fedsynth ledger backup SITE_DIR -o FILE`, then "
            "`fedsynth ledger restore SITE_DIR FILE`"
        )
    check_against_witness(head, chain, witness, path)
    return VerifiedLedger(head, entries, float(budget[0]), float(budget[1]))


def backup_ledger(site_dir: str | Path, output: str | Path, *, force: bool = False) -> LedgerHead:
    """Copy the site's verified ledger to ``output`` (SQLite online backup); return what it holds.

    A ledger with a missing witness may be backed up (that is how it is re-sealed: back up,
    then restore); one that contradicts its witness may not.
    """
    path, output = ledger_path(site_dir), Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} already exists; choose another path or pass --force to replace it")
    with contextlib.closing(_open(path, "privacy ledger")) as source:
        head, chain = read_head(source, path)
        witness = read_witness(witness_path(path))
        if witness is not None:
            check_against_witness(head, chain, witness, path)
        with atomic_path(output) as tmp:
            with contextlib.closing(sqlite3.connect(tmp)) as copy:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            with contextlib.closing(_open(tmp, "backup")) as copy:
                if read_head(copy, output)[0] != head:
                    raise LedgerIntegrityError(f"the backup of {path} does not read back the same; nothing written")
    return head


def _refuse_if_behind(backup: LedgerHead, chain: list[str], known: LedgerHead, what: str, source: Path) -> None:
    if known.entries == 0:  # nothing recorded (e.g. a site set up afresh after a lost disk): nothing to forget
        return
    if backup.ledger_id != known.ledger_id:
        raise LedgerIntegrityError(
            f"{source} is a backup of another ledger (id {backup.ledger_id[:8]}) than {what} (id "
            f"{known.ledger_id[:8]}); restore this site's own backup"
        )
    if backup.entries < known.entries or backup.epsilon < known.epsilon * (1 - 1e-9):
        raise LedgerIntegrityError(
            f"{source} holds {backup.entries} entries (epsilon {backup.epsilon:.4f}) but {what} records "
            f"{known.entries} (epsilon {known.epsilon:.4f}): restoring it would forget privacy already spent. "
            "Restore a backup taken after the last round, or, only if the witness is truly lost, see "
            "deploy/README.md ('Back up and restore a site's ledger')"
        )
    if chain[known.entries] != known.head_sha256:
        raise LedgerIntegrityError(f"{source}: its first {known.entries} entries differ from those {what} holds")


def restore_ledger(site_dir: str | Path, backup: str | Path) -> LedgerHead:
    """Replace the site's ledger with a verified backup that is not behind it; rewrite the witness."""
    path, backup = ledger_path(site_dir), Path(backup)
    with contextlib.closing(_open(backup, "ledger backup")) as source:
        head, chain = read_head(source, backup)
        try:
            witness = read_witness(witness_path(path))
        except LedgerIntegrityError:
            raise LedgerIntegrityError(
                f"the site's witness {witness_path(path)} cannot be read, so {backup} cannot be checked "
                "against it; move it aside only if it is truly lost (deploy/README.md), then restore again"
            ) from None
        if witness is not None:
            _refuse_if_behind(head, chain, witness, f"the site's witness {witness_path(path)}", backup)
        current = None
        with contextlib.suppress(FileNotFoundError, LedgerIntegrityError), contextlib.closing(_open(path, "")) as db:
            current = read_head(db, path)[0]  # a damaged ledger is what a restore replaces: not compared
        if current is not None:
            _refuse_if_behind(head, chain, current, f"the site's current ledger {path}", backup)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with contextlib.closing(sqlite3.connect(tmp)) as copy:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=WAL")  # as the site keeps it
                copy.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.closing(_open(tmp, "restored ledger")) as copy:
                if read_head(copy, backup)[0] != head:
                    raise LedgerIntegrityError(f"{backup} does not read back the same; the ledger was not replaced")
            # The old file's write-ahead log must not be replayed onto the restored one.
            for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                leftover.unlink(missing_ok=True)
    write_witness(witness_path(path), head)
    return head
