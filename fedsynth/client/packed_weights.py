"""The model's weights as one array on the wire, and the layout that unpacks them.

Why: Flower sends every array of an ``ArrayRecord`` as an object of its own, and on the deployment
engine each object is a separate authenticated HTTPS request at every hop (ServerApp, SuperLink,
Fleet gateway, SuperNode, ClientApp). The MCM has 23 small arrays (9,147 weights on FLChain), so
a training round was ~400 requests of a few hundred bytes for 3 sites, and most of a round's time
on a small machine. Packed, a round's weights travel as one object each way.

The layout (each parameter's name and shape, in order) is public: it follows from the public
schema and the model configuration, and the coordinator sends it with every training instruction.
FedAvg's weighted mean of packed vectors is the weighted mean of every parameter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord

WEIGHTS = "weights"
Layout = list[tuple[str, tuple[int, ...]]]


def layout_of(state: Mapping[str, torch.Tensor]) -> Layout:
    """Every parameter's name and shape, in the state dict's order."""
    return [(name, tuple(int(d) for d in tensor.shape)) for name, tensor in state.items()]


def layout_to_json(layout: Layout) -> str:
    return json.dumps([[name, list(shape)] for name, shape in layout])


def layout_from_json(text: str) -> Layout:
    """A layout sent as JSON; ValueError if it is not a list of [name, [dims...]]."""
    try:
        raw = json.loads(text)
        layout = [(str(name), tuple(int(d) for d in shape)) for name, shape in raw]
    except (TypeError, ValueError) as error:
        raise ValueError(f"malformed weights layout: {error}") from None
    if any(d < 0 for _, shape in layout for d in shape) or len({name for name, _ in layout}) != len(layout):
        raise ValueError("malformed weights layout: negative dimension or repeated name")
    return layout


def layout_size(layout: Layout) -> int:
    return sum(math.prod(shape) for _, shape in layout)


def pack(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """One float32 vector of every parameter, in the state dict's order."""
    if any(not tensor.is_floating_point() for tensor in state.values()):
        raise TypeError("only floating-point parameters are packed")
    flat = torch.cat([t.detach().reshape(-1).to(torch.float32).cpu() for t in state.values()])
    return ArrayRecord({WEIGHTS: flat})


def unpack(record: ArrayRecord, layout: Layout) -> dict[str, torch.Tensor]:
    """The state dict a packed record holds; ValueError if it is not exactly one vector of the layout's size."""
    if list(record.keys()) != [WEIGHTS]:
        raise ValueError(f"expected one array '{WEIGHTS}', got {sorted(record.keys())}")
    flat = record[WEIGHTS].numpy()
    if flat.ndim != 1 or flat.shape[0] != layout_size(layout):
        raise ValueError(f"packed weights hold {flat.shape}, the layout needs ({layout_size(layout)},)")
    state: dict[str, torch.Tensor] = {}
    start = 0
    for name, shape in layout:
        size = math.prod(shape)
        state[name] = torch.from_numpy(np.array(flat[start : start + size], dtype=np.float32).reshape(shape))
        start += size
    return state
