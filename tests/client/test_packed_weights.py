"""Packed weights: one vector on the wire that unpacks to exactly the model's parameters."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord

from fedsynth.client.packed_weights import layout_from_json, layout_of, layout_size, layout_to_json, pack, unpack
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM


def test_a_model_round_trips_through_one_array(whas500) -> None:
    state = MCM(MCMConfig(hidden=16, n_bins=16)).build(whas500[1]).network_.state_dict()
    record = pack(state)
    assert list(record.keys()) == ["weights"] and record["weights"].shape == (layout_size(layout_of(state)),)
    layout = layout_from_json(layout_to_json(layout_of(state)))  # as the site receives it
    back = unpack(record, layout)
    assert list(back) == list(state)
    assert all(torch.equal(back[name], state[name]) for name in state)


def test_the_weighted_mean_of_packed_vectors_is_every_parameters_weighted_mean() -> None:
    a = {"w": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([3.0])}
    b = {"w": torch.tensor([[5.0, 6.0]]), "b": torch.tensor([7.0])}
    mean = (pack(a)["weights"].numpy() * 1 + pack(b)["weights"].numpy() * 3) / 4
    state = unpack(ArrayRecord({"weights": torch.from_numpy(mean)}), layout_of(a))
    assert torch.allclose(state["w"], torch.tensor([[4.0, 5.0]])) and torch.allclose(state["b"], torch.tensor([6.0]))


def test_a_vector_of_another_size_or_other_arrays_are_refused() -> None:
    layout = [("w", (2, 2)), ("b", (2,))]
    with pytest.raises(ValueError, match=r"layout needs \(6,\)"):
        unpack(ArrayRecord({"weights": torch.zeros(7)}), layout)
    with pytest.raises(ValueError, match="expected one array"):
        unpack(ArrayRecord({"weights": torch.zeros(6), "rows": torch.zeros(3)}), layout)
    with pytest.raises(ValueError, match="malformed"):
        layout_from_json('[["w", [2, -1]]]')
    with pytest.raises(TypeError):
        pack({"counts": torch.zeros(2, dtype=torch.int64)})
