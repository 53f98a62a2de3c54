"""A training round takes the coordinator's effect rates, and refuses bad ones before any spend."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import Context, Message, RecordDict

from fedsynth.client.app import EFFECT_RATES, handle_train, open_site
from fedsynth.client.dp_training import scaled_step
from fedsynth.client.packed_weights import layout_from_json, unpack
from fedsynth.client.site import EffectRatesRefusedError
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from tests.client.conftest import train_instruction

pytestmark = pytest.mark.usefixtures("server_identity")

MODEL = MCMConfig(hidden=8, n_bins=8, survival_head=True, survival_form="hazard", survival_effect_rates="marginals")


def _instruction(schema, rates) -> Message:  # noqa: ANN001
    message = train_instruction(schema, config=MODEL)
    message.content["config"][EFFECT_RATES] = json.dumps(rates)
    return message


def _context(site_dir) -> Context:  # noqa: ANN001
    return Context(run_id=1, node_id=1, node_config={"site-dir": str(site_dir)}, state=RecordDict(), run_config={})


def _effects(message: Message, instruction: Message) -> torch.Tensor:
    layout = layout_from_json(str(instruction.content["config"]["weights-layout"]))
    return unpack(message.content["arrays"], layout)["survival_head.effects.weight"]


def test_scaled_step_multiplies_the_step_taken_inside_per_coordinate() -> None:
    parameter = torch.nn.Parameter(torch.tensor([[1.0, 2.0, 3.0]]))
    with scaled_step((parameter, torch.tensor([[2.0, 0.5, 1.0]]))), torch.no_grad():
        parameter.add_(torch.tensor([[1.0, 1.0, -1.0]]))
    torch.testing.assert_close(parameter.detach(), torch.tensor([[3.0, 2.5, 2.0]]))
    with scaled_step(None), torch.no_grad():  # nothing to scale: the step as taken
        parameter.add_(1.0)
    torch.testing.assert_close(parameter.detach(), torch.tensor([[4.0, 3.5, 3.0]]))


def test_a_round_moves_the_effects_at_the_coordinators_rates(whas500, site_dir) -> None:
    _, schema = whas500
    network = MCM(MODEL).build(schema).network_
    live = network.covariate_input.bool()
    fast = live & (torch.arange(len(live)) % 2 == 0)
    slow = live & ~fast
    rates = torch.where(fast, 16.0, torch.where(slow, 1.0 / 16.0, 1.0))
    instruction = _instruction(schema, rates.tolist())
    reply = handle_train(instruction, _context(site_dir))
    moved = (_effects(reply, instruction) - _effects(instruction, instruction)).abs()
    # Adam moves every coordinate by about its rate each step: 256 times as far, noise and all.
    assert moved[:, fast].sum() > 20 * moved[:, slow].sum() > 0


@pytest.mark.parametrize(
    ("rates", "refused"), [([1.0] * 3, "must hold"), ("all", "within"), ("[1.0", "not JSON")]
)  # fmt: skip
def test_rates_outside_the_contract_are_refused_before_any_spend(whas500, site_dir, rates, refused) -> None:
    _, schema = whas500
    width = MCM(MODEL).build(schema).network_.layout.encoded_width
    instruction = _instruction(schema, [100.0] * width if rates == "all" else rates)
    if rates == "[1.0":
        instruction.content["config"][EFFECT_RATES] = rates
    with pytest.raises(EffectRatesRefusedError, match=refused):
        handle_train(instruction, _context(site_dir))
    assert open_site(site_dir).ledger.entries() == []
