"""Per-record gradient clipping in one backward pass, for DP-SGD on the MCM.

Why not Opacus' own module wrapping: its ghost clipping runs two backward passes (the
first gets each record's gradient norm, the second backpropagates the loss re-weighted by
the clipping factors), and its full backward hooks add autograd nodes around every layer.
For the MCM (a few small linear layers and layer norms) that overhead is most of a step:
DP-SGD cost 2.6x a plain step at batch 256 (``benchmarks/results/dp_epoch.json``).

What this does instead ("book-keeping", Bu et al., 2023, "Differentially Private
Optimization on Large Model at Small Cost"): forward hooks keep each trainable layer's input
``A`` and output; one ``torch.autograd.grad`` of the summed per-record losses gives every
layer's per-record output gradients ``G`` (rows are records: nothing in the MCM mixes
records), and no parameter gradient is computed. Then, per layer:

* linear: record i's gradient is ``g_i a_i^T``; its squared norm is ``|g_i|^2 |a_i|^2``
  (Opacus' own ghost norm sampler computes it) and the clipped sum ``sum_i c_i g_i a_i^T`` is
  ``(c * G)^T A``, one matrix product, the cost the plain backward would have paid;
* other layers (layer norm): Opacus' per-record gradient sampler for the layer, then the
  clipped sum.

The clipped sum goes into ``.grad``; Opacus' ``DPOptimizerFastGradientClipping`` then adds the
Gaussian noise, scales and steps, its accountant counts the step, and its ``DPDataLoader``
does the Poisson sampling: only the clipping is ours. Tests check the clipped sum against
clipping Opacus' own per-record gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from torch import nn
from torch.utils.hooks import RemovableHandle

Sampler = Callable[[nn.Module, list[torch.Tensor], torch.Tensor], dict[nn.Parameter, torch.Tensor]]
ClippedSum = Callable[[torch.Tensor], torch.Tensor]


class ClippingSetupError(TypeError):
    """The network has a parameter this clipper cannot give per-record gradients for."""


class SinglePassClipping:
    """Forward hooks on ``network``'s trainable layers; :meth:`backward` sets clipped-sum gradients.

    Use as a context manager (the hooks are removed on exit, so the plain network can be sent
    and reused) and call :meth:`backward` once per DP-SGD step, with the per-record losses.
    """

    def __init__(self, network: nn.Module, max_grad_norm: float) -> None:
        self.network = network
        self.max_grad_norm = float(max_grad_norm)
        if not self.max_grad_norm > 0:
            raise ClippingSetupError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        self._layers: list[tuple[nn.Module, list[nn.Parameter]]] = []
        self._captured: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        self._handles: list[RemovableHandle] = []
        owners: dict[int, str] = {}
        for path, layer in network.named_modules():  # check everything before hooking anything
            own = [(n, p) for n, p in layer.named_parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            names = [f"{path}.{n}" if path else n for n, _ in own]
            if type(layer) not in GradSampleModuleFastGradientClipping.NORM_SAMPLERS | GradSampleModule.GRAD_SAMPLERS:
                raise ClippingSetupError(
                    f"parameters {', '.join(names)} belong to a {type(layer).__name__}, which has no Opacus per-record "
                    "gradient sampler; build the network from layers Opacus supports (nn.Linear, nn.LayerNorm, ...)"
                )
            for name, (_, parameter) in zip(names, own, strict=True):
                if id(parameter) in owners:
                    tied = owners[id(parameter)]
                    raise ClippingSetupError(f"{name} is the same parameter as {tied} (tied): not supported")
                owners[id(parameter)] = name
            self._layers.append((layer, [p for _, p in own]))
        self._handles = [layer.register_forward_hook(self._capture) for layer, _ in self._layers]

    def __enter__(self) -> SinglePassClipping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captured.clear()

    def _capture(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if layer.training and torch.is_grad_enabled():
            self._captured.append((layer, inputs[0].detach(), output))

    # ------------------------------------------------------------------------------ one step
    def backward(self, loss_per_record: torch.Tensor) -> torch.Tensor:
        """Set each trainable parameter's ``.grad`` to the sum over records of its clipped gradient.

        Returns the per-record gradient norms before clipping (not private: for tests and
        diagnostics only, never reported from a site).
        """
        captured, self._captured = self._captured, []
        layers_seen = [layer for layer, _, _ in captured]
        if len(set(map(id, layers_seen))) != len(layers_seen):
            raise ClippingSetupError("a layer ran twice in one forward pass (tied parameters): not supported")
        if {id(layer) for layer in layers_seen} != {id(layer) for layer, _ in self._layers}:
            raise ClippingSetupError("every trainable layer must run exactly once per forward pass")
        outputs = [output for _, _, output in captured]
        output_grads = torch.autograd.grad(loss_per_record.sum(), outputs, allow_unused=True)
        squared_norms = torch.zeros(len(loss_per_record), dtype=loss_per_record.dtype, device=loss_per_record.device)
        pending: list[tuple[nn.Parameter, ClippedSum]] = []
        for (layer, inputs, output), grads in zip(captured, output_grads, strict=True):
            grads = torch.zeros_like(output) if grads is None else grads.detach()
            for parameter, norms, clipped_sum in _layer_terms(layer, inputs, grads):
                squared_norms += norms.square()
                pending.append((parameter, clipped_sum))
        norms = squared_norms.sqrt()
        factors = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # Opacus' clipping factor
        for parameter, clipped_sum in pending:
            parameter.grad = clipped_sum(factors).view_as(parameter)
        return norms


def _layer_terms(
    layer: nn.Module, inputs: torch.Tensor, grads: torch.Tensor
) -> list[tuple[nn.Parameter, torch.Tensor, ClippedSum]]:
    """(parameter, per-record gradient norms, clipped-sum function) for each trainable parameter."""
    if type(layer) is nn.Linear:
        return _linear_terms(layer, inputs.to(grads.dtype), grads)
    sampler: Sampler = GradSampleModule.GRAD_SAMPLERS[type(layer)]
    per_record = sampler(layer, [inputs], grads)
    return [
        (parameter, g.reshape(len(g), -1).norm(dim=1), _weighted_sum(g))
        for parameter, g in per_record.items()
        if parameter.requires_grad
    ]


def _linear_terms(layer: nn.Linear, inputs: torch.Tensor, grads: torch.Tensor) -> list:
    norm_sampler: Sampler = GradSampleModuleFastGradientClipping.NORM_SAMPLERS[nn.Linear]
    norms = norm_sampler(layer, [inputs], grads)  # Opacus' ghost norms: |g_i| |a_i| for 2-D inputs
    terms = []
    if layer.weight.requires_grad:
        if grads.dim() == 2:
            weight_sum: ClippedSum = lambda c: (grads * c[:, None]).T @ inputs  # noqa: E731
        else:
            weight_sum = lambda c: torch.einsum("n,n...i,n...j->ij", c, grads, inputs)  # noqa: E731
        terms.append((layer.weight, norms[layer.weight], weight_sum))
    if layer.bias is not None and layer.bias.requires_grad:
        terms.append((layer.bias, norms[layer.bias], lambda c: torch.einsum("n,n...i->i", c, grads)))
    return terms


def _weighted_sum(per_record: torch.Tensor) -> ClippedSum:
    return lambda c: torch.tensordot(c, per_record, dims=1)
