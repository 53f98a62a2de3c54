"""A site's durable, append-only, tamper-evident privacy ledger.

The ledger is the site's own record of every DP-SGD step it has taken or is about to take,
stored exactly as Opacus' RDP accountant keeps its history: (noise multiplier, sample rate,
steps). Four rules make accounting never under-count:

1. **Spend before training.** A round's full planned steps are written (and synced to disk)
   *before* any training step; a crash mid-round therefore counts the whole round.
2. **Refuse past the budget.** A reservation whose epsilon, composed with everything already
   recorded, would exceed the site's target is refused and nothing is written.
3. **Append-only.** SQLite triggers reject UPDATE and DELETE, so history cannot be rewritten
   through the ledger's own connection.
4. **Tamper-evident.** Triggers stop no one who edits the file directly, so entries are
   hash-chained and the chain's head is kept in a witness file beside the ledger
   (:mod:`fedsynth.client.ledger_chain`). On open and before every reservation the chain is
   recomputed and held against the witness: a missing, truncated, edited or swapped ledger
   raises :class:`LedgerIntegrityError` and the site refuses to train until an operator
   resolves it (``fedsynth ledger restore``, :mod:`fedsynth.client.ledger_backup`).

A ledger written before chaining existed (no chain, no witness) is sealed as it stands on its
first open: there is nothing to check it against, and refusing it would strand every existing
site. From then on it is checked like any other.

The epsilon reported is always recomputed from the stored history by Opacus' accountant,
never from a separately kept tally.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from opacus.accountants import RDPAccountant

from fedsynth.client.ledger_chain import (
    RESOLVE,
    SPEND_FIELDS,
    LedgerError,
    LedgerHead,
    LedgerIntegrityError,
    SpendEntry,
    check_against_witness,
    entry_hash,
    read_witness,
    seal,
    verify_chain,
    witness_path,
    write_witness,
)
from fedsynth.client.rdp import rdp_epsilon

__all__ = ["BudgetExceededError", "LedgerError", "LedgerIntegrityError", "PrivacyLedger", "SpendEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    target_epsilon REAL NOT NULL,
    target_delta REAL NOT NULL,
    accountant TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    noise_multiplier REAL NOT NULL CHECK (noise_multiplier > 0),
    sample_rate REAL NOT NULL CHECK (sample_rate > 0 AND sample_rate <= 1),
    steps INTEGER NOT NULL CHECK (steps > 0),
    epsilon_after REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ledger_id TEXT NOT NULL,
    sealed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spend_chain (
    spend_id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS spend_no_update BEFORE UPDATE ON spend
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS spend_no_delete BEFORE DELETE ON spend
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS budget_no_update BEFORE UPDATE ON budget
BEGIN SELECT RAISE(ABORT, 'the privacy budget cannot be changed once set'); END;
CREATE TRIGGER IF NOT EXISTS budget_no_delete BEFORE DELETE ON budget
BEGIN SELECT RAISE(ABORT, 'the privacy budget cannot be changed once set'); END;
CREATE TRIGGER IF NOT EXISTS chain_no_update BEFORE UPDATE ON spend_chain
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS chain_no_delete BEFORE DELETE ON spend_chain
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON ledger_meta
BEGIN SELECT RAISE(ABORT, 'the ledger id cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON ledger_meta
BEGIN SELECT RAISE(ABORT, 'the ledger id cannot be changed'); END;
"""


class BudgetExceededError(RuntimeError):
    """Training the requested steps would take the site past its privacy budget."""


def default_delta(n_records: int) -> float:
    """delta = 1 / n^1.1: below 1/n, the largest delta that still protects every record."""
    if n_records < 2:
        raise LedgerError(f"need at least 2 training records to set delta, got {n_records}")
    return float(n_records**-1.1)


def check_delta(delta: float, n_records: int) -> None:
    """delta must be below 1/n, else a mechanism that leaks one whole record is '(0, delta)-DP'."""
    if not 0.0 < delta < 1.0 / n_records:
        raise LedgerError(
            f"delta = {delta:g} must be in (0, 1/n) = (0, {1.0 / n_records:g}) for n = {n_records} records; "
            f"use e.g. delta = 1/n^1.1 = {default_delta(n_records):.3g}"
        )


class PrivacyLedger:
    """Append-only, hash-chained SQLite record of one site's DP-SGD spending, with its budget.

    Parameters
    ----------
    path : Path
        The ledger file (created with the budget on first use); its witness lies beside it.
    target_epsilon, target_delta : float
        The site's budget. Re-opening an existing ledger with a different budget is refused:
        a budget is fixed for the life of the data it protects.
    prior_state : iterable of Path
        Files showing the site has worked before (its split, its run plans). With any of them,
        or a witness, a missing ledger is refused instead of silently started afresh.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        target_epsilon: float,
        target_delta: float,
        prior_state: Iterable[Path] = (),
    ) -> None:
        if not (math.isfinite(target_epsilon) and target_epsilon > 0):
            raise LedgerError(f"target_epsilon must be a positive number, got {target_epsilon}")
        if not 0.0 < target_delta < 1.0:
            raise LedgerError(f"target_delta must be in (0, 1), got {target_delta}")
        self.path = Path(path)
        self.witness_path = witness_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        witness = read_witness(self.witness_path)
        self._prior_state = [str(p) for p in prior_state if p.exists()]
        if not self.path.exists():
            evidence = [str(self.witness_path)] if witness else self._prior_state
            if evidence:
                raise LedgerIntegrityError(
                    f"the privacy ledger {self.path} is missing, but this site has trained or been set up before "
                    f"({', '.join(evidence)}). {RESOLVE}"
                )
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # FULL sync: a reservation is on disk before reserve() returns, so kill -9 cannot lose it.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._file_id = self._stat_id()
        row = self._db.execute("SELECT target_epsilon, target_delta FROM budget").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO budget (id, target_epsilon, target_delta, accountant) VALUES (1, ?, ?, 'rdp')",
                (target_epsilon, target_delta),
            )
        elif (row[0], row[1]) != (target_epsilon, target_delta):
            raise LedgerError(
                f"{self.path} was created with budget (epsilon={row[0]}, delta={row[1]}); it cannot be reopened "
                f"with (epsilon={target_epsilon}, delta={target_delta}). Use the original budget."
            )
        self.target_epsilon = float(target_epsilon)
        self.target_delta = float(target_delta)
        self._seal_if_new(witness)
        self.verify()

    def _stat_id(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_dev, stat.st_ino

    def _seal_if_new(self, witness: LedgerHead | None) -> None:
        """Give a new (or pre-chain) ledger its id and chain, once; a witnessed ledger never needs it."""
        if self._db.execute("SELECT 1 FROM ledger_meta").fetchone() is not None:
            return
        if witness is not None:
            raise LedgerIntegrityError(
                f"{self.path} has no hash chain but its witness {self.witness_path} records "
                f"{witness.entries} entries: the ledger was replaced by an older or foreign file. {RESOLVE}"
            )
        self._db.execute("BEGIN IMMEDIATE")
        try:
            seal(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        write_witness(self.witness_path, self._chain()[0])

    # -- integrity --------------------------------------------------------------------------------

    def verify(self) -> LedgerHead:
        """Recompute the chain, hold it against the witness, and bring the witness up to the ledger.

        Raises LedgerIntegrityError if the ledger file was deleted or replaced while open, its
        chain is broken, or it is behind, rewrites or is not the ledger its witness records.
        """
        return self._verified()[0]

    def _verified(self) -> tuple[LedgerHead, list[SpendEntry]]:
        if not self.path.exists() or self._stat_id() != self._file_id:
            raise LedgerIntegrityError(f"the privacy ledger {self.path} was deleted or replaced while open. {RESOLVE}")
        head, entries, chain = self._chain()
        witness = read_witness(self.witness_path)
        if witness is None and (head.entries or self._prior_state):  # only a new ledger may lack one
            raise LedgerIntegrityError(
                f"the ledger's witness {self.witness_path} is missing, so {self.path} ({head.entries} entries, "
                f"epsilon {head.epsilon:.4f}) cannot be checked against it. If this ledger is the site's own, "
                "re-seal it: `fedsynth ledger backup SITE_DIR -o FILE`, then `fedsynth ledger restore SITE_DIR FILE`. "
                + RESOLVE
            )
        if witness is not None:
            check_against_witness(head, chain, witness, self.path)
        if witness != head:  # a new ledger, or one ahead of its witness (a crash between the two writes)
            write_witness(self.witness_path, head)
        return head, entries

    def _chain(self) -> tuple[LedgerHead, list[SpendEntry], list[str]]:
        """The ledger's head, entries and hash chain, recomputed (raises if the chain is broken)."""
        ledger_id, entries, chain = verify_chain(self._db, self.path)
        # The last entry's epsilon_after (hash-covered) is the composed epsilon as recorded and
        # reported: no accountant call (seconds on a long history) each time the chain is checked.
        epsilon = entries[-1].epsilon_after if entries else 0.0
        return LedgerHead(ledger_id, len(entries), chain[-1], epsilon), entries, chain

    def require_at_least(self, epsilon: float, source: str) -> None:
        """Refuse if this (verified) ledger records less than ``epsilon``, which ``source`` saw this site spend."""
        spent = self.verify().epsilon
        if spent < epsilon * (1 - 1e-9):
            raise LedgerIntegrityError(
                f"{source} recorded epsilon {epsilon:.4f} for this site, but its ledger {self.path} records "
                f"only {spent:.4f}: the ledger (and its witness) were reset or rolled back. {RESOLVE}"
            )

    # -- reading --------------------------------------------------------------------------------

    def entries(self) -> list[SpendEntry]:
        rows = self._db.execute(f"SELECT {SPEND_FIELDS} FROM spend ORDER BY id").fetchall()
        return [SpendEntry(*row) for row in rows]

    def history(self) -> list[tuple[float, float, int]]:
        """The accountant history: [(noise_multiplier, sample_rate, steps), ...]."""
        return [(e.noise_multiplier, e.sample_rate, e.steps) for e in self.entries()]

    def accountant(self) -> RDPAccountant:
        """An Opacus RDP accountant holding exactly the recorded history."""
        accountant = RDPAccountant()
        accountant.history = self.history()
        return accountant

    def epsilon(self, history: list[tuple[float, float, int]] | None = None) -> float:
        """Epsilon spent at the site's delta, by Opacus' RDP accountant."""
        return rdp_epsilon(self.history() if history is None else history, self.target_delta)

    @property
    def remaining_epsilon(self) -> float:
        return max(0.0, self.target_epsilon - self.epsilon())

    # -- writing --------------------------------------------------------------------------------

    def reserve(self, *, run_id: str, round: int, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Record ``steps`` DP-SGD steps *before* they are taken; return epsilon after them.

        Raises BudgetExceededError (writing nothing) if they would exceed the target epsilon, and
        LedgerIntegrityError if the ledger fails its checks (see :meth:`verify`).
        """
        # One write transaction from the check to the insert: the chain is extended from the
        # head just verified, never from one another process moved on meanwhile.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            head, recorded = self._verified()
            history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in recorded]
            planned = [*history, (float(noise_multiplier), float(sample_rate), int(steps))]
            epsilon_after = self.epsilon(planned)
            if epsilon_after > self.target_epsilon:
                raise BudgetExceededError(
                    f"refused: round {round} of run '{run_id}' would raise this site's epsilon from "
                    f"{head.epsilon:.4f} to {epsilon_after:.4f}, above its budget of {self.target_epsilon:g} "
                    f"(delta={self.target_delta:g}). The site will not train further under this budget."
                )
            entry = SpendEntry(
                datetime.now(UTC).isoformat(), run_id, int(round), float(noise_multiplier), float(sample_rate),
                int(steps), epsilon_after,
            )  # fmt: skip
            cursor = self._db.execute(
                f"INSERT INTO spend ({SPEND_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(asdict(entry).values())
            )
            new_head = entry_hash(head.head_sha256, entry)
            self._db.execute("INSERT INTO spend_chain (spend_id, sha256) VALUES (?, ?)", (cursor.lastrowid, new_head))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        # After the commit: a crash in between leaves the ledger ahead of its witness, which is accepted.
        write_witness(self.witness_path, LedgerHead(head.ledger_id, head.entries + 1, new_head, epsilon_after))
        return epsilon_after

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
