"""The network's trunk for sampling, computed into reused buffers.

Why this exists: the sampler runs the trunk once per column over tens of thousands of rows.
Each plain PyTorch op allocates a fresh multi-megabyte tensor, which glibc serves with
``mmap`` and returns on free, so every op pays page faults for memory it touched a moment
ago; profiling showed more time in those faults than in the matrix products. This class
computes exactly :meth:`MCMNetwork.trunk_visible` with ``out=`` and in-place ops on
buffers allocated once per row group, and folds the attention's scale constants into the
following linear layers' weights. Tests check it against the module to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsynth.model.network import MLP, MCMNetwork


class _Block:
    """Frozen copies of one MLP block's parameters, transposed for ``addmm``."""

    def __init__(self, mlp: MLP, input_scale: float = 1.0, split: int | None = None) -> None:
        first, norm, _, second = mlp.net
        assert isinstance(first, nn.Linear) and isinstance(norm, nn.LayerNorm) and isinstance(second, nn.Linear)
        weight_t = first.weight.detach().t().contiguous()
        # Rows of the first weight that read attention-weighted inputs absorb the scale factor.
        scaled_rows = weight_t.shape[0] if split is None else split
        weight_t[:scaled_rows] *= input_scale
        # LayerNorm subtracts each row's mean over the outputs, a linear map: subtracting the
        # mean output weight and bias here makes the first layer's output already centred.
        weight_t -= weight_t.mean(dim=1, keepdim=True)
        self.first_t = weight_t[:scaled_rows].contiguous()
        self.first_mask_t = weight_t[scaled_rows:].contiguous()
        self.first_bias = first.bias.detach() - first.bias.detach().mean()
        self.norm_weight = norm.weight.detach().clone()
        self.norm_bias = norm.bias.detach().clone()
        self.norm_eps = norm.eps
        self.second_t = second.weight.detach().t().contiguous()
        self.second_bias = second.bias.detach().clone()


class InferenceTrunk:
    """Allocation-free ``trunk_visible`` for a fixed maximum number of rows."""

    def __init__(self, network: MCMNetwork, rows: int) -> None:
        layout = network.layout
        width, hidden = layout.encoded_width, network.attention2.in_features
        filter_t = network.filter_scores.weight.detach().t().contiguous()
        self.filter_visible_t = filter_t[:width].contiguous()
        self.filter_mask_t = filter_t[width:].contiguous()
        self.filter_bias = network.filter_scores.bias.detach().clone()
        # softmax(.) * width feeds block1 and softmax(.) * hidden feeds block2: scale their weights.
        self.block1 = _Block(network.block1, input_scale=float(width), split=width)
        self.attention2_t = network.attention2.weight.detach().t().contiguous()
        self.attention2_bias = network.attention2.bias.detach().clone()
        self.block2 = _Block(network.block2, input_scale=float(hidden))
        self.out_norm_weight = network.out_norm.weight.detach().clone()
        self.out_norm_bias = network.out_norm.bias.detach().clone()
        self.out_norm_eps = network.out_norm.eps
        self._scores = torch.empty(rows, width)
        self._weights = torch.empty(rows, width)
        self._h = [torch.empty(rows, hidden) for _ in range(3)]
        self.spare = torch.empty(rows, hidden)  # a hidden-sized buffer callers may use between calls

    def __call__(self, visible_input: torch.Tensor, masked_f: torch.Tensor, score_bias: torch.Tensor) -> torch.Tensor:
        """Hidden state (n, hidden), valid until the next call (it lives in a reused buffer)."""
        n = visible_input.shape[0]
        scores, weights = self._scores[:n], self._weights[:n]
        h1, h2, h3 = (h[:n] for h in self._h)

        torch.addmm(self.filter_bias, visible_input, self.filter_visible_t, out=scores)
        scores.addmm_(masked_f, self.filter_mask_t).add_(score_bias)
        torch.softmax(scores, 1, out=weights)
        weights.mul_(visible_input)
        # Block 1: x = weights; h2 holds the first linear, h3 its normed form; result in h1.
        self._mlp(self.block1, weights, masked_f, first=h2, normed=h3, out=h1)

        torch.addmm(self.attention2_bias, h1, self.attention2_t, out=h2)
        torch.softmax(h2, 1, out=h3)
        h3.mul_(h1)
        # Block 2 reads h3 before overwriting it with its normed layer; result in h2.
        self._mlp(self.block2, h3, None, first=h2, normed=h3, out=h2)
        h1.add_(h2)  # residual

        self._layer_norm(h1, self.out_norm_weight, self.out_norm_bias, self.out_norm_eps, h2)
        return h2.relu_()

    def _mlp(
        self,
        block: _Block,
        x: torch.Tensor,
        masked_f: torch.Tensor | None,
        first: torch.Tensor,
        normed: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """Linear -> LayerNorm -> ReLU -> Linear. ``normed`` may be ``x`` and ``out`` may be
        ``first``: each is fully read before it is overwritten."""
        torch.addmm(block.first_bias, x, block.first_t, out=first)
        if masked_f is not None:
            first.addmm_(masked_f, block.first_mask_t)
        self._layer_norm(first, block.norm_weight, block.norm_bias, block.norm_eps, normed, centred=True)
        normed.relu_()
        torch.addmm(block.second_bias, normed, block.second_t, out=out)

    @staticmethod
    def _layer_norm(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out: torch.Tensor, centred: bool = False
    ) -> None:
        """LayerNorm over the last dimension into ``out``; ``centred`` skips the mean (already 0).

        Spelled out because ``native_layer_norm.out`` allocates its result and copies it, and
        ``var_mean`` is ~30x slower than these passes on CPU; the only allocations here are
        per-row statistics.
        """
        if not centred:
            torch.sub(x, x.mean(dim=1, keepdim=True), out=out)
            x = out
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        torch.mul(x, norm.square_().div_(x.shape[1]).add_(eps).rsqrt_(), out=out)
        torch.addcmul(bias, out, weight, out=out)
