"""A site's durable, append-only privacy ledger.

The ledger is the site's own record of every DP-SGD step it has taken or is about to take,
stored exactly as Opacus' RDP accountant keeps its history: (noise multiplier, sample rate,
steps). Three rules make accounting never under-count:

1. **Spend before training.** A round's full planned steps are written (and synced to disk)
   *before* any training step; a crash mid-round therefore counts the whole round.
2. **Refuse past the budget.** A reservation whose epsilon, composed with everything already
   recorded, would exceed the site's target is refused and nothing is written.
3. **Append-only.** SQLite triggers reject UPDATE and DELETE, so history cannot be rewritten.

The epsilon reported is always recomputed from the stored history by Opacus' accountant,
never from a separately kept tally.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from opacus.accountants import RDPAccountant

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
CREATE TRIGGER IF NOT EXISTS spend_no_update BEFORE UPDATE ON spend
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS spend_no_delete BEFORE DELETE ON spend
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS budget_no_update BEFORE UPDATE ON budget
BEGIN SELECT RAISE(ABORT, 'the privacy budget cannot be changed once set'); END;
CREATE TRIGGER IF NOT EXISTS budget_no_delete BEFORE DELETE ON budget
BEGIN SELECT RAISE(ABORT, 'the privacy budget cannot be changed once set'); END;
"""


class BudgetExceededError(RuntimeError):
    """Training the requested steps would take the site past its privacy budget."""


class LedgerError(ValueError):
    """The ledger file or its parameters are inconsistent; the message says how to fix it."""


# Opacus' default RDP orders stop at 63; with much noise and few steps (epsilon well below 1)
# the best order is the largest one and the bound is loose (Opacus warns). Higher orders only
# tighten the bound: every order gives a valid epsilon and the minimum over them is taken.
RDP_ORDERS: tuple[float, ...] = (*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 192, 256, 384, 512, 1024)


def rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at ``delta`` of a DP-SGD history [(noise multiplier, sample rate, steps)], by Opacus' RDP accountant."""
    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta, alphas=list(RDP_ORDERS))) if history else 0.0


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


class PrivacyLedger:
    """Append-only SQLite record of one site's DP-SGD spending, with its budget.

    Parameters
    ----------
    path : Path
        The ledger file (created with the budget on first use).
    target_epsilon, target_delta : float
        The site's budget. Re-opening an existing ledger with a different budget is refused:
        a budget is fixed for the life of the data it protects.
    """

    def __init__(self, path: str | Path, *, target_epsilon: float, target_delta: float) -> None:
        if not (math.isfinite(target_epsilon) and target_epsilon > 0):
            raise LedgerError(f"target_epsilon must be a positive number, got {target_epsilon}")
        if not 0.0 < target_delta < 1.0:
            raise LedgerError(f"target_delta must be in (0, 1), got {target_delta}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # FULL sync: a reservation is on disk before reserve() returns, so kill -9 cannot lose it.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
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

    # -- reading --------------------------------------------------------------------------------

    def entries(self) -> list[SpendEntry]:
        rows = self._db.execute(
            "SELECT created, run_id, round, noise_multiplier, sample_rate, steps, epsilon_after FROM spend ORDER BY id"
        ).fetchall()
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

        Raises BudgetExceededError (writing nothing) if they would exceed the target epsilon.
        """
        planned = [*self.history(), (float(noise_multiplier), float(sample_rate), int(steps))]
        epsilon_after = self.epsilon(planned)
        if epsilon_after > self.target_epsilon:
            raise BudgetExceededError(
                f"refused: round {round} of run '{run_id}' would raise this site's epsilon from "
                f"{self.epsilon():.4f} to {epsilon_after:.4f}, above its budget of {self.target_epsilon:g} "
                f"(delta={self.target_delta:g}). The site will not train further under this budget."
            )
        self._db.execute(
            "INSERT INTO spend (created, run_id, round, noise_multiplier, sample_rate, steps, epsilon_after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                datetime.now(UTC).isoformat(),
                run_id,
                int(round),
                float(noise_multiplier),
                float(sample_rate),
                int(steps),
                epsilon_after,
            ),
        )
        return epsilon_after

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
