"""The ClientApp's train handler refuses a reset ledger, by its witness or the coordinator's floor."""

from __future__ import annotations

import json
import shutil

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedsynth.client.app import LEDGER_FLOORS, SiteError, _sites, handle_train, ledger_floor
from tests.client.conftest import train_instruction

pytestmark = pytest.mark.usefixtures("server_identity")


def _instruction(schema, server_round: int, floors: dict[str, float] | None = None) -> Message:
    message = train_instruction(schema, server_round, planned_rounds=3)
    if floors is not None:
        message.content["config"][LEDGER_FLOORS] = json.dumps(floors)
    return message


def _context(site_dir) -> Context:
    return Context(run_id=1, node_id=1, node_config={"site-dir": str(site_dir)}, state=RecordDict(), run_config={})


def _restart() -> None:
    """A new ClientApp process (the deployment engine starts one per message)."""
    for site in _sites.values():
        site.close()
    _sites.clear()


def test_a_deleted_ledger_stops_training_through_the_clientapp(whas500, site_dir) -> None:
    first = handle_train(_instruction(whas500[1], 1), _context(site_dir))
    assert first.content["metrics"]["epsilon"] > 0
    _restart()
    (site_dir / "state" / "ledger.sqlite").unlink()
    with pytest.raises(SiteError, match="hospital-a: refused to train: its privacy ledger failed") as refused:
        handle_train(_instruction(whas500[1], 2), _context(site_dir))  # an error, no reply: no weights leave
    assert str(site_dir) not in str(refused.value)  # the site's local paths stay at the site
    assert not (site_dir / "state" / "ledger.sqlite").exists()


def test_the_coordinators_floor_catches_a_site_wiped_of_ledger_and_witness(whas500, site_dir) -> None:
    first = handle_train(_instruction(whas500[1], 1, floors={}), _context(site_dir))
    spent = first.content["metrics"]["epsilon"]
    _restart()
    shutil.rmtree(site_dir / "state")  # ledger, witness, split and plans: nothing local is left
    floors = {"hospital-a": spent, "another-site": 9.0}
    with pytest.raises(SiteError, match="hospital-a: refused to train: its privacy ledger failed"):
        handle_train(_instruction(whas500[1], 2, floors=floors), _context(site_dir))
    _restart()
    # Without the coordinator's record the wiped site would train, its spend counted from zero again.
    again = handle_train(_instruction(whas500[1], 2, floors={}), _context(site_dir))
    assert again.content["metrics"]["epsilon"] == pytest.approx(spent)


def test_ledger_floor_reads_this_sites_entry_only() -> None:
    config = ConfigRecord({LEDGER_FLOORS: json.dumps({"a": 1.5, "b": 3.0})})
    assert (ledger_floor(config, "a"), ledger_floor(config, "c"), ledger_floor(ConfigRecord({}), "a")) == (1.5, 0, 0)
