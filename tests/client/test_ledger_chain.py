"""The ledger is tamper-evident: a deleted, truncated, edited or swapped ledger is refused.

Each attack edits the files the way an operator could (a raw SQLite connection, dropped
triggers, file copies), never through the ledger's own API.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from fedsynth.client.ledger import LedgerIntegrityError, PrivacyLedger
from fedsynth.client.ledger_chain import witness_path

BUDGET = {"target_epsilon": 4.0, "target_delta": 1e-5}


def _ledger_with_rounds(path: Path, rounds: int = 3) -> float:
    """A closed ledger holding ``rounds`` reservations; returns its epsilon."""
    with PrivacyLedger(path, **BUDGET) as ledger:
        for server_round in range(1, rounds + 1):
            ledger.reserve(run_id="r", round=server_round, noise_multiplier=1.0, sample_rate=0.02, steps=50)
        return ledger.epsilon()


def _raw(path: Path, *statements: str) -> None:
    """Run SQL on the ledger file directly, as anyone with write access to it could."""
    db = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        db.execute(statement)
    db.close()


def test_a_ledger_reopens_and_keeps_its_witness_at_its_head(tmp_path) -> None:
    path = tmp_path / "ledger.sqlite"
    epsilon = _ledger_with_rounds(path)
    witness = json.loads(witness_path(path).read_text())
    assert witness_path(path).name == "ledger.head.json"
    assert (witness["entries"], witness["epsilon"]) == (3, epsilon)
    with PrivacyLedger(path, **BUDGET) as ledger:
        assert ledger.verify().head_sha256 == witness["head_sha256"]
        assert ledger.epsilon() == epsilon


def test_a_deleted_ledger_is_refused_while_its_witness_remains(tmp_path) -> None:
    path = tmp_path / "ledger.sqlite"
    _ledger_with_rounds(path)
    path.unlink()
    with pytest.raises(LedgerIntegrityError, match=r"ledger\.sqlite is missing.*ledger\.head\.json.*ledger restore"):
        PrivacyLedger(path, **BUDGET)
    assert not path.exists()  # nothing started afresh


def test_a_deleted_ledger_is_refused_where_the_site_has_prior_state(tmp_path) -> None:
    split = tmp_path / "split.json"
    split.write_text("{}")
    with pytest.raises(LedgerIntegrityError, match=r"is missing.*split\.json"):
        PrivacyLedger(tmp_path / "ledger.sqlite", **BUDGET, prior_state=[split])
    PrivacyLedger(tmp_path / "fresh" / "ledger.sqlite", **BUDGET, prior_state=[tmp_path / "absent.json"]).close()


@pytest.mark.parametrize(
    "statements",
    [
        # The defect as found: rows deleted past the trigger (their hashes stay behind).
        ("DROP TRIGGER spend_no_delete", "DELETE FROM spend WHERE id > 1"),
        # The same with the chain rows too: the ledger is now shorter than its witness.
        (
            "DROP TRIGGER spend_no_delete",
            "DROP TRIGGER chain_no_delete",
            "DELETE FROM spend WHERE id > 1",
            "DELETE FROM spend_chain WHERE spend_id > 1",
        ),
    ],
    ids=["rows", "rows-and-hashes"],
)
def test_rows_deleted_past_the_trigger_are_detected(tmp_path, statements) -> None:
    path = tmp_path / "ledger.sqlite"
    _ledger_with_rounds(path)
    _raw(path, *statements)
    with pytest.raises(LedgerIntegrityError, match=r"rows were deleted|holds 1 entries .* records 3 entries"):
        PrivacyLedger(path, **BUDGET)


@pytest.mark.parametrize("edit", ["epsilon_after = 0.01", "noise_multiplier = 50.0", "steps = 1", "round = 9"])
def test_an_edited_entry_is_detected(tmp_path, edit) -> None:
    path = tmp_path / "ledger.sqlite"
    _ledger_with_rounds(path)
    _raw(path, "DROP TRIGGER spend_no_update", f"UPDATE spend SET {edit} WHERE id = 2")
    with pytest.raises(
        LedgerIntegrityError, match=r"entry 2 .* does not match its recorded hash: the ledger was edited"
    ):
        PrivacyLedger(path, **BUDGET)


def test_an_edit_while_the_site_runs_is_caught_before_the_next_reservation(tmp_path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = PrivacyLedger(path, **BUDGET)
    ledger.reserve(run_id="r", round=1, noise_multiplier=1.0, sample_rate=0.02, steps=50)
    _raw(path, "DROP TRIGGER spend_no_update", "UPDATE spend SET noise_multiplier = 50.0")
    with pytest.raises(LedgerIntegrityError, match="the ledger was edited"):
        ledger.reserve(run_id="r", round=2, noise_multiplier=1.0, sample_rate=0.02, steps=50)
    assert len(ledger.entries()) == 1  # the refused reservation wrote nothing
    ledger.close()


def test_a_chain_rewritten_to_match_is_still_caught_by_the_witness(tmp_path) -> None:
    """Someone who recomputes every hash after an edit still contradicts the witness's head."""
    from fedsynth.client.ledger_chain import entry_hash, genesis, spend_rows

    path = tmp_path / "ledger.sqlite"
    _ledger_with_rounds(path)
    db = sqlite3.connect(path, isolation_level=None)
    for trigger in ("spend_no_update", "chain_no_update"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("UPDATE spend SET noise_multiplier = 50.0 WHERE id = 1")
    previous = genesis(db, db.execute("SELECT ledger_id FROM ledger_meta").fetchone()[0])
    for spend_id, entry in spend_rows(db):
        previous = entry_hash(previous, entry)
        db.execute("UPDATE spend_chain SET sha256 = ? WHERE spend_id = ?", (previous, spend_id))
    db.close()
    with pytest.raises(LedgerIntegrityError, match="not those its witness sealed"):
        PrivacyLedger(path, **BUDGET)


def test_a_ledger_replaced_by_another_sites_is_detected(tmp_path) -> None:
    ours, theirs = tmp_path / "a" / "ledger.sqlite", tmp_path / "b" / "ledger.sqlite"
    _ledger_with_rounds(ours)
    _ledger_with_rounds(theirs, rounds=1)  # same budget, less spent
    shutil.copyfile(theirs, ours)
    with pytest.raises(LedgerIntegrityError, match="is not the ledger this site wrote.*it was replaced"):
        PrivacyLedger(ours, **BUDGET)


def test_a_ledger_ahead_of_its_witness_is_accepted_and_the_witness_caught_up(tmp_path) -> None:
    """A crash between the ledger's commit and the witness write only over-counts."""
    path = tmp_path / "ledger.sqlite"
    _ledger_with_rounds(path, rounds=2)
    stale = witness_path(path).read_text()
    epsilon = _ledger_with_rounds(path, rounds=1)  # a third entry ...
    witness_path(path).write_text(stale)  # ... whose witness write was lost
    with PrivacyLedger(path, **BUDGET) as ledger:
        assert len(ledger.entries()) == 3 and ledger.epsilon() == epsilon
    assert json.loads(witness_path(path).read_text())["entries"] == 3


def test_a_deleted_witness_is_refused_with_the_way_to_reseal(tmp_path) -> None:
    path = tmp_path / "ledger.sqlite"
    _ledger_with_rounds(path)
    witness_path(path).unlink()
    with pytest.raises(LedgerIntegrityError, match=r"witness .* is missing.*ledger backup.*ledger restore"):
        PrivacyLedger(path, **BUDGET)


def test_a_ledger_written_before_chaining_is_sealed_as_it_stands(tmp_path) -> None:
    """The previous schema (no chain, no witness): sealed once, then checked like any other."""
    path = tmp_path / "ledger.sqlite"
    _raw(
        path,
        "CREATE TABLE budget (id INTEGER PRIMARY KEY CHECK (id = 1), target_epsilon REAL NOT NULL, "
        "target_delta REAL NOT NULL, accountant TEXT NOT NULL)",
        "CREATE TABLE spend (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, run_id TEXT NOT NULL, "
        "round INTEGER NOT NULL, noise_multiplier REAL NOT NULL, sample_rate REAL NOT NULL, steps INTEGER NOT NULL, "
        "epsilon_after REAL NOT NULL)",
        "INSERT INTO budget VALUES (1, 4.0, 1e-5, 'rdp')",
        "INSERT INTO spend (created, run_id, round, noise_multiplier, sample_rate, steps, epsilon_after) "
        "VALUES ('t', 'old', 1, 1.0, 0.02, 50, 1.0)",
    )
    with PrivacyLedger(path, **BUDGET) as ledger:
        assert ledger.history() == [(1.0, 0.02, 50)]
    assert json.loads(witness_path(path).read_text())["entries"] == 1
    _raw(path, "DROP TRIGGER spend_no_update", "UPDATE spend SET steps = 1")
    with pytest.raises(LedgerIntegrityError, match="the ledger was edited"):
        PrivacyLedger(path, **BUDGET)


def test_a_ledger_below_the_coordinators_record_is_refused(tmp_path) -> None:
    path = tmp_path / "ledger.sqlite"
    epsilon = _ledger_with_rounds(path, rounds=1)
    with PrivacyLedger(path, **BUDGET) as ledger:
        ledger.require_at_least(epsilon, "the coordinator")  # equal: fine
        with pytest.raises(LedgerIntegrityError, match=r"the coordinator recorded epsilon 3\.0000.*records only"):
            ledger.require_at_least(3.0, "the coordinator")


@pytest.mark.parametrize("witness", ["{not json", '{"ledger_id": "x"}', None])
def test_a_garbled_witness_is_an_integrity_error_not_a_crash(tmp_path, witness) -> None:
    path = tmp_path / "ledger.sqlite"
    _ledger_with_rounds(path, rounds=1)
    if witness is None:  # right keys, a wrong type
        document = json.loads(witness_path(path).read_text())
        witness = json.dumps({**document, "entries": str(document["entries"])})
    witness_path(path).write_text(witness)
    with pytest.raises(LedgerIntegrityError, match=r"ledger\.head\.json cannot be read"):
        PrivacyLedger(path, **BUDGET)
