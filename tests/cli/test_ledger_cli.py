"""`fedsynth ledger backup|restore|verify SITE_DIR`: explicit, verified, never restoring less spend."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.client.ledger import PrivacyLedger

BUDGET = {"target_epsilon": 4.0, "target_delta": 1e-5}


def _spend(site_dir: Path, rounds: int) -> float:
    """``rounds`` more reservations in the site's ledger (SITE_DIR/state/ledger.sqlite); its epsilon."""
    with PrivacyLedger(site_dir / "state" / "ledger.sqlite", **BUDGET) as ledger:
        start = len(ledger.entries())
        for server_round in range(start + 1, start + rounds + 1):
            ledger.reserve(run_id="r", round=server_round, noise_multiplier=1.0, sample_rate=0.02, steps=50)
        return ledger.epsilon()


def _cli(*args: object):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["ledger", *map(str, args)])


def test_backup_then_restore_after_the_ledger_is_lost(tmp_path) -> None:
    site, backup = tmp_path / "site", tmp_path / "backups" / "site-a.sqlite"
    epsilon = _spend(site, 2)
    result = _cli("backup", site, "-o", backup)
    assert result.exit_code == 0, result.output
    assert "2 entries" in result.output and not Path(f"{backup}-wal").exists()
    (site / "state" / "ledger.sqlite").unlink()  # the disk lost it; the witness survived
    result = _cli("verify", site)
    assert result.exit_code == 2 and "is missing; its witness records 2 entries" in result.output
    result = _cli("restore", site, backup)
    assert result.exit_code == 0, result.output
    assert _cli("verify", site).exit_code == 0
    with PrivacyLedger(site / "state" / "ledger.sqlite", **BUDGET) as ledger:  # the site opens it again
        assert len(ledger.entries()) == 2 and ledger.epsilon() == epsilon
    assert _spend(site, 1) > epsilon  # and goes on appending to it


def test_a_stale_backup_is_refused_and_nothing_changes(tmp_path) -> None:
    site, backup = tmp_path / "site", tmp_path / "old.sqlite"
    _spend(site, 1)
    assert _cli("backup", site, "-o", backup).exit_code == 0
    epsilon = _spend(site, 2)
    (site / "state" / "ledger.sqlite").unlink()
    result = _cli("restore", site, backup)
    assert result.exit_code == 2
    assert "holds 1 entries" in result.output and "records 3" in result.output
    assert "would forget privacy already spent" in result.output
    assert not (site / "state" / "ledger.sqlite").exists()
    assert json.loads((site / "state" / "ledger.head.json").read_text())["epsilon"] == epsilon


def test_a_stale_backup_is_refused_while_the_current_ledger_verifies_even_without_a_witness(tmp_path) -> None:
    site, backup = tmp_path / "site", tmp_path / "old.sqlite"
    _spend(site, 1)
    assert _cli("backup", site, "-o", backup).exit_code == 0
    _spend(site, 1)
    (site / "state" / "ledger.head.json").unlink()
    result = _cli("restore", site, backup)
    assert result.exit_code == 2 and "the site's current ledger" in result.output


def test_with_ledger_and_witness_both_lost_an_older_backup_may_come_back(tmp_path) -> None:
    """The operator's explicit choice; the coordinator's floor still applies at the next round."""
    site, backup = tmp_path / "site", tmp_path / "old.sqlite"
    _spend(site, 1)
    assert _cli("backup", site, "-o", backup).exit_code == 0
    _spend(site, 1)
    for name in ("ledger.sqlite", "ledger.head.json"):
        (site / "state" / name).unlink()
    assert _cli("restore", site, backup).exit_code == 0
    assert json.loads((site / "state" / "ledger.head.json").read_text())["entries"] == 1


def test_another_sites_backup_is_refused(tmp_path) -> None:
    ours, theirs, backup = tmp_path / "a", tmp_path / "b", tmp_path / "b.sqlite"
    _spend(ours, 1)
    _spend(theirs, 3)
    assert _cli("backup", theirs, "-o", backup).exit_code == 0
    result = _cli("restore", ours, backup)
    assert result.exit_code == 2 and "a backup of another ledger" in result.output


def test_a_missing_witness_is_resealed_by_backup_and_restore(tmp_path) -> None:
    site, backup = tmp_path / "site", tmp_path / "now.sqlite"
    epsilon = _spend(site, 2)
    (site / "state" / "ledger.head.json").unlink()
    result = _cli("verify", site)
    assert result.exit_code == 2 and "witness" in result.output and "missing" in result.output
    assert _cli("backup", site, "-o", backup).exit_code == 0
    assert _cli("restore", site, backup).exit_code == 0
    assert _cli("verify", site).exit_code == 0
    assert _spend(site, 0) == epsilon


def test_a_tampered_ledger_is_not_backed_up_and_a_backup_is_not_overwritten(tmp_path) -> None:
    site, backup = tmp_path / "site", tmp_path / "b.sqlite"
    _spend(site, 2)
    assert _cli("backup", site, "-o", backup).exit_code == 0
    result = _cli("backup", site, "-o", backup)
    assert result.exit_code == 2 and "already exists" in result.output
    raw = sqlite3.connect(site / "state" / "ledger.sqlite", isolation_level=None)
    raw.execute("DROP TRIGGER spend_no_update")
    raw.execute("UPDATE spend SET steps = 1")
    raw.close()
    result = _cli("backup", site, "-o", tmp_path / "tampered.sqlite", "--force")
    assert result.exit_code == 2 and "the ledger was edited" in result.output
    assert not (tmp_path / "tampered.sqlite").exists()
    assert _cli("verify", site).exit_code == 2
    # The good backup replaces the edited ledger (same ledger, not behind it: the edit broke its chain).
    assert _cli("restore", site, backup).exit_code == 0
    assert _cli("verify", site).exit_code == 0


def test_a_file_that_is_not_a_ledger_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "notes.sqlite").write_text("not a database")
    _spend(tmp_path / "site", 1)
    result = _cli("restore", tmp_path / "site", tmp_path / "notes.sqlite")
    assert result.exit_code == 2 and "not a readable fedsynth ledger" in result.output
    result = _cli("backup", tmp_path / "nowhere", "-o", tmp_path / "x.sqlite")
    assert result.exit_code == 2 and "privacy ledger not found" in result.output
