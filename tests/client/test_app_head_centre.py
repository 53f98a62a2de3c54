"""A training round keeps the coordinator's head centres, and refuses bad weights before any spend."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import Context, Message, RecordDict

from fedsynth.client.app import WEIGHTS_LAYOUT, handle_train, open_site
from fedsynth.client.packed_weights import layout_from_json, layout_of, layout_to_json, pack, unpack
from fedsynth.client.site import ReceivedWeightsRefusedError
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from tests.client.conftest import train_instruction

pytestmark = pytest.mark.usefixtures("server_identity")

MODEL = MCMConfig(hidden=8, n_bins=8, survival_head=True, survival_form="hazard", survival_centre="tables")
CENTRES = "survival_centre_values"


def _context(site_dir) -> Context:  # noqa: ANN001
    return Context(run_id=1, node_id=1, node_config={"site-dir": str(site_dir)}, state=RecordDict(), run_config={})


def _with_state(message: Message, state: dict[str, torch.Tensor]) -> Message:
    message.content["arrays"] = pack(state)
    message.content["config"][WEIGHTS_LAYOUT] = layout_to_json(layout_of(state))
    return message


def _state(message: Message, instruction: Message) -> dict[str, torch.Tensor]:
    return unpack(message.content["arrays"], layout_from_json(str(instruction.content["config"][WEIGHTS_LAYOUT])))


def test_a_round_trains_around_the_coordinators_centres_and_sends_them_back(whas500, site_dir) -> None:
    _, schema = whas500
    state = MCM(MODEL).build(schema).network_.state_dict()
    state[CENTRES] = torch.linspace(0.1, 0.9, len(state[CENTRES]))
    instruction = _with_state(train_instruction(schema, config=MODEL), state)
    reply = handle_train(instruction, _context(site_dir))
    returned = _state(reply, instruction)
    torch.testing.assert_close(returned[CENTRES], state[CENTRES])  # fixed: no step moves them
    assert not torch.equal(returned["survival_head.effects.weight"], state["survival_head.effects.weight"])


@pytest.mark.parametrize("bad", ["nan", "outside", "missing"])
def test_weights_outside_the_contract_are_refused_before_any_spend(whas500, site_dir, bad) -> None:
    _, schema = whas500
    state = MCM(MODEL).build(schema).network_.state_dict()
    if bad == "missing":  # the weights of a model without the centres the config asks for
        del state[CENTRES]
    else:
        state[CENTRES][2] = float("nan") if bad == "nan" else 1.5
    instruction = _with_state(train_instruction(schema, config=MODEL), state)
    refused = "do not fit the model" if bad == "missing" else r"within \[0, 1\]"
    with pytest.raises(ReceivedWeightsRefusedError, match=refused):
        handle_train(instruction, _context(site_dir))
    assert open_site(site_dir).ledger.entries() == []
    assert json.loads(instruction.content["config"]["model-config"])["survival_centre"] == "tables"
