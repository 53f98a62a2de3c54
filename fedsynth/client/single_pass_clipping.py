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

Group-wise clipping (He et al., 2022, "Exploring the Limits of Differentially Private Deep
Learning with Group-wise Clipping"; Opacus' per-layer clipping is the one-group-per-layer
case): the parameters may be split into :class:`ClipGroup` s, each record's gradient of a group
multiplied by the group's ``gain`` and clipped to the group's own norm. When the groups' norms
satisfy ``sqrt(sum of max_norm^2) <= max_grad_norm`` (checked), every record's whole clipped
gradient still has norm <= ``max_grad_norm``, so the Gaussian noise the optimizer adds at
``noise_multiplier x max_grad_norm`` gives exactly the privacy the site's plan computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from torch import nn
from torch.utils.hooks import RemovableHandle

Sampler = Callable[[nn.Module, list[torch.Tensor], torch.Tensor], dict[nn.Parameter, torch.Tensor]]
ClippedSum = Callable[[torch.Tensor], torch.Tensor]


class ClippingSetupError(TypeError):
    """The network has a parameter this clipper cannot give per-record gradients for."""


@dataclass(frozen=True)
class ClipGroup:
    """Parameters clipped together: each record's gradient of them, times ``gain``, to ``max_norm``.

    ``prefix`` is a module path (``"survival_head"``); a parameter belongs to the first group
    whose prefix is its module path or a parent of it, and ``""`` matches every parameter.
    A gain k with norm C is the same as clipping at C / k and adding k times less noise to the
    group (Adam does not see the common factor): how a group whose per-record gradients are
    small next to the others' is given a share of the one noise budget.
    """

    prefix: str
    max_norm: float
    gain: float = 1.0

    def owns(self, module_path: str) -> bool:
        return self.prefix == "" or module_path == self.prefix or module_path.startswith(self.prefix + ".")


class SinglePassClipping:
    """Forward hooks on ``network``'s trainable layers; :meth:`backward` sets clipped-sum gradients.

    Use as a context manager (the hooks are removed on exit, so the plain network can be sent
    and reused) and call :meth:`backward` once per DP-SGD step, with the per-record losses.
    """

    def __init__(self, network: nn.Module, max_grad_norm: float, groups: Sequence[ClipGroup] | None = None) -> None:
        self.network = network
        self.max_grad_norm = float(max_grad_norm)
        self.groups = list(groups) if groups else [ClipGroup("", self.max_grad_norm)]
        for group in self.groups:
            if group.max_norm <= 0 or group.gain <= 0:
                raise ClippingSetupError(f"clip group {group.prefix!r}: max_norm and gain must be > 0, got {group}")
        bound = math.sqrt(sum(g.max_norm**2 for g in self.groups))
        if bound > self.max_grad_norm * (1 + 1e-9):
            raise ClippingSetupError(
                f"clip groups {[(g.prefix, g.max_norm) for g in self.groups]} allow a record a gradient norm of "
                f"{bound:g} > max_grad_norm {self.max_grad_norm:g}, which the noise is calibrated to: lower them"
            )
        self._group_of: dict[int, int] = {}  # parameter id -> index in self.groups
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
                group = next((i for i, g in enumerate(self.groups) if g.owns(path)), None)
                if group is None:
                    raise ClippingSetupError(f"{name} is in no clip group; add a group with prefix '' for the rest")
                self._group_of[id(parameter)] = group
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
        squared_norms = torch.zeros(
            len(self.groups), len(loss_per_record), dtype=loss_per_record.dtype, device=loss_per_record.device
        )
        pending: list[tuple[nn.Parameter, int, ClippedSum]] = []
        for (layer, inputs, output), grads in zip(captured, output_grads, strict=True):
            grads = torch.zeros_like(output) if grads is None else grads.detach()
            for parameter, norms, clipped_sum in _layer_terms(layer, inputs, grads):
                group = self._group_of[id(parameter)]
                squared_norms[group] += norms.square()
                pending.append((parameter, group, clipped_sum))
        group_norms = squared_norms.sqrt()
        # factor = gain x min(1, max_norm / (gain x norm)): the record's gradient of the group, scaled
        # by the gain, then clipped (a group's gradient times this factor has norm <= max_norm).
        factors = torch.stack([
            group.gain * (group.max_norm / (group.gain * norms + 1e-6)).clamp(max=1.0)
            for group, norms in zip(self.groups, group_norms, strict=True)
        ])  # fmt: skip
        for parameter, group, clipped_sum in pending:
            parameter.grad = clipped_sum(factors[group]).view_as(parameter)
        return squared_norms.sum(dim=0).sqrt()


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
